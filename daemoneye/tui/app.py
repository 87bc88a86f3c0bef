"""The dashboard application: receives its source, runs the one feed worker, holds the state.

`DaemonEyeApp(source)` — the source is a `DashboardSource` (the IPC adapter in production, a
`FakeSource` in tests, STYLE.md 9). The feed worker posts messages; the handlers below are the
only place live state changes, and screens watch the app's reactives to render it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from textual import events
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.screen import Screen
from textual.theme import BUILTIN_THEMES

from daemoneye.errors import DaemonEyeError
from daemoneye.models import Alert, DaemonStatus, ProcessKey, Rule, RuleStatus
from daemoneye.tui.feed import Feed
from daemoneye.tui.gc_policy import CollectionPolicy
from daemoneye.tui.logic.alerts import alert_key, open_counts
from daemoneye.tui.logic.connection import ConnectionState, Part, header_parts
from daemoneye.tui.logic.history import SampleHistory
from daemoneye.tui.logic.live import EMPTY_SET, ProcessSet
from daemoneye.tui.logic.overrides import override_plan
from daemoneye.tui.messages import (
    AlertRaised,
    AlertsReplaced,
    DaemonConnected,
    DaemonDisconnected,
    HealthUpdated,
    HostsUpdated,
    ProcessesChanged,
    RulesChanged,
)
from daemoneye.tui.multi_source import MultiSource
from daemoneye.tui.screen_table import SCREENS, help_sections, modes, nav_items, switch_bindings
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, NavItem
from daemoneye.tui.screens.help import HelpScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.source import DashboardSource
from daemoneye.tui.themes import DEFAULT_THEME, builtin_theme_dir, load_themes, semantic_defaults

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EditorRunner = Callable[[Sequence[str]], int]


def run_editor(argv: Sequence[str]) -> int:
    """Run the editor in the foreground terminal; its exit status."""
    return subprocess.run(list(argv), check=False).returncode


def follow_terminal_size() -> None:
    """Drop COLUMNS and LINES from the environment before the dashboard runs. Textual asks
    `shutil.get_terminal_size` for the size on every resize, and that believes those variables
    over the terminal: a shell (or pytest) that exports them leaves a dashboard that never
    follows its window."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


