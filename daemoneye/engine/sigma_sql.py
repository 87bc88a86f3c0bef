"""A parsed Sigma rule (pySigma) → one sandboxed SELECT over the store.

pySigma parses the rule, applies the value modifiers (windash, base64, base64offset, contains,
…) and resolves the condition (`1 of selection_*`, `all of them`, `not`, and/or, parentheses)
into a tree; this module walks that tree. It is a backend of our own, not
pysigma-backend-sqlite: that backend writes LIKE (ASCII-only case folding) and GLOB, while Sigma
compares case-insensitively in every script, and it reads one flat table where the parent's
fields need a join by the lineage rule. Strings become `sigma_match(column, mode, pattern…)`
(store/sigma_match.py: casefold), `re` becomes REGEXP (RE2, linear time).

Whatever cannot be matched faithfully — a field with no Linux meaning, a modifier we do not
implement, a keyword search without a field — raises SigmaConversionError with the reason; the
rule is refused, never guessed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.modifiers import SigmaModifier, reverse_modifier_mapping
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from daemoneye.store.sigma_match import escape, split


class SigmaConversionError(ValueError):
    """Why one Sigma rule cannot run here."""


@dataclass(frozen=True, slots=True)
class Field:
    """Where a Sigma field lives: an SQL expression over `p` (the process) or `parent`."""

    column: str
    numeric: bool = False

    @property
    def needs_parent(self) -> bool:
        return self.column.startswith("parent.")


# Sigma's process_creation fields (as Sysmon for Linux and SigmaHQ's Linux rules use them).
FIELDS: dict[str, Field] = {
    "Image": Field("p.exe"),
    "CommandLine": Field("p.cmdline"),
    "CurrentDirectory": Field("p.cwd"),
    "User": Field("p.user"),
    "ProcessId": Field("p.pid", numeric=True),
    "ParentProcessId": Field("p.ppid", numeric=True),
    "ParentImage": Field("parent.exe"),
    "ParentCommandLine": Field("parent.cmdline"),
    "ParentUser": Field("parent.user"),
}

# Fields Sigma rules use that the store has no faithful value for: refused with this reason.
UNMAPPED_FIELDS: dict[str, str] = {
    "LogonId": "the store keeps no login session id (audit loginuid) for a process",
    "LogonGuid": "a Windows logon GUID has no Linux meaning",
    "OriginalFileName": "the PE header's original file name has no Linux meaning",
    "Hashes": "Sysmon's Hashes list is not kept; exe_sha256 is, in TOML rules",
    "IntegrityLevel": "Windows integrity levels have no Linux meaning",
    "Product": "PE version information has no Linux meaning",
    "Company": "PE version information has no Linux meaning",
    "Description": "PE version information has no Linux meaning",
    "FileVersion": "PE version information has no Linux meaning",
    "ProcessGuid": "Sysmon's process GUID is not kept; a process is (pid, start_time)",
    "ParentProcessGuid": "Sysmon's process GUID is not kept; a process is (pid, start_time)",
    "TerminalSessionId": "Windows terminal sessions have no Linux meaning",
    "Imphash": "a PE import hash has no Linux meaning",
}

# Modifiers whose meaning this backend implements (pySigma applies the value-rewriting ones).
SUPPORTED_MODIFIERS = frozenset(
    {
        "contains", "startswith", "endswith", "all", "re", "i", "ignorecase", "m", "multiline",
        "s", "dotall", "cased", "exists", "windash", "base64", "base64offset",
    }
)  # fmt: skip
_NO_ADDRESS = (
    "the cidr modifier needs a field that holds an IP address, and no process_creation field "
    "does (connections are not part of a process_creation event)"
)

PROCESS_COLUMNS = "p.pid, p.start_time, p.name, p.exe, p.cmdline, p.user"
# The lineage rule of store/records.py `parent_of` (and the dashboard's tree): the parent is
# the newest instance with the child's ppid that started no later than the child.
PARENT_JOIN = (
    "LEFT JOIN all_processes parent\n"
    "  ON parent.pid = p.ppid AND p.ppid <> p.pid\n"
    " AND parent.start_time = (SELECT max(q.start_time) FROM all_processes q\n"
    "                          WHERE q.pid = p.ppid AND q.start_time <= p.start_time)"
)


def rule_query(rule: SigmaRule) -> str:
    """The SELECT for `rule`: pid and start_time of each matching process instance."""
    items = list(_items(rule.detection.detections.values()))
    for item in items:
        _check_item(item)
    conditions = [_sql(condition.parse()) for condition in rule.detection.parsed_condition]
    where = conditions[0] if len(conditions) == 1 else " OR ".join(f"({c})" for c in conditions)
    uses_parent = any(item.field is not None and FIELDS[item.field].needs_parent for item in items)
    join = f"\n{PARENT_JOIN}" if uses_parent else ""
    return f"SELECT {PROCESS_COLUMNS}\nFROM processes p{join}\nWHERE {where}"


def _items(detections: Iterable[SigmaDetection]) -> Iterator[SigmaDetectionItem]:
    for detection in detections:
        for item in detection.detection_items:
            if isinstance(item, SigmaDetection):
                yield from _items([item])
            else:
                yield item


def _check_item(item: SigmaDetectionItem) -> None:
    if item.field is None:
        raise SigmaConversionError(
            "keyword searches (values without a field) are not supported: name the field "
            f"(one of {', '.join(FIELDS)})"
        )
    if item.field not in FIELDS:
        reason = UNMAPPED_FIELDS.get(item.field)
        if reason is not None:
            raise SigmaConversionError(f"field {item.field!r} cannot be matched: {reason}")
        raise SigmaConversionError(
            f"unknown field {item.field!r}{_did_you_mean(item.field, list(FIELDS))} "
            f"(process_creation fields here: {', '.join(FIELDS)})"
        )
    for modifier in item.modifiers:
        name = _modifier_name(modifier)
        if name == "cidr":
            raise SigmaConversionError(f"field {item.field!r}: {_NO_ADDRESS}")
        if name not in SUPPORTED_MODIFIERS:
            raise SigmaConversionError(
                f"field {item.field!r}: the modifier {name!r} is not supported (supported: "
                f"{', '.join(sorted(SUPPORTED_MODIFIERS))})"
            )


def _modifier_name(modifier: type[SigmaModifier[Any, Any]]) -> str:
    return reverse_modifier_mapping.get(modifier.__name__, modifier.__name__)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _sql(node: object) -> str:
    if isinstance(node, ConditionAND | ConditionOR):
        joiner = " AND " if isinstance(node, ConditionAND) else " OR "
        parts = _merged(node)
        return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    if isinstance(node, ConditionNOT):
        return f"NOT {_sql(node.args[0])}"
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _field_value(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        raise SigmaConversionError("keyword searches (values without a field) are not supported")
    raise SigmaConversionError(f"unsupported condition element {type(node).__name__}")


def _merged(node: ConditionItem) -> list[str]:
    """The SQL of `node`'s arguments, where string values of one field become one
    `sigma_match` call (one casefold of the value, not one per pattern)."""
    mode = "all" if isinstance(node, ConditionAND) else "any"
    entries: list[str | tuple[str, bool]] = []
    groups: dict[tuple[str, bool], list[str]] = {}
    for arg in node.args:
        if (
            isinstance(arg, ConditionFieldEqualsValueExpression)
            and isinstance(arg.value, SigmaString)
            and arg.field in FIELDS
        ):
            key = (arg.field, isinstance(arg.value, SigmaCasedString))
            if key not in groups:
                groups[key] = []
                entries.append(key)
            groups[key].append(_pattern(arg.value))
        else:
            entries.append(_sql(arg))
    return [
        entry
        if isinstance(entry, str)
        else _match_call(FIELDS[entry[0]].column, mode, entry[1], groups[entry])
        for entry in entries
    ]


def _field_value(field: str, value: SigmaType) -> str:
    target = FIELDS[field]
    if isinstance(value, SigmaString):
        return _match_call(
            target.column, "any", isinstance(value, SigmaCasedString), [_pattern(value)]
        )
    if isinstance(value, SigmaExpansion):
        strings = [v for v in value.values if isinstance(v, SigmaString)]
        kinds = {isinstance(v, SigmaCasedString) for v in strings}
        if len(strings) == len(value.values) and len(kinds) == 1:
            patterns = [_pattern(v) for v in strings]
            return _match_call(target.column, "any", kinds.pop(), patterns)
        return "(" + " OR ".join(_field_value(field, v) for v in value.values) + ")"
    if isinstance(value, SigmaExists):
        return f"{target.column} IS {'NOT ' if value.exists else ''}NULL"
    if isinstance(value, SigmaNull):
        return f"{target.column} IS NULL"
    if isinstance(value, SigmaNumber):
        if target.numeric:
            return f"{target.column} = {value.number!r}"
        return _match_call(target.column, "any", False, [escape(str(value.number))])
    if isinstance(value, SigmaRegularExpression):
        return regexp_sql(target.column, _regexp(value))
    if isinstance(value, SigmaCIDRExpression):
        raise SigmaConversionError(f"field {field!r}: {_NO_ADDRESS}")
    if isinstance(value, SigmaBool):
        raise SigmaConversionError(f"field {field!r}: a boolean value has no meaning here")
    raise SigmaConversionError(f"field {field!r}: values of type {type(value).__name__} are "
                               "not supported")  # fmt: skip


def regexp_sql(column: str, pattern: str) -> str:
    """REGEXP (RE2, in Python) behind a native test of a literal every match must contain:
    most rows never reach Python. Case-sensitive: `instr`, exact. Case-insensitive: LIKE, which
    folds only ASCII, so it may only rule out ASCII values (RE2's (?i) folds K to the Kelvin
    sign, s to the long s …)."""
    call = f"coalesce(regexp({_literal(pattern)}, {column}), 0)"
    required = required_literal(pattern)
    if required is None:
        return call
    literal, folded = required
    if not folded:
        return f"(instr({column}, {_literal(literal)}) > 0 AND {call})"
    like = "".join("\\" + c if c in "%_\\" else c for c in literal)
    return (
        f"(CASE WHEN length({column}) = octet_length({column}) "
        f"AND NOT {column} LIKE {_literal('%' + like + '%')} ESCAPE '\\' THEN 0 ELSE {call} END)"
    )


_REGEX_META = set(".^$*+?()[]{}|\\")
MIN_REQUIRED_LITERAL = 3


def required_literal(pattern: str) -> tuple[str, bool] | None:
    """The longest run of plain characters every match of `pattern` contains, and whether
    the pattern may fold case; None when no such run of 3+ characters is certain.
    Conservative: a top-level `|`, `\\Q`, or anything not understood gives None; group and
    class contents are never used; a character made optional by `?`, `*` or `{` is dropped."""
    folded = "(?" in pattern  # (?i) anywhere, or a flag group we do not read: assume folding
    if not pattern.isascii():
        return None  # non-ASCII literals: LIKE and byte offsets would need more care
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    index = 0

    def end_run() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    while index < len(pattern):
        char = pattern[index]
        nxt = pattern[index + 1] if index + 1 < len(pattern) else ""
        if char == "\\":
            if not nxt or nxt.isalnum():
                if nxt == "Q":
                    return None
                end_run()
                index += 2
                continue
            literal, index = nxt, index + 2
        elif char == "[":
            end_run()
            close = index + 1
            if close < len(pattern) and pattern[close] == "^":
                close += 1
            if close < len(pattern) and pattern[close] == "]":
                close += 1
            while close < len(pattern) and pattern[close] != "]":
                close += 2 if pattern[close] == "\\" else 1
            index = close + 1
            continue
        elif char == "(":
            depth += 1
            end_run()
            index += 1
            continue
        elif char == ")":
            depth -= 1
            end_run()
            index += 1
            continue
        elif char == "|":
            if depth == 0:
                return None
            index += 1
            continue
        elif char in _REGEX_META:
            end_run()
            index += 1
            continue
        else:
            literal, index = char, index + 1
        if depth > 0:
            continue
        following = pattern[index] if index < len(pattern) else ""
        if following in ("?", "*", "{"):
            end_run()  # this character may be absent
        elif following == "+":
            run.append(literal)
            end_run()  # it may repeat: what follows is not adjacent
        else:
            run.append(literal)
    end_run()
    best = max(runs, key=len, default="")
    return (best, folded) if len(best) >= MIN_REQUIRED_LITERAL else None


def _regexp(value: SigmaRegularExpression) -> str:
    flags = "".join(
        letter
        for flag, letter in (
            (SigmaRegularExpressionFlag.IGNORECASE, "i"),
            (SigmaRegularExpressionFlag.MULTILINE, "m"),
            (SigmaRegularExpressionFlag.DOTALL, "s"),
        )
        if flag in value.flags
    )
    pattern = value.regexp.to_plain(regex=True)
    if "\x00" in pattern:
        raise SigmaConversionError("a regular expression holds a NUL character")
    return f"(?{flags}){pattern}" if flags else pattern


def _pattern(value: SigmaString) -> str:
    """The value in sigma_match's pattern syntax (Sigma's: `*`, `?`, backslash escapes)."""
    text: list[str] = []
    for part in value.s:
        if isinstance(part, str):
            text.append(escape(part))
        elif part is SpecialChars.WILDCARD_MULTI:
            text.append("*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            text.append("?")
        elif isinstance(part, Placeholder):
            raise SigmaConversionError(
                f"placeholder %{part.name}% is not supported (the expand modifier needs a "
                "processing pipeline)"
            )
    pattern = "".join(text)
    if "\x00" in pattern:
        raise SigmaConversionError("a value holds a NUL character, which no process text has")
    return pattern


# SQLite caps a function's arguments (127 by default): longer lists take several calls.
PATTERNS_PER_CALL = 100
# Patterns longer than this skip the native fast path (the sandbox caps LIKE/GLOB patterns at
# 1,024 bytes: store/sandbox.py MAX_LIKE_PATTERN_BYTES).
NATIVE_PATTERN_BYTES = 1000
NATIVE_MAX_PATTERNS = 32


def _match_call(column: str, mode: str, cased: bool, patterns: list[str]) -> str:
    """SQL that is true when `column` matches one (`any`) or every (`all`) pattern.

    Calling Python for every row and pattern is the slow part of a Sigma rule, so SQLite's own
    operators do the work where they mean exactly the same thing: GLOB for `cased` (byte-exact,
    `?` one character), and LIKE for case-insensitive ASCII patterns over ASCII values (where
    casefold is ASCII lowering, which LIKE does). A value with any non-ASCII character —
    `length` (characters) differs from `octet_length` (bytes) — goes to sigma_match, whose
    casefold also folds ß, the Kelvin sign, the long s … into ASCII letters. Long lists stay
    one sigma_match call per 100 patterns: one casefold, and no expression too deep for
    SQLite's parser."""
    joiner = " AND " if mode == "all" else " OR "
    native = [_native(pattern, cased) for pattern in patterns]
    if len(patterns) <= NATIVE_MAX_PATTERNS and all(n is not None for n in native):
        operator = "GLOB" if cased else "LIKE"
        escape_clause = "" if cased else " ESCAPE '\\'"
        tests = [f"{column} {operator} {_literal(n or '')}{escape_clause}" for n in native]
        fast = tests[0] if len(tests) == 1 else "(" + joiner.join(tests) + ")"
        if cased:
            return f"coalesce({fast}, 0)"
        slow = _python_call(column, mode, cased, patterns)
        return (
            f"(CASE WHEN length({column}) = octet_length({column}) THEN coalesce({fast}, 0) "
            f"ELSE {slow} END)"
        )
    return _python_call(column, mode, cased, patterns)


