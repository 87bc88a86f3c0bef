"""One rule file: TOML `[[rule]]` tables → Rule records and RuleProblems with file:line.

Only what can be checked without SQL is checked here (keys, types, id, severity, durations,
the shape of the title template); `rule_loader` compiles the queries. tomllib reports no
positions, so `_positions` re-reads the text: the n-th `[[rule]]` header is the n-th table, and a
key's line is the first `key =` inside that table's span (multi-line strings skipped).
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemoneye.models import SEVERITIES, Rule, RuleProblem
from daemoneye.units import DURATION_EXAMPLES
from daemoneye.units import parse_duration as parse_duration_text

RULE_KEYS = (
    "id",
    "name",
    "description",
    "severity",
    "enabled",
    "tags",
    "query",
    "title",
    "dedup_window",
    "throttle",
    # Kept from Sigma by `rules import` (optional for any rule).
    "sigma_id",
    "status",
    "references",
    "falsepositives",
)
MAX_LIST_ITEMS = 64
MAX_LIST_ITEM_CHARS = 1024
# Sigma rule files (engine/sigma_file.py), read beside TOML ones.
SIGMA_SUFFIXES = (".yml", ".yaml")
REQUIRED_KEYS = ("id", "name", "severity", "query")

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*")
MAX_ID_LENGTH = 100
# Rule files are read by the daemon and sent whole to every `rules.list` client: a file past
# this size is refused before it is read in full, and each field has a cap of its own.
MAX_FILE_BYTES = 1024 * 1024
MAX_FIELD_CHARS = {"name": 200, "title": 500, "description": 8 * 1024, "query": 64 * 1024}
MAX_TAGS = 32
MAX_TAG_CHARS = 64
# Tags that look like ATT&CK technique ids must be well-formed ones (T1059, T1059.004).
_ATTACK_LIKE = re.compile(r"T\d")
_ATTACK_ID = re.compile(r"T\d{4}(\.\d{3})?")
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What one file yielded. `readable` is False when the file as a whole could not be read
    (I/O, encoding, TOML syntax, a shape that is not `[[rule]]` tables): nothing in it is
    usable, and a reload keeps that file's last good rules."""

    path: str
    rules: tuple[Rule, ...]
    problems: tuple[RuleProblem, ...]
    readable: bool
    key_lines: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (id, key) -> line
    rejected_ids: tuple[str, ...] = ()  # ids of tables refused here (for last-good lookups)
    # Rules deliberately not loaded, and why (a Sigma rule for another logsource): shown, but
    # not problems of the set.
    notices: tuple[RuleProblem, ...] = ()

    def line_of(self, rule: Rule, key: str) -> int:
        """The line of `key` in `rule`'s table, or the table's header line."""
        return self.key_lines.get((rule.id, key), rule.source_line)


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or ""."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_duration(value: object) -> float:
    """Seconds from a TOML value: a number of seconds, or text like "90s", "1h30m", "500ms"
    (daemoneye/units.py parse_duration, the syntax config values and `--since` take too)."""
    parsed: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        parsed = parse_duration_text(value)
    if parsed is None:
        raise ValueError(f"expected a duration such as {DURATION_EXAMPLES}, got {value!r}")
    seconds = parsed
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be more than 0 seconds, got {value!r}")
    return seconds


def title_fields(template: str) -> tuple[str, ...]:
    """The column names a title template uses; ValueError for anything but `{column}`."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"bad title template {template!r}: {exc} (write {{{{ for a brace)"
        ) from None
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if not _PLACEHOLDER.fullmatch(field_name) or format_spec or conversion:
            raise ValueError(
                f"title placeholder {{{field_name}{'!' + conversion if conversion else ''}"
                f"{':' + format_spec if format_spec else ''}}} must be a plain {{column}}"
            )
        names.append(field_name)
    return tuple(names)


def read_rule_file(path: Path) -> ParsedFile:
    """Parse the rule file at `path`. Never raises for a bad file: problems say what is wrong."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # never more than the cap into memory
        if len(data) > MAX_FILE_BYTES:
            return ParsedFile(
                str(path),
                (),
                (
                    RuleProblem(
                        str(path),
                        0,
                        None,
                        f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB), the most a "
                        "rule file may hold: split it into several files",
                    ),
                ),
                readable=False,
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ParsedFile(
            str(path),
            (),
            (RuleProblem(str(path), 0, None, f"cannot read: {reason}"),),
            readable=False,
        )
    return parse_rule_text(text, str(path))


