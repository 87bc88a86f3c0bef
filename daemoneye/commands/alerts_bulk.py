"""`daemoneye alerts ack|close --filter 'rule:X severity:high'`: change many alerts at once.

The filter language (all terms must match; `not:TERM` negates one):

    rule:ID             that rule's alerts (exact id)
    severity:high       exactly that severity; severity:>=medium at least that one
    state:open          in that state (ack takes open alerts; close open and acknowledged)
    pid:1234            of that process id
    since:2h            last seen within that long (a duration) or since a timestamp
    title:TEXT          TEXT in the title (case-insensitive)

The command first counts what matches and asks before it changes anything: `--yes` answers for
scripts; without `--yes` and without a terminal on stdin it refuses (exit 2) and changes
nothing. Each alert is then changed by its own request, so each is audited on its own, through
the daemon (with the peer's uid and pid) or, without one, in the store as "(cli)".
"""

from __future__ import annotations

import asyncio
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TextIO

from daemoneye.commands.common import Context, note, with_daemon_or_store
from daemoneye.engine.alert_queries import AlertFilter, list_alerts
from daemoneye.engine.alerts import AlertBook
from daemoneye.engine.audit import actor_for
from daemoneye.engine.rule_file import did_you_mean
from daemoneye.errors import DaemonEyeError, StoreError
from daemoneye.ipc.client import (
    DaemonClient,
    DaemonUnavailable,
    ErrorCode,
    IpcError,
    RpcError,
)
from daemoneye.models import ALERT_STATES, SEVERITIES, Alert
from daemoneye.output import render
from daemoneye.store.db import Store
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.units import parse_duration

TERMS = ("rule", "severity", "state", "pid", "since", "title")
MAX_ALERTS = 5_000  # one command changes at most this many; run it again for more
EXIT_REFUSED = 2
# Which states each change starts from (engine/alerts.py TRANSITIONS).
FROM_STATES = {"acknowledged": ("open",), "closed": ("open", "acknowledged")}
VERBS = {"acknowledged": "acknowledge", "closed": "close"}


class BulkFilterError(DaemonEyeError):
    """A bad --filter term; the message names it."""

    exit_code = 2


