"""Whether a test may load one of procmond's eBPF programs here, and why not.

A missing privilege or kernel feature is a reason to skip (not root, no BTF, bpf(2) refused by
the kernel or a seccomp filter). Any other failure to load is a defect in the program and is
raised: a kernel test that skipped on it would let a broken program pass CI unseen."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

import pytest

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


def skip_module_unless(load: Callable[[], object], what: str) -> None:
    """Skip the calling test module, with the reason, where `what` cannot load (`why_not`)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("eBPF is Linux-only", allow_module_level=True)
    reason = why_not(load)
    if reason is not None:
        pytest.skip(f"{what} unavailable: {reason}", allow_module_level=True)