def parse_rule_text(text: str, path: str) -> ParsedFile:
    """Parse rule-file `text` as if read from `path`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc), text)
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        return ParsedFile(
            path, (), (RuleProblem(path, line, None, f"TOML syntax: {message}"),), readable=False
        )
    headers, keys_by_table, top_keys = _positions(text)
    problems: list[RuleProblem] = []
    for key in data:
        if key != "rule":
            problems.append(
                RuleProblem(
                    path,
                    top_keys.get(key, 0),
                    None,
                    f"unknown top-level key {key!r}{did_you_mean(key, ['rule'])}"
                    "; rules are [[rule]] tables",
                )
            )
    tables = data.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(
            RuleProblem(
                path,
                top_keys.get("rule", 0),
                None,
                "'rule' must be an array of tables: write each rule as a [[rule]] table",
            )
        )
        return ParsedFile(path, (), tuple(problems), readable=False)
    rules: list[Rule] = []
    key_lines: dict[tuple[str, str], int] = {}
    rejected: list[str] = []
    first_line_of_id: dict[str, int] = {}
    for index, table in enumerate(tables):
        header = headers[index] if index < len(headers) else top_keys.get("rule", 0)
        lines = keys_by_table[index] if index < len(keys_by_table) else {}
        rule, rule_problems = _rule_from_table(table, path, header, lines)
        rule_id = table.get("id") if isinstance(table.get("id"), str) else None
        if rule_id is not None:
            if rule_id in first_line_of_id:
                rule_problems.append(
                    RuleProblem(
                        path,
                        header,
                        rule_id,
                        f"duplicate rule id {rule_id!r} in this file "
                        f"(first defined at line {first_line_of_id[rule_id]})",
                    )
                )
                rule = None
            else:
                first_line_of_id[rule_id] = header
        problems.extend(rule_problems)
        if rule is None:
            if rule_id is not None:
                rejected.append(rule_id)
            continue
        rules.append(rule)
        for key, line in lines.items():
            key_lines[(rule.id, key)] = line
    return ParsedFile(
        path,
        tuple(rules),
        tuple(problems),
        readable=True,
        key_lines=key_lines,
        rejected_ids=tuple(rejected),
    )


def _rule_from_table(
    table: dict[str, Any], path: str, header: int, lines: Mapping[str, int]
) -> tuple[Rule | None, list[RuleProblem]]:
    raw_id = table.get("id")
    rule_id = raw_id if isinstance(raw_id, str) else None
    problems: list[RuleProblem] = []

    def problem(key: str | None, message: str) -> None:
        line = lines.get(key, header) if key else header
        problems.append(RuleProblem(path, line, rule_id, message))

    for key in table:
        if key not in RULE_KEYS:
            problem(key, f"unknown key {key!r}{did_you_mean(key, RULE_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in table:
            problem(None, f"missing required key {key!r}")

    if "id" in table:
        if rule_id is None:
            problem("id", f"'id' must be text, not {raw_id!r}")
        elif not ID_PATTERN.fullmatch(rule_id) or len(rule_id) > MAX_ID_LENGTH:
            problem(
                "id",
                f"id {rule_id!r} must be lowercase letters, digits, '_', '.' and '-', "
                f"starting with a letter or digit (at most {MAX_ID_LENGTH} characters)",
            )
    for key, limit in MAX_FIELD_CHARS.items():
        value = table.get(key)
        if isinstance(value, str) and len(value) > limit:
            problem(key, f"{key!r} is {len(value)} characters long (at most {limit})")
            table = {k: v for k, v in table.items() if k != key}
    name = _text(table, "name", problem, required=True)
    description = _text(table, "description", problem, required=False) or ""
    query = _text(table, "query", problem, required=True)
    severity = table.get("severity")
    if "severity" in table and (not isinstance(severity, str) or severity not in SEVERITIES):
        hint = did_you_mean(severity, SEVERITIES) if isinstance(severity, str) else ""
        problem("severity", f"severity {severity!r} must be one of {', '.join(SEVERITIES)}{hint}")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problem("enabled", f"'enabled' must be true or false, not {enabled!r}")
    tags = table.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
        problem("tags", "'tags' must be a list of non-empty strings")
        tags = []
    if len(tags) > MAX_TAGS or any(len(tag) > MAX_TAG_CHARS for tag in tags):
        problem("tags", f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")
        tags = []
    for tag in tags:
        if _ATTACK_LIKE.match(tag) and not _ATTACK_ID.fullmatch(tag):
            problem(
                "tags", f"tag {tag!r} looks like an ATT&CK id but is not one (T1234 or T1234.567)"
            )
    title = table.get("title")
    if title is not None:
        if not isinstance(title, str) or not title.strip():
            problem("title", "'title' must be non-empty text")
            title = None
        else:
            try:
                title_fields(title)
            except ValueError as exc:
                problem("title", str(exc))
    windows: dict[str, float | None] = {"dedup_window": None, "throttle": None}
    for key in windows:
        if key in table:
            try:
                windows[key] = parse_duration(table[key])
            except ValueError as exc:
                problem(key, f"{key}: {exc}")
    sigma_id = _text(table, "sigma_id", problem, required=False)
    status = _text(table, "status", problem, required=False)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("references", "falsepositives"):
        items = table.get(key, [])
        if (
            not isinstance(items, list)
            or len(items) > MAX_LIST_ITEMS
            or not all(isinstance(i, str) and len(i) <= MAX_LIST_ITEM_CHARS for i in items)
        ):
            problem(
                key,
                f"{key!r} must be a list of at most {MAX_LIST_ITEMS} strings of at most "
                f"{MAX_LIST_ITEM_CHARS} characters",
            )
            items = []
        lists[key] = tuple(items)
    if problems or rule_id is None or name is None or query is None:
        return None, problems
    assert isinstance(severity, str) and isinstance(enabled, bool)
    return Rule(
        id=rule_id,
        name=name,
        description=description,
        severity=severity,
        enabled=enabled,
        tags=tuple(tags),
        query=query,
        title=title,
        dedup_window_s=windows["dedup_window"],
        throttle_s=windows["throttle"],
        source_file=path,
        source_line=header,
        sigma_id=sigma_id,
        status=status,
        references=lists["references"],
        falsepositives=lists["falsepositives"],
    ), problems


def _text(
    table: dict[str, Any], key: str, problem: Callable[[str | None, str], None], *, required: bool
) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        problem(key, f"{key!r} must be {'non-empty ' if required else ''}text")
        return None
    return value


def _toml_error_line(message: str, text: str) -> int:
    match = re.search(r"at line (\d+)", message)
    if match:
        return int(match.group(1))
    if "end of document" in message:
        return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return 0


_HEADER = re.compile(r"\[\[\s*rule\s*\]\]\s*(#.*)?$")
_SUBTABLE = re.compile(r"\[\[?\s*rule\s*\.\s*([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')")
_KEY = re.compile(r"([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')\s*[.=]")


def _positions(text: str) -> tuple[list[int], list[dict[str, int]], dict[str, int]]:
    """(line of each `[[rule]]` header, {key: line} per rule table, {top-level key: line})."""
    headers: list[int] = []
    keys_by_table: list[dict[str, int]] = []
    top_keys: dict[str, int] = {}
    current: dict[str, int] | None = None
    in_top = True
    open_string: str | None = None  # the delimiter of the multi-line string we are inside
    for number, line in enumerate(text.splitlines(), start=1):
        if open_string is None:
            stripped = line.strip()
            if _HEADER.match(stripped):
                headers.append(number)
                current = {}
                keys_by_table.append(current)
                in_top = False
            elif stripped.startswith("["):
                sub = _SUBTABLE.match(stripped)
                if sub and current is not None:
                    current.setdefault(sub.group(1).strip("\"'"), number)
                else:
                    current = None
                    in_top = False
                    top = re.match(r"\[\[?\s*([A-Za-z0-9_-]+)", stripped)
                    if top:
                        top_keys.setdefault(top.group(1), number)
            else:
                key = _KEY.match(stripped)
                if key:
                    name = key.group(1).strip("\"'")
                    if current is not None:
                        current.setdefault(name, number)
                    elif in_top:
                        top_keys.setdefault(name, number)
        open_string = _string_state_after(line, open_string)
    return headers, keys_by_table, top_keys


def _string_state_after(line: str, open_string: str | None) -> str | None:
    """Whether a multi-line string is still open after `line` (and with which delimiter)."""
    i = 0
    while i < len(line):
        if open_string is not None:
            end = line.find(open_string, i)
            if open_string == '"""':
                while end > 0 and _escaped(line, end):
                    end = line.find(open_string, end + 1)
            if end < 0:
                return open_string
            i = end + 3
            while i < len(line) and line[i] == open_string[0]:  # up to two quotes may close it
                i += 1
            open_string = None
            continue
        char = line[i]
        if char == "#":
            return None
        if line.startswith(('"""', "'''"), i):
            open_string = line[i : i + 3]
            i += 3
            continue
        if char in "\"'":
            i += 1
            while i < len(line) and line[i] != char:
                i += 2 if char == '"' and line[i] == "\\" else 1
        i += 1
    return open_string


def _escaped(line: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and line[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1
