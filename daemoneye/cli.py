"""The `daemoneye` command: parse the command line, load the configuration, call one function.

Exit codes: 0 success; 1 failure (daemon error, store error, unhealthy); 2 bad input (usage,
configuration, refused SQL, bad filter); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemoneye import __version__
from daemoneye.commands.common import Context, remote_route, remote_routes
from daemoneye.commands.completion import FILE_PATH, SHELLS
from daemoneye.config.loading import load_config, mode_from_flag
from daemoneye.config.schema import LoadedConfig
from daemoneye.errors import DaemonEyeError
from daemoneye.log_format import SafeFormatter, log_uncaught_exceptions, stream_is_journal
from daemoneye.models import ALERT_STATES, SEVERITIES
from daemoneye.output import FORMATS, set_wide
from daemoneye.text import visible

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daemoneye",
        description="A security-focused process monitor for Linux. With no COMMAND, on a "
        "terminal, `daemoneye` opens the dashboard.",
        epilog="Exit codes: 0 ok, 1 failure or unhealthy, 2 bad input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"daemoneye {__version__}")
    _add_global_options(parser, default=None)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, default=argparse.SUPPRESS)
    commands = _Commands(parser.add_subparsers(dest="command", metavar="COMMAND"), common)

    daemon = commands.add_parser("daemon", help="run the headless daemon in the foreground")
    daemon.add_argument("--interval", metavar="SECONDS", help="scan interval (collector.interval)")
    daemon.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="stderr log threshold (daemon.log_level)",
    )

    query = commands.add_parser("query", help="run one read-only SQL SELECT over the store")
    query.add_argument(
        "sql", help='one SELECT statement, e.g. "SELECT pid, name FROM live_processes"'
    )
    query.add_argument(
        "--max-rows",
        type=_at_least(0),
        default=10_000,
        metavar="N",
        help="print at most N rows (default 10000)",
    )

    processes = commands.add_parser(
        "processes",
        help="list live processes, or `processes show PID`",
        description="FILTER terms: free text, user:NAME name:TEXT exe:TEXT cmd:TEXT cwd:TEXT "
        "pid:N ppid:N uid:N cpu:>N rss:>SIZE threads:>N, not:TERM to negate; all must match. "
        "These need no quoting. `cpu>N` works too when quoted (the shell reads > as a "
        "redirection), and `-TERM` after `--`: daemoneye processes -- -name:kworker",
    )
    processes.add_argument("filter", nargs="*", help="filter terms, or: show PID, or: tree [PID]")
    processes.add_argument(
        "--at",
        metavar="TIME",
        help="the processes as they were at TIME: 03:12, yesterday 23:40, -2h, "
        "2026-12-07 03:12, 2026-12-07T03:12:07+01:00 (local zone unless one is given)",
    )

    timeline = commands.add_parser(
        "timeline",
        help="what happened, newest first: exec, exit, start, fork and alert events",
        description="FILTER terms: free text, name:TEXT user:TEXT cmd:TEXT pid:N ppid:N, "
        "event:exec|exit|start|fork|alert, not:TERM to negate; all must match. TIME: now, "
        "10m ago, -2h, 1h30m, 03:12, yesterday 23:40, 2026-12-07 03:12, "
        "2026-12-07T03:12:07+01:00, … (local zone unless one is given).",
    )
    timeline.add_argument("filter", nargs="*", help="filter terms")
    timeline.add_argument("--since", metavar="TIME", help="oldest event to show (default: all)")
    timeline.add_argument("--until", metavar="TIME", help="newest event to show (default: now)")
    timeline.add_argument(
        "--limit",
        type=_at_least(1),
        default=100,
        metavar="N",
        help="print at most N events, the newest (default 100)",
    )

    connections = commands.add_parser(
        "connections",
        help="sockets held by live processes",
        description="FILTER terms: port:N (local or remote), remote:ADDR, remote:NET/BITS, "
        "remote:public|private|loopback|link-local|multicast, proto:tcp|udp|tcp6|udp6|unix, "
        "state:STATE, pid:N, dir:listen|inbound|outbound, not:TERM to negate; all must match.",
    )
    connections.add_argument("filter", nargs="*", help="filter terms")

    commands.add_parser("health", help="how the daemon is doing (exit 1 when unhealthy)")

    config = commands.add_parser("config", help="configuration commands")
    config_commands = _Commands(
        config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True), common
    )
    config_commands.add_parser("show", help="effective configuration with each value's source")

    rules = commands.add_parser(
        "rules",
        help="detection rules: list, show, validate, test, import, enable, disable, reload",
    )
    rules_commands = _Commands(
        rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True), common
    )
    rules_commands.add_parser(
        "list", help="every rule with its source, overrides, hits and load problems"
    )
    rules_show = rules_commands.add_parser("show", help="one rule in full")
    rules_show.add_argument("rule_id", metavar="ID")
    rules_validate = rules_commands.add_parser(
        "validate",
        help="check a rule file (TOML or Sigma), or every rule file of a directory, without "
        "touching the running set (exit 2 on problems)",
    )
    rules_validate.add_argument("file", type=Path, metavar="FILE-OR-DIR").complete = FILE_PATH  # type: ignore[attr-defined]
    rules_test = rules_commands.add_parser(
        "test",
        help="run a rule (by id) or a file's rules over the store and print the "
        "alerts they would raise, raising none",
    )
    rules_test.add_argument("target", metavar="RULE-OR-FILE").complete = FILE_PATH  # type: ignore[attr-defined]
    rules_import = rules_commands.add_parser(
        "import",
        help="convert Sigma rules (*.yml, *.yaml, or directories of them) into TOML rules "
        "(exit 2 when a rule could not be converted)",
    )
    rules_import.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    rules_import.add_argument(
        "--out",
        default="-",
        metavar="DIR|-",
        help="write NAME.toml per Sigma file into DIR (default -: standard output)",
    )
    rules_import.add_argument(
        "--force", action="store_true", help="replace TOML files that already exist in DIR"
    )
    for verb, text in (
        ("enable", "switch a rule on in the running daemon (admin)"),
        ("disable", "switch a rule off in the running daemon (admin)"),
    ):
        switch = rules_commands.add_parser(verb, help=text)
        switch.add_argument("rule_id", metavar="ID")
    rules_commands.add_parser(
        "reload",
        help="make the daemon re-read every rule directory "
        "now (admin; exit 2 when a rule was refused)",
    )
    _add_alert_commands(commands, common)
    completion = commands.add_parser(
        "completion",
        help="print the shell completion script (bash, zsh, fish); see docs/cli.md",
        description="Print a completion script for SHELL, e.g. "
        "`daemoneye completion bash > /etc/bash_completion.d/daemoneye`, or "
        "`source <(daemoneye completion zsh)` in ~/.zshrc.",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help=", ".join(SHELLS))
    commands.add_parser(
        "man",
        help="print the manual page (roff): daemoneye man | man -l -",
        description="Print this program's manual page, generated from its options, e.g. "
        "`daemoneye man > /usr/local/share/man/man1/daemoneye.1`.",
    )
    return parser


_GLOBAL_OPTIONS_TITLE = "global options (before or after the command)"


def _add_global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """The options every command takes. The top-level parser gives them `None` defaults; the
    copy each subcommand inherits uses SUPPRESS, so a value given before the command is not
    overwritten by the subcommand's default (`daemoneye -o json query …` and
    `daemoneye query … -o json` both work)."""
    group = parser.add_argument_group(_GLOBAL_OPTIONS_TITLE)
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=default,
        help="config file to use instead of the mode's own config file",
    ).complete = FILE_PATH  # type: ignore[attr-defined]
    group.add_argument(
        "--socket", metavar="PATH", default=default, help="daemon socket (daemon.socket)"
    ).complete = FILE_PATH  # type: ignore[attr-defined]
    group.add_argument(
        "--host",
        metavar="ssh://[USER@]HOST[:PORT]",
        action="append",
        default=default,
        help="talk to that host's daemon through your own ssh (or a name from [remote] "
        "hosts); --socket is then the remote socket. The dashboard takes several",
    )
    group.add_argument(
        "--db",
        metavar="PATH",
        default=default,
        help="store database file (store.path); read commands read this file even while a "
        "daemon runs",
    ).complete = FILE_PATH  # type: ignore[attr-defined]
    group.add_argument(
        "--mode",
        choices=("system", "user"),
        default=default,
        help="system paths (default for root) or XDG user paths",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        help="output format (cli.output; default table)",
    )
    group.add_argument(
        "--wide",
        action="store_true",
        default=default,
        help="never cut a table to the terminal's width (COLUMNS, when set, is the width "
        "otherwise, also in a pipe)",
    )


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number no less than `minimum`. argparse names the option in
    the error (`argument --max-rows: must be a whole number 0 or more, not '-1'`)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number {minimum} or more, not {text!r}"
            )
        return value

    return convert


class _Commands:
    """A subparsers action whose every parser inherits the global options."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._action.add_parser(
            name, parents=[self._common], **kwargs
        )
        return parser