def _python_call(column: str, mode: str, cased: bool, patterns: list[str]) -> str:
    full_mode = f"{mode} cased" if cased else mode
    calls = []
    for start in range(0, len(patterns), PATTERNS_PER_CALL):
        chunk = patterns[start : start + PATTERNS_PER_CALL]
        arguments = ", ".join(_literal(pattern) for pattern in chunk)
        calls.append(f"sigma_match({column}, '{full_mode}', {arguments})")
    if len(calls) == 1:
        return calls[0]
    return "(" + (" AND " if mode == "all" else " OR ").join(calls) + ")"


def _native(pattern: str, cased: bool) -> str | None:
    """`pattern` as a GLOB (cased) or LIKE pattern with the same meaning, or None where there
    is none: a non-ASCII pattern uncased (casefold is not LIKE's folding), or a long one."""
    parts = split(pattern)
    text: list[str] = []
    for part in parts:
        if part is None:
            text.append("*" if cased else "%")
        elif part == "":
            text.append("?" if cased else "_")
        elif cased:
            text.append("".join(f"[{c}]" if c in "*?[" else c for c in part))
        else:
            if not part.isascii():
                return None
            text.append("".join("\\" + c if c in "%_\\" else c for c in part))
    native = "".join(text)
    return native if len(native.encode()) <= NATIVE_PATTERN_BYTES else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