class NotConfirmed(DaemonEyeError):
    """The change was not confirmed (no --yes and no terminal, or the answer was no)."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True, slots=True)
class AlertSelection:
    """A parsed --filter: every set field must match; `negated` holds `not:` terms."""

    rule: str | None = None
    severity: str | None = None
    severity_at_least: bool = False
    state: str | None = None
    pid: int | None = None
    since: float | None = None
    title: str | None = None  # lowered
    negated: tuple[AlertSelection, ...] = ()

    def matches(self, alert: Alert) -> bool:
        if self.rule is not None and alert.rule_id != self.rule:
            return False
        if self.severity is not None:
            if self.severity_at_least:
                if SEVERITIES.index(alert.severity) < SEVERITIES.index(self.severity):
                    return False
            elif alert.severity != self.severity:
                return False
        if self.state is not None and alert.state != self.state:
            return False
        if self.pid is not None and alert.pid != self.pid:
            return False
        if self.since is not None and alert.last_seen < self.since:
            return False
        if self.title is not None and self.title not in alert.title.lower():
            return False
        return not any(term.matches(alert) for term in self.negated)


def _since(text: str, now: float) -> float:
    seconds = parse_duration(text)
    if seconds is not None and math.isfinite(seconds):
        return now - seconds
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BulkFilterError(
            f"since:{text}: expected a duration (30m, 2h, 7d) or a timestamp (2024-05-01T12:00)"
        ) from None


def _term(key: str, value: str, now: float) -> AlertSelection:
    if key not in TERMS:
        raise BulkFilterError(
            f"unknown filter term {key}:{value}{did_you_mean(key, list(TERMS))}; "
            f"terms: {', '.join(t + ':' for t in TERMS)} and not:TERM"
        )
    if not value:
        raise BulkFilterError(f"{key}: needs a value, e.g. {key}:X")
    if key == "rule":
        return AlertSelection(rule=value)
    if key == "severity":
        at_least = value.startswith(">=")
        level = value.removeprefix(">=")
        if level not in SEVERITIES:
            raise BulkFilterError(
                f"severity:{value}: expected one of {', '.join(SEVERITIES)} "
                f"(or >=LEVEL for at least){did_you_mean(level, list(SEVERITIES))}"
            )
        return AlertSelection(severity=level, severity_at_least=at_least)
    if key == "state":
        if value not in ALERT_STATES:
            raise BulkFilterError(
                f"state:{value}: expected one of {', '.join(ALERT_STATES)}"
                f"{did_you_mean(value, list(ALERT_STATES))}"
            )
        return AlertSelection(state=value)
    if key == "pid":
        if not value.isdigit():
            raise BulkFilterError(f"pid:{value}: expected a process id (a whole number)")
        return AlertSelection(pid=int(value))
    if key == "since":
        return AlertSelection(since=_since(value, now))
    return AlertSelection(title=value.lower())


def parse_selection(text: str, now: float) -> AlertSelection:
    """The --filter text as an AlertSelection; BulkFilterError names a bad term. An empty
    filter is refused: `alerts ack --filter ''` must not mean every alert by accident."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BulkFilterError(f"--filter: {exc}") from None
    if not words:
        raise BulkFilterError(
            "--filter needs at least one term, e.g. rule:ID or severity:high "
            "(to match every alert say so: state:open)"
        )
    merged = AlertSelection()
    negated: list[AlertSelection] = []
    for word in words:
        negate = word.startswith("not:")
        key, sep, value = word.removeprefix("not:").partition(":")
        if not sep:
            raise BulkFilterError(f"{word!r}: expected TERM:VALUE, e.g. rule:ID")
        term = _term(key, value, now)
        if negate:
            negated.append(term)
            continue
        for name in ("rule", "severity", "state", "pid", "since", "title"):
            mine, theirs = getattr(merged, name), getattr(term, name)
            if theirs is not None and mine is not None and mine != theirs:
                raise BulkFilterError(f"{key}: given twice with different values")
        merged = replace(
            merged,
            **{
                name: getattr(term, name)
                for name in ("rule", "severity", "state", "pid", "since", "title")
                if getattr(term, name) is not None
            },
            severity_at_least=merged.severity_at_least or term.severity_at_least,
        )
    return replace(merged, negated=tuple(negated))