def _add_alert_commands(commands: _Commands, common: argparse.ArgumentParser) -> None:
    """`alerts list|show|ack|close` and `audit verify`."""
    alerts = commands.add_parser("alerts", help="alerts: list, follow, show, ack, close")
    alerts_commands = _Commands(
        alerts.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND", required=True), common
    )
    alerts_list = alerts_commands.add_parser("list", help="alerts, most recently seen first")
    alerts_list.add_argument(
        "--severity",
        choices=SEVERITIES,
        metavar="LEVEL",
        help="at least this severity: " + ", ".join(SEVERITIES),
    )
    alerts_list.add_argument("--rule", metavar="ID", help="only this rule's alerts")
    alerts_list.add_argument("--state", choices=ALERT_STATES, help="only alerts in this state")
    alerts_list.add_argument(
        "--since", metavar="DURATION|TIMESTAMP", help="seen since: 30m, 2h, 7d, or 2024-05-01T12:00"
    )
    alerts_list.add_argument(
        "--limit",
        type=_at_least(1),
        default=1000,
        metavar="N",
        help="print at most N alerts (default 1000)",
    )
    follow = alerts_commands.add_parser(
        "follow",
        help="print new alerts and state changes as they happen, like tail -f (ctrl-c stops)",
        description="The last --lines alerts, then every new alert and state change "
        "(raised, repeated, acknowledged, closed, reopened) as the daemon reports it, until "
        "ctrl-c (exit 130) or the daemon stops (exit 1). Every -o format streams: json is one "
        "object per alert.",
    )
    follow.add_argument(
        "--severity",
        choices=SEVERITIES,
        metavar="LEVEL",
        help="at least this severity: " + ", ".join(SEVERITIES),
    )
    follow.add_argument("--rule", metavar="ID", help="only this rule's alerts")
    follow.add_argument("--state", choices=ALERT_STATES, help="only alerts in this state")
    follow.add_argument(
        "-n",
        "--lines",
        type=_at_least(0),
        default=10,
        metavar="N",
        help="first print the last N matching alerts (default 10; 0: only new ones)",
    )
    alerts_show = alerts_commands.add_parser(
        "show", help="one alert in full, with its deliveries to each sink"
    )
    alerts_show.add_argument("alert_id", type=int, metavar="ID")
    for name, text in (
        ("ack", "acknowledge an open alert, or every open alert a --filter matches"),
        ("close", "close an open or acknowledged alert, or every one a --filter matches"),
    ):
        sub = alerts_commands.add_parser(
            name,
            help=text,
            description=text + ". FILTER terms (all must match): rule:ID severity:LEVEL "
            "severity:>=LEVEL state:STATE pid:N since:DURATION title:TEXT, not:TERM to negate. "
            "The matching alerts are counted and you are asked first; --yes answers for "
            "scripts (without it and without a terminal the command refuses, exit 2). Each "
            "alert is changed, and audited, on its own.",
        )
        sub.add_argument("alert_id", type=int, metavar="ID", nargs="?")
        sub.add_argument(
            "--filter",
            metavar="FILTER",
            help="every alert these terms match, e.g. --filter 'rule:X severity:high'",
        )
        sub.add_argument(
            "-y", "--yes", action="store_true", help="do not ask (--filter): for scripts"
        )
    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = _Commands(
        audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True), common
    )
    audit_commands.add_parser("verify", help="check the hash chain (exit 1 when tampered with)")
    commands.add_parser(
        "bridge",
        help="relay stdin/stdout to this host's daemon socket (what --host runs over ssh)",
    )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for attribute, key in (
        ("db", "store.path"),
        ("socket", "daemon.socket"),
        ("output", "cli.output"),
        ("interval", "collector.interval"),
        ("log_level", "daemon.log_level"),
    ):
        value = getattr(args, attribute, None)
        if value is not None:
            flags[key] = value
    return flags


