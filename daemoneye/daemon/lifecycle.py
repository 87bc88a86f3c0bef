"""The daemon's life: startup → main loop → shutdown, with signals handled like uvicorn's Server.

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

from daemoneye import __version__
from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon.collection import Collection
from daemoneye.daemon.ipc_runtime import IpcRuntime, start_ipc
from daemoneye.daemon.lock import PidLock
from daemoneye.daemon.sdnotify import Notifier
from daemoneye.engine import audit
from daemoneye.engine.delivery import DeliveryWorker
from daemoneye.engine.detection import DetectionEngine
from daemoneye.engine.reload import ReloadOutcome, watch_rules
from daemoneye.errors import DaemonEyeError, StoreError
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

    @property
    def collection(self) -> Collection:
        assert self._collection is not None, "startup() has not run"
        return self._collection

    def run(self) -> int:
        """Run until a signal stops the daemon; the return value is the process exit code."""
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
        paths, config = self.loaded.paths, self.loaded.config
        apply_log_level(config.daemon.log_level)
        self._lock.acquire()
        file_mode = 0o600
        loop = asyncio.get_running_loop()
        self._collection = await loop.run_in_executor(
            self._worker, self._open_collection, paths.db, file_mode, "starting"
        )
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
        if not self.collection.scanner.sees_all:
            log.warning(
                "running as uid %d without privileges: the exe, cwd and hash of other "
                "users' processes are hidden (run as root for full coverage)",
                os.geteuid(),
            )

        def wakeup() -> None:  # runs on the event reader thread
            loop.call_soon_threadsafe(self._on_events, time.monotonic())

        event_source = await loop.run_in_executor(
            self._worker, self.collection.start_events, wakeup
        )
        if event_source == "netlink":
            log.info("kernel process events: on (every exec and exit is seen as it happens)")
        else:
            log.warning(
                "running in %s; short-lived processes between two scans can be missed", event_source
            )
        await self._start_engine()
        # IPC: the socket opens once the store is open (a live daemon on it stops this one).
        self.ipc = await start_ipc(lambda: self.loaded, self.collection, self._worker)

    async def _start_engine(self) -> None:
        """Sinks, rules and the rule-file watcher. A sink that cannot be built (e.g. a file sink
        in an unwritable directory) stops startup with the reason: alerts must not vanish."""
        loop = asyncio.get_running_loop()
        paths, config = self.loaded.paths, self.loaded.config
        self.delivery = DeliveryWorker.from_config(paths.db, config)
        self.delivery.start()
        delivery = self.delivery

        def attach() -> ReloadOutcome:
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
            return engine.load()

        await loop.run_in_executor(self._worker, attach)
        self._rules_watch = asyncio.create_task(
            watch_rules(
                self.engine.registry, self._on_rules_reloaded, stop_event=self._rules_watch_stop
            ),
            name="daemoneye-rules-watch",
        )
        log.info("watching rule directories: %s", ", ".join(map(str, paths.rules_dirs)))

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
        """Scan every interval; between scans, write kernel events as they arrive."""
        next_tick = time.monotonic()
        while not self._should_exit:
            now = time.monotonic()
            if now >= next_tick or self.collection.reconcile_requested:
                await self._tick()
                next_tick += self.loaded.config.collector.interval
                now = time.monotonic()
                if next_tick < now:  # a slow tick: skip the missed ones instead of bursting
                    next_tick = now
            if self._reload_requested:
                self._reload_requested = False
                await self._reload()
            if self._events_pending or self.collection.events_pending:
                self._events_pending = False
                # Coalesce a burst into one transaction; well inside the latency budget.
                wait = coalesce_wait(self._events_since, time.monotonic(), self._coalesce_s)
                if wait > 0:
                    await asyncio.sleep(wait)
                # Events queued from here on belong to the next batch (the reader signals
                # again once this drain has taken the queue).
                self._events_since = None
                await self._drain_events()
                continue
            self._wake.clear()
            if self._should_exit or self._events_pending or self._reload_requested:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=next_tick - now)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            delta = await loop.run_in_executor(self._worker, self.collection.tick)
        except (StoreError, OSError) as exc:
            # Keep collecting: a full disk or a locked file may clear up; say so each time.
            log.error("tick failed, nothing of it was written: %s", exc)
            return
        if not self._ready:
            self._ready = True
            self.notifier.ready(f"watching {delta.stats.processes} processes")
            log.info(
                "ready: first scan saw %d processes in %.1f ms",
                delta.stats.processes,
                delta.stats.duration_s * 1000,
            )
        if self.notifier.watchdog_interval is not None:
            self.notifier.watchdog()

    async def _drain_events(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            delta = await loop.run_in_executor(self._worker, self.collection.drain_events)
            busy = delta is not None and len(delta.events) >= BUSY_BATCH
            self._coalesce_s = EVENT_COALESCE_BUSY_S if busy else EVENT_COALESCE_S
        except (StoreError, OSError) as exc:
            log.error("writing kernel events failed; the next scan reconciles: %s", exc)

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
        if new.config.collector.event_buffer != self.loaded.config.collector.event_buffer:
            log.warning("collector.event_buffer changed: this takes effect at the next restart")
        self.loaded = LoadedConfig(
            config=new.config,
            paths=self.loaded.paths,
            settings=new.settings,
            files_read=new.files_read,
        )
        apply_log_level(new.config.daemon.log_level)
        await loop.run_in_executor(self._worker, self.collection.reconfigure, new.config)
        if self.delivery is not None:
            self.delivery.reopen()  # logrotate: file sinks open their path again
        if self.collection.engine is not None:
            await loop.run_in_executor(self._worker, self.engine.load)
        log.info(
            "configuration reloaded from %s",
            ", ".join(map(str, new.files_read)) or "defaults and environment",
        )
        return "configuration reloaded"

    # -- shutdown --------------------------------------------------------------------------
    async def shutdown(self) -> None:
        self.notifier.stopping()
        if self.ipc is not None:  # IPC first: no client reads a store that is closing
            await self.ipc.stop()
            self.ipc = None
        loop = asyncio.get_running_loop()
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
