"""A process's cgroup by the ids the kernel gave at its exec (collector/kernel_context.py),
instead of reading /proc/<pid>/cgroup for every new process.

The kernel names a cgroup by an id that is the inode number of its directory in its
hierarchy's filesystem, and is never reused in that hierarchy while the machine runs. What a
process's cgroup file said is kept under the ids of the exec only after the directory at the
path it picked has that inode number: a process moved to another cgroup between its exec and
the read would otherwise lend its new path to the ids of the old one. Two keys: the unified
(v2) cgroup id alone, which is all a v2 host needs, and every hierarchy's pair, for a host
with v1 hierarchies, where the path picked may be a v1 one.

A cgroup renamed after its path was kept (rename(2) within its parent; a delegated user may do
that to their own cgroups) keeps its earlier name here until the entries expire (`LIFETIME`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from daemoneye.collector.bounded import keep
from daemoneye.collector.kernel_context import KernelContext

LIFETIME = 60.0  # seconds a kept path is trusted before /proc is read again
MAX_ENTRIES = 4096  # per key kind; past it the table starts over
_GENERIC_OPTIONS = frozenset(
    {b"rw", b"ro", b"xattr", b"noprefix", b"clone_children", b"cpuset_v2_mode", b"nsdelegate"}
)
_ESCAPE = re.compile(rb"\\([0-7]{3})")
_V = TypeVar("_V")


class CgroupIds(Generic[_V]):
    """What the cgroup file of a set of kernel ids says (the value is the context reader's
    classification; this class only keeps it)."""

    def __init__(
        self,
        mounts: Mapping[int, bytes] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mounts = dict(mounts) if mounts is not None else None  # hierarchy → mount point
        self._clock = clock
        self._by_id: dict[int, _V] = {}
        self._by_links: dict[bytes, _V] = {}
        self._expires = clock() + LIFETIME

    def get(self, kernel: KernelContext) -> _V | None:
        if self._clock() >= self._expires:
            self._by_id.clear()
            self._by_links.clear()
            self._expires = self._clock() + LIFETIME
        if kernel.cgroup_key is not None:
            found = self._by_links.get(kernel.cgroup_key)
            if found is not None:
                return found
        if kernel.cgroup_id is not None and self._unified_only():
            return self._by_id.get(kernel.cgroup_id)
        return None

    def learn(self, kernel: KernelContext, raw: bytes, value: _V) -> None:
        """Keep `value` (what the cgroup file `raw` said) under the exec's ids when every line
        of the file names, in its hierarchy's mount, the directory of the cgroup the kernel
        named in that hierarchy: which path is picked depends on all of them. The unified id
        alone is a key only on a host with no v1 hierarchy mounted."""
        lines = _lines(raw)
        if not lines or (kernel.cgroup_key is None and kernel.cgroup_id is None):
            return
        ids = kernel.cgroups
        if kernel.cgroup_id is not None:
            ids.setdefault(0, kernel.cgroup_id)
        if not all(self._is(h, path, ids.get(h)) for h, path in lines):
            return
        if kernel.cgroup_key is not None:
            keep(self._by_links, kernel.cgroup_key, value, MAX_ENTRIES)
        if kernel.cgroup_id is not None and self._unified_only():
            keep(self._by_id, kernel.cgroup_id, value, MAX_ENTRIES)

    def _unified_only(self) -> bool:
        return set(self._hierarchies()) == {0}

    def _hierarchies(self) -> dict[int, bytes]:
        if self._mounts is None:
            self._mounts = hierarchy_mounts()
        return self._mounts

    def _is(self, hierarchy: int, path: bytes, cgroup_id: int | None) -> bool:
        mount = self._hierarchies().get(hierarchy)
        if mount is None or cgroup_id is None:
            return False
        try:
            return os.stat(mount + path).st_ino == cgroup_id
        except (OSError, ValueError):
            return False


def _lines(raw: bytes) -> list[tuple[int, bytes]]:
    """(hierarchy id, path) of each line of a /proc/<pid>/cgroup file; [] when one is not
    such a line."""
    found = []
    for line in raw.split(b"\n"):
        if not line:
            continue
        parts = line.split(b":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith(b"/"):
            return []
        found.append((int(parts[0]), parts[2]))
    return found


def hierarchy_mounts(
    mountinfo: str = "/proc/self/mountinfo", own_cgroup: str = "/proc/self/cgroup"
) -> dict[int, bytes]:
    """hierarchy id → where that hierarchy's root is mounted here: the unified one (0) where
    cgroup2 is, each v1 one where a cgroup filesystem with its controllers (or its name=) is.
    Mounts of a subtree (a container's view) are left out: a path would not be under them."""
    try:
        with open(mountinfo, "rb") as file:
            mounts = file.read().split(b"\n")
        with open(own_cgroup, "rb") as file:
            lines = file.read().split(b"\n")
    except OSError:
        return {}
    wanted: dict[int, frozenset[bytes]] = {}
    for line in lines:
        parts = line.split(b":", 2)
        if len(parts) == 3 and parts[0].isdigit():
            wanted[int(parts[0])] = frozenset(parts[1].split(b",")) - {b""}
    found: dict[int, bytes] = {}
    for mount in mounts:
        head, _, tail = mount.partition(b" - ")
        fields, kind = head.split(b" "), tail.split(b" ")
        if len(fields) < 5 or len(kind) < 3 or fields[3] != b"/":
            continue
        point = _ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), fields[4])
        if kind[0] == b"cgroup2":
            found.setdefault(0, point)
        elif kind[0] == b"cgroup":
            options = frozenset(kind[2].split(b",")) - _GENERIC_OPTIONS
            for hierarchy, controllers in wanted.items():
                if hierarchy and controllers and controllers == options:
                    found.setdefault(hierarchy, point)
    return found