def _configure_logging(daemon: bool) -> None:
    """The one place logging is configured: stderr, through SafeFormatter, which escapes
    process-supplied text and bounds each line (daemoneye/log_format.py). Under journald the
    journal keeps the time and the priority comes as a `<N>` prefix."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stream_is_journal(sys.stderr)
    if daemon and journal:
        handler.setFormatter(
            SafeFormatter("%(levelname)s %(name)s: %(message)s", syslog_prefix=True)
        )
    elif daemon:
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(SafeFormatter("daemoneye: %(message)s", syslog_prefix=journal))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO if daemon else logging.WARNING)
    log_uncaught_exceptions(logging.getLogger("daemoneye"))


def _dispatch(
    args: argparse.Namespace, loaded: LoadedConfig, reload_config: Callable[[], LoadedConfig]
) -> int:
    ctx = Context(
        loaded=loaded,
        output=loaded.config.cli.output,
        store_given=args.db is not None,
        remote=remote_route(loaded, args.host, socket_given=args.socket is not None),
    )
    if args.command == "bridge":
        from daemoneye.commands.bridge import run_bridge

        return run_bridge(ctx, socket_given=args.socket is not None)
    if args.command == "daemon":
        from daemoneye.commands.daemon_cmd import run_daemon

        return run_daemon(loaded, reload_config)
    if args.command == "query":
        from daemoneye.commands.query import run_query

        return run_query(ctx, args.sql, max_rows=args.max_rows)
    if args.command == "processes":
        from daemoneye.commands.processes import list_processes, show_process

        if args.filter[:1] == ["show"]:
            if len(args.filter) != 2 or not args.filter[1].isdigit():
                raise _UsageError("usage: daemoneye processes show PID")
            return show_process(ctx, int(args.filter[1]))
        if args.filter[:1] == ["tree"]:
            from daemoneye.commands.history import show_tree

            if len(args.filter) > 2 or not all(part.isdigit() for part in args.filter[1:]):
                raise _UsageError("usage: daemoneye processes tree [PID] [--at TIME]")
            root = int(args.filter[1]) if len(args.filter) == 2 else None
            return show_tree(ctx, args.at, root)
        if args.at is not None:
            from daemoneye.commands.history import list_processes_at

            return list_processes_at(ctx, args.at, " ".join(args.filter))
        return list_processes(ctx, " ".join(args.filter))
    if args.command == "timeline":
        from daemoneye.commands.history import TimelineOptions, show_timeline

        return show_timeline(
            ctx,
            TimelineOptions(
                filter_text=" ".join(args.filter),
                since=args.since,
                until=args.until,
                limit=args.limit,
            ),
        )
    if args.command == "connections":
        from daemoneye.commands.connections import list_connections

        return list_connections(ctx, " ".join(args.filter))
    if args.command == "health":
        from daemoneye.commands.health import show_health

        return show_health(ctx)
    if args.command == "config":
        from daemoneye.commands.config_show import show_config

        return show_config(ctx)
    if args.command == "rules":
        from daemoneye.commands import rules as rules_cmd

        if args.rules_command == "list":
            return rules_cmd.list_rules(ctx)
        if args.rules_command == "show":
            return rules_cmd.show_rule(ctx, args.rule_id)
        if args.rules_command == "validate":
            return rules_cmd.validate_rule_file(ctx, args.file)
        if args.rules_command == "test":
            return rules_cmd.test_rules(ctx, args.target)
        if args.rules_command == "import":
            from daemoneye.commands.rules_import import import_rules

            return import_rules(ctx, args.paths, args.out, force=args.force)
        if args.rules_command in ("enable", "disable"):
            return rules_cmd.set_rule_enabled(ctx, args.rule_id, args.rules_command == "enable")
        if args.rules_command == "reload":
            return rules_cmd.reload_rules(ctx)
    if args.command == "alerts":
        from daemoneye.commands import alerts as alerts_cmd

        if args.alerts_command == "list":
            return alerts_cmd.list_alerts_cmd(
                ctx,
                alerts_cmd.ListOptions(
                    severity=args.severity,
                    rule=args.rule,
                    state=args.state,
                    since=args.since,
                    limit=args.limit,
                ),
            )
        if args.alerts_command == "follow":
            from daemoneye.commands.alerts_follow import FollowOptions, follow_alerts

            return follow_alerts(
                ctx,
                FollowOptions(
                    severity=args.severity, rule=args.rule, state=args.state, lines=args.lines
                ),
            )
        if args.alerts_command == "show":
            return alerts_cmd.show_alert(ctx, args.alert_id)
        state = {"ack": "acknowledged", "close": "closed"}[args.alerts_command]
        if (args.alert_id is None) == (args.filter is None):
            raise _UsageError(
                f"usage: daemoneye alerts {args.alerts_command} ID, or "
                f"daemoneye alerts {args.alerts_command} --filter 'TERMS' [--yes]"
            )
        if args.filter is not None:
            from daemoneye.commands.alerts_bulk import change_by_filter

            return change_by_filter(ctx, args.filter, state, yes=args.yes)
        return alerts_cmd.change_state(ctx, args.alert_id, state)
    if args.command == "audit":
        from daemoneye.commands.audit import verify_audit

        return verify_audit(ctx)
    raise AssertionError(f"unhandled command {args.command}")


def _unrecognized(args: argparse.Namespace, extras: list[str]) -> str:
    """argparse's message for arguments it does not know, with a hint when they look like
    negated filter terms (`daemoneye processes -name:kworker`)."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    if args.command in ("processes", "timeline") and all(
        extra.startswith("-") and not extra.startswith("--") for extra in extras
    ):
        example = extras[0][1:]
        message += (
            f"; to negate a filter term write not:{example}, or put -- before the filter "
            f"(daemoneye processes -- {extras[0]})"
        )
    return message


