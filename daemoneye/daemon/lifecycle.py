"""The daemon's life: startup → main loop → shutdown, with signals handled like uvicorn's Server.

The daemon is the agent: it starts procmond (the collector process, daemon/procmond_link.py),
applies its frames on the worker thread, and starts a new one when it ends (a reconciling
scan follows; `health` counts the restarts and the gap).

SIGTERM/SIGINT ask for a graceful stop (the tick in flight is finished and committed); a second
one forces an immediate exit, which is safe because every tick is one SQLite transaction.
SIGHUP re-reads the configuration: validated first, swapped in only when it is good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemoneye import __version__, heap
from daemoneye.collector.procfs import read_boot_id, read_boot_time
from daemoneye.config.schema import Config, LoadedConfig
from daemoneye.daemon.collection import Collection
from daemoneye.daemon.ipc_runtime import IpcRuntime, start_ipc
from daemoneye.daemon.lock import PidLock
from daemoneye.daemon.privilege_drop import (
    drop_agent_privileges,
    effective_user,
    prepare_agent_drop,
)
from daemoneye.daemon.procmond_link import Lost, ProcmondLink, procmond_base_command
from daemoneye.daemon.sdnotify import Notifier
from daemoneye.daemon.startup_evaluation import StartupProgress, start_in_full
from daemoneye.engine import audit
from daemoneye.engine.delivery import DeliveryWorker
from daemoneye.engine.detection import DetectionEngine
from daemoneye.engine.reload import ReloadOutcome, watch_rules
from daemoneye.engine.stream import EventStream
from daemoneye.errors import DaemonEyeError, StoreError
from daemoneye.models import Rule, ScanDelta
from daemoneye.procmond.launcher import LauncherError, start_launcher
from daemoneye.store.db import Store

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0
# A second SIGINT/SIGTERM forces an exit, unless it comes this soon after the first: then it
# is a second sender of the same request, not an operator insisting.
REPEAT_GRACE_S = 0.5
# Kernel events are written (and rules run over them) in batches: a batch is taken 10 ms after
# its first event when quiet, 50 ms after it under an exec storm, where each batch's fixed cost
# (one transaction, one pass of every rule) would otherwise dominate. The window counts from
# the batch's first event, not from the end of the previous batch: under a storm the next batch
# starts filling while the previous one is written, and waiting a whole window after that write
# would add the write's duration to every exec's latency a second time. An exec then waits at
# most one window plus one write, well inside the 100 ms exec→alert budget.
EVENT_COALESCE_S = 0.01
EVENT_COALESCE_BUSY_S = 0.05
BUSY_BATCH = 32  # events in one batch that mark a storm
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A procmond that keeps dying is started again after 0 s, then 1, 2, 4 … up to 30 s.
RESTART_BACKOFF_MAX_S = 30.0
IDLE_WAKE_S = 1.0


def coalesce_wait(first_event_at: float | None, now: float, window_s: float) -> float:
    """How long to wait before taking a batch of kernel events: until `window_s` after its
    first event (`first_event_at`, None when unknown: then a whole window from `now`). Zero
    when the window has already passed, e.g. while the previous batch was being written."""
    if first_event_at is None:
        return window_s
    return max(0.0, first_event_at + window_s - now)


def apply_log_level(level: str) -> None:
    logging.getLogger("daemoneye").setLevel(level.upper())


class Daemon:
    """Wires collector and store; later issues add the engine and the IPC server here."""

    def __init__(
        self,
        loaded: LoadedConfig,
        reload_config: Callable[[], LoadedConfig],
        *,
        proc_root: str = "/proc",
        notifier: Notifier | None = None,
    ) -> None:
        self.loaded = loaded
        self._reload_config = reload_config
        self._proc_root = proc_root
        self.notifier = notifier or Notifier()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daemoneye-tick")
        self._lock = PidLock(Path(str(loaded.paths.db) + ".lock"))
        self._collection: Collection | None = None
        self.delivery: DeliveryWorker | None = None
        self._rules_watch: asyncio.Task[None] | None = None
        self._full_evaluation: asyncio.Task[None] | None = None
        self._stopping_full_evaluation = False
        self._rules_watch_stop = asyncio.Event()
        self.ipc: IpcRuntime | None = None  # the IPC socket (daemon/ipc_runtime.py)
        self._wake = asyncio.Event()
        self._should_exit = False
        self._reload_requested = False
        self._events_pending = False
        self._events_since: float | None = None  # monotonic time of the batch's first event
        self._coalesce_s = EVENT_COALESCE_S
        self._ready = False
        self._exit_signals = 0
        self._exit_requested_at: float | None = None
        self.link: ProcmondLink | None = None
        self._restart_at: float | None = None  # monotonic: when to start procmond again
        self._quick_deaths = 0  # procmond ended before its first full scan, in a row

    @property
    def collection(self) -> Collection:
        assert self._collection is not None, "startup() has not run"
        return self._collection

    def run(self) -> int:
        """Run until a signal stops the daemon; the return value is the process exit code."""
        heap.limit_arenas()  # before the event loop's and the store's threads
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
            self._restore_signal_handlers(loop)
        return 0

    # -- startup ---------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loaded = effective_user(self.loaded)
        paths, config = self.loaded.paths, self.loaded.config
        apply_log_level(config.daemon.log_level)
        # Started as root: the store's files go to [daemon] user first, procmond starts, then
        # the agent drops to that user with no capabilities, while it still has one thread
        # (docs/privileges.md). Nothing below the drop runs as root.
        prepared = prepare_agent_drop(self.loaded)
        self._lock.acquire()
        file_mode = 0o600
        loop = asyncio.get_running_loop()

        def wakeup() -> None:  # runs on the procmond reader thread
            loop.call_soon_threadsafe(self._on_events, time.monotonic())

        self.link = ProcmondLink(
            config.collector,
            boot_time=self._stored_boot_time(paths.db, file_mode),
            proc_root=self._proc_root,
            wakeup=wakeup,
            user=config.daemon.user if os.geteuid() == 0 else None,
        )
        if prepared is not None:
            # Root: every procmond, this one and each after a crash, is started by the
            # launcher, which keeps procmond's capabilities once the agent has none.
            self.link.launcher = start_launcher(
                prepared.account,
                procmond_base_command(self.link.boot_time, self._proc_root, self.link.user),
            )
            log.info("procmond's launcher started (pid %d)", self.link.launcher.pid)
        self.link.start(read=False)
        log.info("procmond started (pid %s)", self.link.pid)
        drop_agent_privileges(self.loaded, prepared)
        self._collection = await loop.run_in_executor(
            self._worker, self._open_collection, paths.db, file_mode, "starting"
        )
        self.collection.link = self.link
        self.link.start_reader()
        carried = await loop.run_in_executor(self._worker, self.collection.resume)
        log.info(
            "daemoneye %s starting: %s mode, store %s, scan every %gs, %d live processes "
            "carried over from the store",
            __version__,
            paths.mode.value,
            paths.db,
            config.collector.interval,
            carried,
        )
        in_full = await self._start_engine()
        # IPC: the socket opens once the store is open (a live daemon on it stops this one).
        self.ipc = await start_ipc(lambda: self.loaded, self.collection, self._worker)
        # The rules are live already; running them over the whole store may take seconds on
        # a long history (each rule up to its full-evaluation budget), so it happens now, one
        # rule at a time on the worker, with clients' requests and ticks in between.
        if in_full:
            progress = StartupProgress(len(in_full))
            self.collection.startup_evaluation = progress
            self._full_evaluation = start_in_full(
                in_full,
                self.engine.evaluate_in_full,
                self._worker,
                progress,
                lambda: self._stopping_full_evaluation,
            )

    async def _start_engine(self) -> tuple[Rule, ...]:
        """Sinks, rules and the rule-file watcher; the rules still to run over the whole store.
        A sink that cannot be built (e.g. a file sink in an unwritable directory) stops startup
        with the reason: alerts must not vanish."""
        loop = asyncio.get_running_loop()
        paths, config = self.loaded.paths, self.loaded.config
        self.delivery = DeliveryWorker.from_config(paths.db, config)
        self.delivery.start()
        delivery = self.delivery
        stream = EventStream.from_config(config)
        if stream is not None:
            stream.start()
            self.collection.stream = stream
            log.info("streaming process events to %s", ", ".join(config.stream.sinks))

        def attach() -> tuple[Rule, ...]:
            engine = DetectionEngine(
                self.collection.store,
                paths.db,
                config,
                paths.rules_dirs,
                on_new_alerts=delivery.wake,
            )
            engine.book.spill = delivery.spill  # held alerts reach the sinks from memory
            self.collection.engine = engine
            audit.record(
                self.collection.store,
                "daemon.start",
                "daemon",
                {"pid": os.getpid(), "version": __version__, "mode": paths.mode.value},
            )
            return engine.load_live()

        in_full = await loop.run_in_executor(self._worker, attach)
        self._rules_watch = asyncio.create_task(
            watch_rules(
                self.engine.registry, self._on_rules_reloaded, stop_event=self._rules_watch_stop
            ),
            name="daemoneye-rules-watch",
        )
        log.info("watching rule directories: %s", ", ".join(map(str, paths.rules_dirs)))
        return in_full

    @property
    def engine(self) -> DetectionEngine:
        assert self.collection.engine is not None, "the engine has not started"
        return self.collection.engine

    async def _on_rules_reloaded(self, outcome: ReloadOutcome) -> None:
        """A rule file changed: make the outcome live between two ticks (worker thread)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._worker, self.engine.apply, outcome)
        except (StoreError, OSError) as exc:
            log.error("applying the reloaded rules failed: %s", exc)

    def _stored_boot_time(self, db: Path, file_mode: int) -> float:
        """The boot time the store keys this boot's instances by, for procmond's command line;
        read on this thread with a connection of its own, before there is a worker thread."""
        store = Store.open(db, file_mode=file_mode)
        try:
            return store.boot_time(read_boot_id(self._proc_root), read_boot_time(self._proc_root))
        finally:
            store.close()

    def _open_collection(self, db: Path, file_mode: int, event_source: str) -> Collection:
        store = Store.open(db, file_mode=file_mode)
        try:
            return Collection(
                store,
                self.loaded.config,
                mode=self.loaded.paths.mode.value,
                event_source=event_source,
                proc_root=self._proc_root,
            )
        except BaseException:
            store.close()
            raise

    # -- main loop -------------------------------------------------------------------------
    async def main_loop(self) -> None:
        """Apply procmond's frames as they arrive (scans every interval, kernel events in
        between); start a new procmond when one ends."""
        while not self._should_exit:
            if self._reload_requested:
                self._reload_requested = False
                await self._reload()
            if self._events_pending:
                self._events_pending = False
                # Coalesce a burst into one transaction; well inside the latency budget.
                wait = coalesce_wait(self._events_since, time.monotonic(), self._coalesce_s)
                if wait > 0:
                    await asyncio.sleep(wait)
                # Frames queued from here on belong to the next batch.
                self._events_since = None
                await self._apply_frames()
                continue
            if self._restart_at is not None and time.monotonic() >= self._restart_at:
                await self._restart_procmond()
            self._wake.clear()
            if self._should_exit or self._events_pending or self._reload_requested:
                continue
            timeout = IDLE_WAKE_S
            if self._restart_at is not None:
                timeout = max(0.0, min(timeout, self._restart_at - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _apply_frames(self) -> None:
        assert self.link is not None
        batch = self.link.take()
        lost = [item for item in batch if isinstance(item, Lost)]
        payloads = [item for item in batch if not isinstance(item, Lost)]
        loop = asyncio.get_running_loop()
        if payloads:
            try:
                applied = await loop.run_in_executor(
                    self._worker, self.collection.apply_frames, payloads
                )
            except (StoreError, OSError) as exc:
                # Keep collecting: a full disk or a locked file may clear up; say so each time.
                log.error("writing procmond's frames failed; nothing of them was written: %s", exc)
            else:
                self._coalesce_s = (
                    EVENT_COALESCE_BUSY_S if applied.events >= BUSY_BATCH else EVENT_COALESCE_S
                )
                if applied.scans:
                    self._quick_deaths = 0
                    self._after_scan(applied.first_scan)
        if lost and not self._should_exit:
            await self._procmond_lost(lost[0])

    async def _apply_last_frames(self) -> None:
        """After stopping procmond on purpose: apply what it sent, ignore the end of the pair."""
        assert self.link is not None
        payloads = [item for item in self.link.take() if not isinstance(item, Lost)]
        if not payloads:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._worker, self.collection.apply_frames, payloads)
        except (StoreError, OSError) as exc:
            log.error("writing procmond's last frames failed: %s", exc)

    def _after_scan(self, delta: ScanDelta | None) -> None:
        if not self._ready and delta is not None:
            self._ready = True
            self.notifier.ready(f"watching {len(self.collection.mirror)} processes")
            log.info(
                "ready: first scan saw %d processes in %.1f ms",
                delta.stats.processes,
                delta.stats.duration_s * 1000,
            )
        if self.notifier.watchdog_interval is not None:
            self.notifier.watchdog()

    async def _procmond_lost(self, lost: Lost) -> None:
        """procmond ended (or sent a frame that does not validate): reap it, note the gap,
        and start a new one at once — or after a back-off if it keeps ending."""
        assert self.link is not None
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, self.link.stop)
        log.error("%s (exit status %s): starting a new procmond", lost.reason, code)
        await loop.run_in_executor(self._worker, self.collection.procmond_lost, lost.reason)
        delay = (
            min(RESTART_BACKOFF_MAX_S, 2.0 ** (self._quick_deaths - 1))
            if self._quick_deaths
            else 0.0
        )
        self._quick_deaths += 1
        self._restart_at = time.monotonic() + delay

    async def _restart_procmond(self) -> None:
        assert self.link is not None
        self._restart_at = None
        try:
            self.link.start()
        except (OSError, LauncherError) as exc:
            log.error("could not start procmond: %s", exc)
            self._restart_at = time.monotonic() + RESTART_BACKOFF_MAX_S
            return
        self.collection.restarts += 1
        log.info("procmond started again (pid %s); its first scan reconciles", self.link.pid)
        if self.link.user is not None and self.link.launcher is None:
            # The agent gave up the capabilities procmond needs when it dropped, and the
            # launcher (procmond/launcher.py) that keeps them is gone.
            log.warning(
                "procmond was started again by an agent without privileges: it has none of "
                "its capabilities (no kernel events, other users' details hidden) until the "
                "daemon is restarted"
            )

    def _on_events(self, queued_at: float) -> None:
        """Called on the loop (from the event reader thread) when events are queued; the first
        call after a drain says when the next batch began (`queued_at`, monotonic)."""
        self._events_pending = True
        if self._events_since is None:
            self._events_since = queued_at
        self._wake.set()

    async def _reload(self) -> None:
        """Validate-then-swap: a broken config file leaves the running config untouched. The
        files are read and the worker is waited for off the event loop, so IPC clients are
        served meanwhile. The service manager hears `RELOADING=1` first and `READY=1` at the
        end, applied or refused, so `systemctl reload` never waits for nothing."""
        self.notifier.reloading()
        status = "configuration reload failed"
        try:
            status = await self._apply_reload()
        finally:
            self.notifier.reloaded(status)

    async def _apply_reload(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, self._reload_config)
        except DaemonEyeError as exc:
            log.error("configuration reload refused, keeping the running configuration: %s", exc)
            return "configuration reload refused"
        if new.paths.db != self.loaded.paths.db:
            log.warning(
                "store path changed to %s: this takes effect at the next restart", new.paths.db
            )
        collector_changed = new.config.collector != self.loaded.config.collector
        stream_changed = (new.config.stream, new.config.sinks) != (
            self.loaded.config.stream,
            self.loaded.config.sinks,
        )
        self.loaded = LoadedConfig(
            config=new.config,
            paths=self.loaded.paths,
            settings=new.settings,
            files_read=new.files_read,
        )
        apply_log_level(new.config.daemon.log_level)
        await loop.run_in_executor(self._worker, self.collection.reconfigure, new.config)
        if collector_changed and self.link is not None:
            # procmond takes its settings at start: a new one, whose full scan reconciles.
            log.info("[collector] changed: starting procmond again with the new settings")
            self.link.settings = new.config.collector
            await loop.run_in_executor(None, self.link.stop)
            await self._apply_last_frames()
            await loop.run_in_executor(
                self._worker, self.collection.procmond_lost, "restarting with new settings"
            )
            try:
                self.link.start()
            except (OSError, LauncherError) as exc:
                log.error("could not start procmond: %s", exc)
                self._restart_at = time.monotonic() + RESTART_BACKOFF_MAX_S
        if self.delivery is not None:
            self.delivery.reopen()  # logrotate: file sinks open their path again
        if stream_changed:
            await self._swap_stream(new.config)
        if self.collection.engine is not None:
            await loop.run_in_executor(self._worker, self.engine.load)
        log.info(
            "configuration reloaded from %s",
            ", ".join(map(str, new.files_read)) or "defaults and environment",
        )
        return "configuration reloaded"

    async def _swap_stream(self, config: Config) -> None:
        """Validate-then-swap the process-event stream after [stream] or a sink changed: a new
        one that cannot be built leaves the running one as it is."""
        loop = asyncio.get_running_loop()
        try:
            stream = await loop.run_in_executor(None, EventStream.from_config, config)
        except DaemonEyeError as exc:
            log.error("[stream] not changed, keeping the running stream: %s", exc)
            return
        if stream is not None:
            stream.start()

        def swap() -> EventStream | None:
            old, self.collection.stream = self.collection.stream, stream
            return old

        old = await loop.run_in_executor(self._worker, swap)
        if old is not None:
            await loop.run_in_executor(None, old.stop)
        log.info(
            "process-event stream: %s",
            "to " + ", ".join(config.stream.sinks) if stream is not None else "off",
        )

    # -- shutdown --------------------------------------------------------------------------
    async def shutdown(self) -> None:
        self.notifier.stopping()
        if self.ipc is not None:  # IPC first: no client reads a store that is closing
            await self.ipc.stop()
            self.ipc = None
        loop = asyncio.get_running_loop()
        if self._full_evaluation is not None:  # the rule on the worker now is finished first
            self._stopping_full_evaluation = True
            await self._full_evaluation
            self._full_evaluation = None
        if self._rules_watch is not None:
            self._rules_watch_stop.set()
            try:
                await asyncio.wait_for(self._rules_watch, timeout=SHUTDOWN_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                self._rules_watch.cancel()
            self._rules_watch = None
        if self.delivery is not None:
            await loop.run_in_executor(None, self.delivery.stop)
            self.delivery = None
        if self._collection is not None and self._collection.stream is not None:
            await loop.run_in_executor(None, self._collection.stream.stop)
        if self.link is not None:
            await loop.run_in_executor(None, self.link.stop)
            self.link.close_launcher()
            if self._collection is not None:
                await self._apply_last_frames()
        if self._collection is not None:
            collection = self._collection
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._worker, self._close_collection, collection),
                    timeout=SHUTDOWN_TIMEOUT_S,
                )
            except TimeoutError:
                log.error("shutdown timed out after %.0fs; exiting anyway", SHUTDOWN_TIMEOUT_S)
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._lock.release()
        log.info("stopped")

    @staticmethod
    def _close_collection(collection: Collection) -> None:
        if collection.engine is not None:
            audit.record(collection.store, "daemon.stop", "daemon", {"pid": os.getpid()})
        collection.close()
        collection.store.close()

    # -- signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _restore_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            log.info("SIGHUP: reloading the configuration")
            self._reload_requested = True
            self._wake.set()
            return
        now = time.monotonic()
        if self._exit_requested_at is not None and now - self._exit_requested_at < REPEAT_GRACE_S:
            # Two senders at once (the dashboard stopping its private daemon as it dies, and
            # the kernel's parent-death signal; systemd and a shell) ask for the same stop.
            log.info("%s again within %.1f s: already stopping", sig.name, REPEAT_GRACE_S)
            return
        self._exit_signals += 1
        if self._exit_signals > 1:
            log.warning("%s again: forcing exit now", sig.name)
            # Safe: the store only ever holds whole ticks (one transaction each).
            os._exit(128 + sig.value)
        log.info("%s: stopping after the current tick (send it again to force)", sig.name)
        self._exit_requested_at = now
        self._should_exit = True
        self._wake.set()
