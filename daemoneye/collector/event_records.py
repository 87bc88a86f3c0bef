"""What the process-event source hands out and what it needs: the events it queues with what
/proc said at that moment, its counters for `health`, and the connector it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from daemoneye.models import ProcessDetails, ProcessEvent


class EventConnector(Protocol):
    """What the source needs from `ProcConnector` (tests substitute a socketpair)."""

    overruns: int
    datagrams_total: int  # datagrams received: the reader's wake-ups are bounded by it

    @property
    def rcvbuf_bytes(self) -> int: ...
    @property
    def delivers_every_event(self) -> bool:
        """False when a kernel mask or a socket filter holds events back (sequence gaps)."""

    @property
    def filtering(self) -> str: ...
    def open(self, *, ack_timeout: float = ...) -> None: ...
    def fileno(self) -> int: ...
    def recv(self) -> memoryview: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ObservedEvent:
    """One queued event with what /proc said at that moment (details only for exec)."""

    event: ProcessEvent
    start_ticks: int | None  # stat field 22, None when unknown
    details: ProcessDetails | None  # exe, cmdline, cwd, uid, gid; user is left for the caller


@dataclass(frozen=True, slots=True)
class EventSourceStats:
    """Counters since start(); the daemon reports them in `health`."""

    messages_total: int  # proc connector messages decoded, threads and acks included
    events_total: int  # process-level fork/exec/exit events decoded (queued or not)
    # events the kernel dropped (ENOBUFS): from per-CPU sequence gaps, or, where a filter
    # makes gaps normal, one per overrun report (a lower bound)
    lost_total: int
    overruns_total: int  # ENOBUFS reports
    dropped_total: int  # events we discarded because the queue was past its marks
    partial_total: int  # events whose process was gone before /proc could be read
    malformed_total: int  # undecodable messages skipped
    threads_ignored_total: int
    queued: int
    rcvbuf_bytes: int
    datagrams_total: int = 0  # datagrams that reached the reader (each may wake it)
    filtering: str = ""  # what the kernel's mask and the socket filter keep from the reader
    rescued_total: int = 0  # execs gone from /proc before the read that the eBPF capture kept whole
    uncaptured_total: int = 0  # exec events the eBPF capture had no record for (ring full)