class _UsageError(DaemonEyeError):
    exit_code = EXIT_USAGE


def _dashboard(args: argparse.Namespace) -> int:
    """`daemoneye` on a terminal: the dashboard (daemoneye/tui/launcher.py)."""
    from daemoneye.tui.launcher import run_dashboard

    try:
        loaded = load_config(
            mode=mode_from_flag(args.mode), config_file=args.config, flags=_flags(args)
        )
        return run_dashboard(
            loaded,
            config_file=args.config,
            socket_given=args.socket is not None,
            remotes=remote_routes(loaded, args.host, socket_given=args.socket is not None),
        )
    except DaemonEyeError as exc:
        print(f"daemoneye: {visible(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def agent_main() -> int:
    """`daemoneye-agent`: the seed's name for `daemoneye daemon` (it starts procmond)."""
    return main(["daemon", *sys.argv[1:]])


def cli_main() -> int:
    """`daemoneye-cli`: the CLI without the dashboard (no subcommand prints the help)."""
    return main(sys.argv[1:], dashboard=False)


def main(argv: Sequence[str] | None = None, *, dashboard: bool = True) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(_unrecognized(args, extras))
    if args.command == "completion":
        from daemoneye.commands.completion import print_completion

        return print_completion(parser, args.shell)
    if args.command == "man":
        from daemoneye.commands.completion import print_man_page

        return print_man_page(parser)
    if args.command is None:
        if dashboard and sys.stdin.isatty() and sys.stdout.isatty():
            return _dashboard(args)
        # Not a terminal: there is no dashboard to show; say what there is.
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(daemon=args.command == "daemon")
    set_wide(bool(args.wide))

    def reload_config() -> LoadedConfig:
        return load_config(
            mode=mode_from_flag(args.mode), config_file=args.config, flags=_flags(args)
        )

    try:
        loaded = reload_config()
        return _dispatch(args, loaded, reload_config)
    except DaemonEyeError as exc:
        print(f"daemoneye: {visible(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `daemoneye query … | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