class DaemonEyeApp(App[None]):
    """The DaemonEye dashboard."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "DaemonEye"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[None]]]] = dict(modes())
    DEFAULT_MODE = SCREENS[0].mode
    BINDINGS: ClassVar[list[BindingType]] = [
        *switch_bindings(),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("h", "next_host", "Host", show=False),
    ]

    process_set: var[ProcessSet] = var(EMPTY_SET, always_update=True)
    # by alert_key(alert): alert ids are per daemon, and the dashboard may watch several
    alerts: var[Mapping[str, Alert]] = var(MappingProxyType({}), always_update=True)
    rules: var[tuple[RuleStatus, ...]] = var((), always_update=True)
    daemon_status: var[DaemonStatus | None] = var(None, always_update=True)
    connection: var[ConnectionState] = var(ConnectionState())
    header_parts: var[tuple[Part, ...]] = var(())

    def __init__(
        self,
        source: DashboardSource,
        *,
        clock: Clock = time.time,
        theme: str | None = None,
        theme_dirs: Iterable[Path] | None = None,
        remember_theme: Callable[[str], None] | None = None,
        private_daemon: str = "",
        hide_kernel_threads: bool = False,
        remember_kernel_threads: Callable[[bool], None] | None = None,
        show_container: bool = False,
        remember_container: Callable[[bool], None] | None = None,
        show_meters: bool = True,
        remember_meters: Callable[[bool], None] | None = None,
        builtin_rules_dir: Path | None = None,
        override_rules_dir: Path | None = None,
        editor: EditorRunner = run_editor,
        tick_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.history = SampleHistory()
        self.gc_policy = CollectionPolicy()
        self.inputs_seen = 0  # keys and clicks that reached the app, counted
        self.editor = editor
        self.tick_s = tick_s
        self._remember_theme = remember_theme
        self.hide_kernel_threads = hide_kernel_threads  # the processes screen's K
        self._remember_kernel_threads = remember_kernel_threads
        self.show_container = show_container  # the processes screen's C
        self._remember_container = remember_container
        self.show_meters = show_meters  # the processes screen's m
        self._remember_meters = remember_meters
        self.builtin_rules_dir = builtin_rules_dir  # `o` on a built-in rule opens an override
        self.override_rules_dir = override_rules_dir  # ... in this rules.d
        self._pending_alerts: dict[str, Alert] = {}
        self._startup_problems: list[str] = []
        self._theme_ready = False
        self.connection = ConnectionState(private_daemon=private_daemon, since=clock())
        self._register_themes(theme_dirs, theme)

    # -- themes -----------------------------------------------------------------------------
    def _register_themes(self, theme_dirs: Iterable[Path] | None, wanted: str | None) -> None:
        directories = [builtin_theme_dir()] if theme_dirs is None else list(theme_dirs)
        loaded = load_themes(directories)
        for theme in loaded.themes:
            self.register_theme(theme)
        self._startup_problems.extend(loaded.problems)
        fallback = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        choice = wanted or fallback
        if choice not in self.available_themes:
            self._startup_problems.append(f"theme {wanted!r} is not available; using {fallback}")
            choice = fallback
        self.theme = choice

    def get_theme_variable_defaults(self) -> dict[str, str]:
        colours = self.current_theme.to_color_system().generate()
        return semantic_defaults(colours)

    def watch_theme(self, theme: str) -> None:
        if not self._theme_ready or self._remember_theme is None:
            return
        try:
            self._remember_theme(theme)
        except DaemonEyeError as exc:
            self.notify(str(exc), title="Theme not saved", severity="warning")

    def choose_kernel_threads(self, hide: bool) -> None:
        """Kernel threads hidden or shown (the K key): kept for next time."""
        self.hide_kernel_threads = hide
        if self._remember_kernel_threads is None:
            return
        try:
            self._remember_kernel_threads(hide)
        except DaemonEyeError as exc:
            self.notify(str(exc), title="Choice not saved", severity="warning")

    def choose_container_column(self, show: bool) -> None:
        """The CONTAINER column shown or hidden (the C key): kept for next time."""
        self.show_container = show
        if self._remember_container is None:
            return
        try:
            self._remember_container(show)
        except DaemonEyeError as exc:
            self.notify(str(exc), title="Choice not saved", severity="warning")

    def choose_meters(self, show: bool) -> None:
        """Host meters shown or hidden (the m key): kept for next time."""
        self.show_meters = show
        if self._remember_meters is None:
            return
        try:
            self._remember_meters(show)
        except DaemonEyeError as exc:
            self.notify(str(exc), title="Choice not saved", severity="warning")

    @property
    def dashboard_themes(self) -> list[str]:
        """Registered theme names, DaemonEye's own first."""
        names = list(self.available_themes)
        return sorted(names, key=lambda n: (n in BUILTIN_THEMES, n))

    # -- lifecycle --------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.gc_policy.start()
        self._theme_ready = True
        for problem in self._startup_problems:
            self.notify(problem, severity="warning", timeout=10)
        self._update_header()
        self.run_worker(
            Feed(self.source, self.post_message).run(), name="feed", group="feed", exclusive=True
        )

    async def on_unmount(self) -> None:
        self.gc_policy.stop()
        await self.source.close()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(
            event, events.Key | events.MouseDown | events.MouseScrollDown | events.MouseScrollUp
        ):
            self.inputs_seen += 1
            self.gc_policy.input_seen()
        await super().on_event(event)

    def now(self) -> float:
        return self.clock()

    # -- the only place live state changes ------------------------------------------------
    def on_processes_changed(self, message: ProcessesChanged) -> None:
        self.history.record(
            message.process_set.records, message.process_set.changed_since(self.process_set)
        )
        self.process_set = message.process_set
        self.connection = dataclasses.replace(self.connection, last_data=self.now())
        self._update_header()
        # The heap is frozen once the processes screen has taken the set in (set_taken).

    def set_taken(self) -> None:
        """The processes screen took the latest sets in: what is alive now is the dashboard's
        working set (gc_policy.py)."""
        self.gc_policy.set_applied()

    def on_alert_raised(self, message: AlertRaised) -> None:
        # Coalesced: a burst of alerts costs one copy of the alert map per frame.
        if not self._pending_alerts:
            self.call_after_refresh(self._flush_alerts)
        self._pending_alerts[alert_key(message.alert)] = message.alert

    def _flush_alerts(self) -> None:
        if self._pending_alerts:
            self.alerts = MappingProxyType({**self.alerts, **self._pending_alerts})
            self._pending_alerts.clear()
            self._update_header()

    def on_rules_changed(self, message: RulesChanged) -> None:
        self.rules = message.rules
        self._update_header()

    def on_alerts_replaced(self, message: AlertsReplaced) -> None:
        self._pending_alerts.clear()
        self.alerts = MappingProxyType({alert_key(alert): alert for alert in message.alerts})
        self._update_header()

    def on_health_updated(self, message: HealthUpdated) -> None:
        self.daemon_status = message.status

    def on_daemon_connected(self, message: DaemonConnected) -> None:
        hello = message.hello
        self.connection = dataclasses.replace(
            self.connection,
            state="connected",
            host=hello.host,
            role=hello.role,
            peer_uid=hello.peer_uid,
            since=self.now(),
            reason="",
            retry_in=None,
        )
        if message.alerts is not None:
            self._pending_alerts.clear()
            self.alerts = MappingProxyType({alert_key(alert): alert for alert in message.alerts})
        if message.rules is not None:
            self.rules = message.rules
        if message.health is not None:
            self.daemon_status = message.health
        for problem in message.problems:
            self.notify(problem, title="Daemon", severity="warning")
        self._update_header()

    def on_hosts_updated(self, message: HostsUpdated) -> None:
        self.connection = dataclasses.replace(
            self.connection,
            hosts=tuple((host.label, host.up) for host in message.hosts.hosts),
            current_host=message.hosts.current,
        )
        self._update_header()

    async def action_next_host(self) -> None:
        """Several hosts: show the next host's processes, rules and health."""
        if not isinstance(self.source, MultiSource):
            self.notify("This dashboard watches one host (start it with --host a --host b).")
            return
        await self.source.next_host()

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host labels of a several-host dashboard; () for one host."""
        return self.source.labels if isinstance(self.source, MultiSource) else ()

    def on_daemon_disconnected(self, message: DaemonDisconnected) -> None:
        self.connection = dataclasses.replace(
            self.connection,
            state="disconnected",
            since=self.now(),
            reason=message.reason,
            retry_in=message.retry_in,
        )
        self._update_header()

    def _update_header(self) -> None:
        problems = sum(1 for status in self.rules if status.problems)
        self.header_parts = tuple(
            header_parts(
                self.connection,
                len(self.process_set.records),
                open_counts(self.alerts.values()),
                len(self.rules),
                problems,
                self.now(),
            )
        )

    # -- requests and actions shared by the screens ---------------------------------------
    def refuse_unless_admin(self, action: str) -> bool:
        """True (after telling the user why) when this peer may not do `action`."""
        if self.connection.admin:
            return False
        if not self.connection.connected:
            self.notify(f"Cannot {action}: not connected to the daemon.", severity="warning")
            return True
        who = f"uid {self.connection.peer_uid}" if self.connection.peer_uid is not None else "you"
        self.notify(
            f"Sorry, {action} needs an admin connection; {who} is connected as "
            f"{self.connection.role or 'a reader'}. Run the dashboard as root or as a "
            "member of the daemon's admin group.",
            title="Not permitted",
            severity="warning",
            timeout=8,
        )
        return True

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is literal text: messages quote paths, rule ids and errors that
        may contain brackets."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def action_help_quit(self) -> None:
        """Ctrl+C does not quit; say which keys do. Textual's own message carries markup,
        which `notify` above prints literally, so the text is made here, plain."""
        keys = sorted(
            (
                key
                for key, active in self.active_bindings.items()
                if active.binding.action in ("quit", "app.quit")
            ),
            key=len,
        )
        if keys:
            self.notify(f"Press {' or '.join(keys)} to quit the app.", title="Do you want to quit?")

    def report_error(self, what: str, error: Exception) -> None:
        self.notify(str(error), title=what, severity="error", timeout=8)

    def open_rule(self, rule: Rule) -> None:
        """`o` on the rules screen: a rule's own file, or for a built-in rule an override in
        the user's rules.d, created from the built-in rule on first use."""
        plan = None
        if self.builtin_rules_dir is not None and self.override_rules_dir is not None:
            try:
                builtin_text: str | None = Path(rule.source_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                builtin_text = None
            plan = override_plan(
                rule, self.builtin_rules_dir, self.override_rules_dir, builtin_text
            )
        if plan is None:
            self.open_in_editor(rule.source_file, rule.source_line)
            return
        if plan.text is not None:
            try:
                plan.path.parent.mkdir(parents=True, exist_ok=True)
                with plan.path.open("x", encoding="utf-8") as out:
                    out.write(plan.text)
            except FileExistsError:
                pass  # made meanwhile: open it as it is
            except OSError as exc:
                self.notify(
                    f"Cannot create an override in {plan.path.parent}: {exc.strerror}.",
                    title="Override",
                    severity="warning",
                )
                return
            self.notify(f"{plan.path} overrides the built-in rule.", title="Override")
        self.open_in_editor(str(plan.path), plan.line)

    def open_in_editor(self, path: str, line: int) -> None:
        """Suspend the dashboard and open `path` at `line` in $VISUAL / $EDITOR."""
        if not Path(path).is_file():
            self.notify(f"{path} is not a file on this machine.", severity="warning")
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        argv = [*shlex.split(editor), f"+{max(line, 1)}", path]
        try:
            with self.suspend():
                status = self.editor(argv)
        except SuspendNotSupported:
            self.notify(
                f"Cannot open an editor from here; the rule is at {path}:{line}.",
                severity="warning",
            )
            return
        except OSError as exc:
            self.report_error("Editor", exc)
            return
        if status != 0:
            self.notify(f"{argv[0]} exited with status {status}", severity="warning")

    def show_past(self, moment: float, instance: ProcessKey | None = None) -> None:
        """The processes screen, showing the process set as it was at `moment`."""

        async def go() -> None:
            await self.switch_mode(ProcessesScreen.MODE)
            screen = self.screen
            if isinstance(screen, ProcessesScreen):
                screen.show_past(moment, instance)

        self.run_worker(go(), group="past", exclusive=True)

    @property
    def nav_items(self) -> tuple[NavItem, ...]:
        return nav_items()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(help_sections(), self.current_mode))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for entry in SCREENS:
            yield SystemCommand(
                f"Go to {entry.title}",
                f"Show the {entry.title.lower()} screen",
                lambda mode=entry.mode: self.switch_mode(mode),
            )
        yield SystemCommand("Help", "Keys and the filter language", self.action_help)
        target = screen if isinstance(screen, DashboardScreen) else self.screen
        if isinstance(target, DashboardScreen):
            yield from target.palette_commands()
