"""Whether a test may load one of procmond's eBPF programs here, and why not.

A missing privilege or kernel feature is a reason to skip (not root, no BTF, bpf(2) refused by
the kernel or a seccomp filter). Any other failure to load is a defect in the program and is
raised: a kernel test that skipped on it would let a broken program pass CI unseen."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from daemoneye.collector.btf import VMLINUX

_REFUSALS = (errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EOPNOTSUPP)


def why_not(load: Callable[[], object]) -> str | None:
    """None when `load()` works; the reason to skip when this machine cannot load it."""
    if os.geteuid() != 0:
        return "loading eBPF needs root here"
    if not os.path.exists(VMLINUX):
        return f"the kernel has no BTF ({VMLINUX})"
    try:
        load()
    except OSError as exc:
        if exc.errno in _REFUSALS:
            return str(exc)
        raise
    return None