def confirm(question: str, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask on stderr and read the answer from stdin; only when stdin is a terminal (a pipe
    or /dev/null never says yes by accident). NotConfirmed when it is not."""
    if not stdin.isatty():
        raise NotConfirmed(
            f"{question.rstrip('?')}: not without --yes (stdin is not a terminal to ask on)"
        )
    stderr.write(f"{question} [y/N] ")
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def _candidates(ctx: Context, state: str) -> list[Alert]:
    """Alerts in a state the change starts from, newest first, at most MAX_ALERTS + 1."""
    wanted: list[Alert] = []

    async def ask(client: DaemonClient) -> list[Alert]:
        found: list[Alert] = []
        for start in FROM_STATES[state]:
            found += await client.alerts_list(state=start, limit=MAX_ALERTS + 1)
        return found

    def from_store(store: ReadOnlyStore) -> list[Alert]:
        found: list[Alert] = []
        for start in FROM_STATES[state]:
            found += list_alerts(store, AlertFilter(state=start, limit=MAX_ALERTS + 1))
        return found

    wanted = with_daemon_or_store(ctx, ask, from_store, named_store_first=False)
    return sorted(wanted, key=lambda a: -a.id)


def _apply(ctx: Context, ids: Sequence[int], state: str) -> tuple[list[Alert], list[str]]:
    """Change each alert by its own request: through the daemon when one runs, else in the
    store. Returns the changed alerts and one message per alert that could not be changed."""

    async def through_daemon(client: DaemonClient) -> tuple[list[Alert], list[str]]:
        changed: list[Alert] = []
        failed: list[str] = []
        for alert_id in ids:
            try:
                if state == "acknowledged":
                    changed.append(await client.alert_ack(alert_id))
                else:
                    changed.append(await client.alert_close(alert_id))
            except RpcError as exc:
                if exc.code != ErrorCode.CONFLICT and exc.code != ErrorCode.NOT_FOUND:
                    raise  # not an admin, or the daemon cannot: the next would fail alike
                failed.append(f"alert {alert_id}: {exc.message}")
        return changed, failed

    async def run() -> tuple[list[Alert], list[str]] | None:
        client = ctx.client()
        try:
            await client.connect()
        except DaemonUnavailable:
            return None
        try:
            return await through_daemon(client)
        finally:
            await client.close()

    try:
        answer = asyncio.run(run())
    except RpcError:
        raise  # the daemon's refusal (not an admin …): printed as it is
    except IpcError as exc:
        raise DaemonUnavailable(f"the daemon stopped answering: {exc}") from None
    if answer is not None:
        return answer
    note("no daemon answers; changing the alerts in the store directly")
    return _apply_in_store(ctx, ids, state)


def _apply_in_store(ctx: Context, ids: Sequence[int], state: str) -> tuple[list[Alert], list[str]]:
    try:
        store = Store.open_existing(ctx.loaded.paths.db)
    except StoreError as exc:
        raise StoreError(f"cannot {VERBS[state]} alerts: {exc}") from None
    actor = actor_for(os.getuid(), os.getpid(), "cli")
    changed: list[Alert] = []
    failed: list[str] = []
    with store:
        book = AlertBook(store)
        for alert_id in ids:
            try:
                changed.append(book.set_state(alert_id, state, actor, time.time()).alert)
            except DaemonEyeError as exc:
                failed.append(str(exc))
    return changed, failed


def change_by_filter(
    ctx: Context,
    filter_text: str,
    state: str,
    *,
    yes: bool,
    ask: Callable[[str], bool] | None = None,
) -> int:
    """`alerts ack|close --filter TEXT [--yes]`. Exit 0 when every matching alert changed,
    1 when some could not be, 2 for a bad filter or a change not confirmed."""
    selection = parse_selection(filter_text, time.time())  # a bad term fails before connecting
    candidates = _candidates(ctx, state)
    matching = [a for a in candidates if selection.matches(a)]
    if len(matching) > MAX_ALERTS:
        note(f"more than {MAX_ALERTS} alerts match; changing the {MAX_ALERTS} newest")
        matching = matching[:MAX_ALERTS]
    verb = VERBS[state]
    if not matching:
        note(
            f"no {' or '.join(FROM_STATES[state])} alert matches {filter_text!r}; nothing to {verb}"
        )
        return 0
    rules = sorted({a.rule_id for a in matching})
    shown_rules = ", ".join(rules[:5]) + (f" and {len(rules) - 5} more" if len(rules) > 5 else "")
    question = (
        f"{verb} {len(matching)} alert{'s' if len(matching) != 1 else ''} (rules: {shown_rules})?"
    )
    if not yes:
        answered = (ask or (lambda q: confirm(q, sys.stdin, sys.stderr)))(question)
        if not answered:
            raise NotConfirmed(f"nothing was changed ({verb} not confirmed)")
    changed, failed = _apply(ctx, [a.id for a in matching], state)
    render(
        ("id", "state", "state_changed_by", "rule_id", "title"),
        [(a.id, a.state, a.state_changed_by, a.rule_id, a.title) for a in changed],
        ctx.output,
        sys.stdout,
        keep=("id", "rule_id"),
    )
    for message in failed:
        note(message)
    note(
        f"{len(changed)} alert{'s' if len(changed) != 1 else ''} {state}"
        + (f", {len(failed)} could not be (above)" if failed else "")
    )
    return 1 if failed else 0
