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

from daemoneye.collector.kernel_context import KernelContext

LIFETIME = 60.0  # seconds a kept path is trusted before /proc is read again
MAX_ENTRIES = 4096  # per key kind; past it the table starts over
_GENERIC_OPTIONS = frozenset(
    {b"rw", b"ro", b"xattr", b"noprefix", b"clone_children", b"cpuset_v2_mode", b"nsdelegate"}
)
_ESCAPE = re.compile(rb"\\([0-7]{3})")
_K = TypeVar("_K")
_V = TypeVar("_V")


class CgroupIds(Generic[_V]):
    """What the cgroup path of a set of kernel ids says (the value is the context reader's
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
        if kernel.cgroup_id is not None:
            found = self._by_id.get(kernel.cgroup_id)
            if found is not None:
                return found
        if kernel.cgroup_key is not None:
            return self._by_links.get(kernel.cgroup_key)
        return None

    def learn(
        self, kernel: KernelContext, picked: tuple[int | None, str] | None, value: _V
    ) -> None:
        """Keep `value` (what the file said) under the exec's ids, when the directory of the
        `picked` (hierarchy, path) is the cgroup the kernel named in that hierarchy."""
        if picked is None:
            return
        hierarchy, path = picked
        if hierarchy is None:
            return
        if hierarchy == 0 and kernel.cgroup_id is not None:
            if self._is(hierarchy, path, kernel.cgroup_id):
                _keep(self._by_id, kernel.cgroup_id, value)
            return
        if kernel.cgroup_key is None:
            return
        wanted = kernel.cgroups.get(hierarchy)
        if wanted is not None and self._is(hierarchy, path, wanted):
            _keep(self._by_links, kernel.cgroup_key, value)

    def _is(self, hierarchy: int, path: str, cgroup_id: int) -> bool:
        if self._mounts is None:
            self._mounts = hierarchy_mounts()
        mount = self._mounts.get(hierarchy)
        if mount is None:
            return False
        try:
            return os.stat(mount + os.fsencode(path)).st_ino == cgroup_id
        except (OSError, ValueError):
            return False


def _keep(table: dict[_K, _V], key: _K, value: _V) -> None:
    if len(table) >= MAX_ENTRIES:
        table.clear()
    table[key] = value


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
