"""N long-sleeping processes with varied names, executables, command lines and working
directories, standing in for a busy host.

Each sleeper is /bin/sleep, run through one of ~24 copies (distinct executables and hashes,
some with hostile names: spaces, parentheses, a non-UTF-8 byte, names past the kernel's 15-byte
comm) or one of up to 512 symlinks to them (distinct comm, shared executable). argv[0] is a full
path, a base name or a made-up title; the argument list varies from 1 to ~30 words and, for
one sleeper in 50, carries a 2 KB argument (GNU sleep sums its arguments, so "0" pads freely).

Usage: ``with Population(10_000) as population: ...`` — on exit every sleeper is killed and
reaped, the temp tree removed, and the absence of survivors verified.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from benchmarks.spawn import MAX_LIFETIME_S, SLEEP, ProcessGroup, assert_none_marked, new_token

_COPY_NAMES: tuple[bytes, ...] = (
    b"nginx",
    b"postgres",
    b"redis-server",
    b"java",
    b"node",
    b"python3.11",
    b"sshd",
    b"cron",
    b"rsyslogd",
    b"dockerd",
    b"gunicorn",
    b"celery-worker",
    b"containerd-shim-runc-v2",
    b"prometheus-node-exporter",
    b"my app",
    b"x) (y",
    b"na\xc3\xafve-\xc3\xbcnicode",
    b"bad\xffbyte",
    b"kworker-u4:2-lookalike",
    b"php-fpm8.2",
    b"envoy",
    b"consul",
    b"vault",
    b"agent",
)
_TITLES = ("postgres: writer process", "nginx: worker process", "[kthreadd-ish]", "-bash")
_MAX_LINKS = 512
_CWD_COUNT = 8
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
# Measured: a sleeping /bin/sleep costs ~180 KiB that is not shared (page tables, stack, heap,
# kernel task). Ask for twice that to leave the host room to breathe.
_KIB_PER_SLEEPER = 400
_PID_MARGIN = 1024


def preflight(size: int) -> list[str]:
    """Check that `size` more processes fit: RLIMIT_NPROC (raising the soft limit when the hard
    one allows), kernel pid_max and threads-max, and free memory. Returns what was adjusted;
    raises RuntimeError naming the limit that is too small."""
    notes: list[str] = []
    running = sum(1 for name in os.listdir("/proc") if name.isdigit())
    needed = running + size + _PID_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard == resource.RLIM_INFINITY or hard >= needed:
            resource.setrlimit(resource.RLIMIT_NPROC, (needed, hard))
            notes.append(f"raised RLIMIT_NPROC soft limit {soft} -> {needed}")
        elif os.geteuid() != 0:
            raise RuntimeError(f"ulimit -u is {soft} (hard {hard}); {needed} processes needed")
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    if needed > pid_max:
        raise RuntimeError(
            f"kernel.pid_max is {pid_max}; {needed} pids needed "
            f"({running} running + {size} sleepers + {_PID_MARGIN} margin)"
        )
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    if needed > threads_max:
        raise RuntimeError(f"kernel.threads-max is {threads_max}; {needed} tasks needed")
    available_kib = _mem_available_kib()
    needed_kib = size * _KIB_PER_SLEEPER
    if needed_kib > available_kib // 2:
        raise RuntimeError(
            f"{size} sleepers need ~{needed_kib // 1024} MiB; only "
            f"{available_kib // 1024} MiB available (half of it is the cap)"
        )
    return notes


def _mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


class Population:
    """`size` sleepers in their own process group, alive for at most `lifetime_s` seconds."""

    def __init__(self, size: int, *, lifetime_s: int = MAX_LIFETIME_S) -> None:
        self.size = size
        self.lifetime_s = lifetime_s
        self.token = new_token("pop")
        self.spawn_s = 0.0
        self.notes: list[str] = []
        self._root: Path | None = None
        self._group: ProcessGroup | None = None

    @property
    def root(self) -> Path:
        """The temp tree every sleeper's executable lives under (while the population is up)."""
        assert self._root is not None, "the population is not up"
        return self._root

    def __enter__(self) -> Population:
        self.notes = preflight(self.size)
        try:
            self._root = Path(tempfile.mkdtemp(prefix="daemoneye-bench-pop-"))
            started = time.perf_counter()
            self._spawn_all(self._root)
            self.spawn_s = time.perf_counter() - started
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def alive(self) -> int:
        """Sleepers still running (exited ones are reaped here)."""
        if self._group is None:
            return 0
        return max(self._group.reap() - 1, 0)  # minus the anchor

    def pids(self) -> list[int]:
        """The sleepers' pids (the anchor excluded), as far as we know alive."""
        if self._group is None:
            return []
        return sorted(self._group.live - {self._group.pgid})

    def close(self) -> None:
        """Kill and reap every sleeper, remove the temp tree, and verify nothing survived."""
        if self._group is not None:
            self._group.kill_all()
            self._group = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        assert_none_marked(self.token, "population sleepers")

    def _spawn_all(self, root: Path) -> None:
        executables = make_copies(root)
        links = _make_links(root, executables, min(self.size, _MAX_LINKS))
        cwds = [root / f"srv{index}" / "data" for index in range(_CWD_COUNT)]
        for cwd in cwds:
            cwd.mkdir(parents=True)
        group = self._group = ProcessGroup(self.token, lifetime_s=self.lifetime_s)
        lifetime = str(self.lifetime_s)
        home = os.getcwd()
        chunk = max(self.size // _CWD_COUNT, 1)
        try:
            for index in range(self.size):
                if index % chunk == 0:  # posix_spawn has no chdir: the child inherits ours
                    os.chdir(cwds[(index // chunk) % _CWD_COUNT])
                path = (
                    executables[index % len(executables)]
                    if index % 4 == 0
                    else (links[index % len(links)])
                )
                group.spawn(path, _argv(index, path, lifetime))
        finally:
            os.chdir(home)


def make_copies(root: Path) -> list[bytes]:
    """Copies of /bin/sleep under `root` with the varied names above; their paths."""
    paths = []
    for index, name in enumerate(_COPY_NAMES):
        directory = root / "opt" / f"app{index}" / "bin"
        directory.mkdir(parents=True)
        path = os.fsencode(directory) + b"/" + name
        shutil.copyfile(SLEEP, path)
        os.chmod(path, 0o755)
        paths.append(path)
    return paths


def _make_links(root: Path, executables: list[bytes], count: int) -> list[bytes]:
    links = []
    for index in range(count):
        directory = root / "links" / f"d{index % 16}"
        directory.mkdir(parents=True, exist_ok=True)
        target = executables[index % len(executables)]
        link = os.fsencode(directory) + b"/" + os.path.basename(target) + b"-%d" % index
        os.symlink(target, link)
        links.append(link)
    return links


def _argv(index: int, path: bytes, lifetime: str) -> list[bytes]:
    style = index % 3
    argv0 = (
        path
        if style == 0
        else os.path.basename(path)
        if style == 1
        else (_TITLES[index % len(_TITLES)].encode())
    )
    padding = [b"0"] * ((index * 7) % 30)
    if index % 50 == 0:
        padding.append(b"0." + b"0" * 2000)
    return [argv0, lifetime.encode(), *padding]
