"""One Sigma rule file (`*.yml`, `*.yaml`) → Rule records, RuleProblems and notices.

A file may hold several YAML documents, one rule each. A rule loads when its logsource is
`category: process_creation`, `product: linux`; a rule for another logsource is skipped with a
notice (it is not broken, it is for another system). pySigma parses each rule; sigma_sql.py
converts it to SQL; a rule that cannot be parsed or converted is a RuleProblem with the file,
the line of its document (or of its `detection`), its id and the reason, and the others load.

Sigma metadata maps onto the rule: id → id (lowercased; it keys alerts, overrides and dedup),
title → name, level → severity, `attack.tNNNN[.NNN]` tags → ATT&CK ids, status, references and
falsepositives kept as they are. A `deprecated` or `unsupported` rule loads disabled.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import re2
import yaml
from sigma.exceptions import SigmaError
from sigma.policy import SigmaPolicy
from sigma.policy.regex_engine import RE2RegexEngine, RegexPattern
from sigma.rule import SigmaRule

from daemoneye.engine.rule_file import (
    ID_PATTERN,
    MAX_FIELD_CHARS,
    MAX_FILE_BYTES,
    MAX_ID_LENGTH,
    MAX_LIST_ITEM_CHARS,
    MAX_LIST_ITEMS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    ParsedFile,
)
from daemoneye.engine.sigma_sql import SigmaConversionError, rule_query
from daemoneye.models import Rule, RuleProblem

LOGSOURCE = {"category": "process_creation", "product": "linux"}
LEVELS = {
    "informational": "info",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}
DEFAULT_LEVEL = "medium"
DISABLED_STATUSES = frozenset({"deprecated", "unsupported"})
_TECHNIQUE_TAG = re.compile(r"attack\.(t\d{4}(?:\.\d{3})?)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Document:
    line: int  # 1-based line of the document's first key
    data: Any
    key_lines: Mapping[str, int] = field(default_factory=dict)


def read_sigma_file(path: Path) -> ParsedFile:
    """Parse the Sigma file at `path`. Never raises for a bad file: problems say why."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            message = (
                f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB), the most a rule file "
                "may hold: split it into several files"
            )
            return ParsedFile(str(path), (), (RuleProblem(str(path), 0, None, message),), False)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = RuleProblem(str(path), 0, None, f"cannot read: {reason}")
        return ParsedFile(str(path), (), (problem,), readable=False)
    return _parsed_cached(text, str(path))


# Converting is the slow part of a reload (~3 ms per rule in pySigma): a file whose bytes did
# not change since the last reload is not converted again. Keyed by digest, not text, so the
# cache holds no file bodies; bounded.
_CACHE_SIZE = 1024
_cache: dict[tuple[str, str], ParsedFile] = {}
_cache_lock = threading.Lock()


def _parsed_cached(text: str, path: str) -> ParsedFile:
    key = (path, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    parsed = parse_sigma_text(text, path)
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = parsed
    return parsed


def parse_sigma_text(text: str, path: str) -> ParsedFile:
    """Parse Sigma YAML `text` as if read from `path`."""
    try:
        documents = _documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = (
            " ".join(
                str(part)
                for part in (getattr(exc, "context", None), getattr(exc, "problem", None))
                if part
            )
            or str(exc).splitlines()[0]
        )
        problem = RuleProblem(path, line, None, f"YAML syntax: {reason}")
        return ParsedFile(path, (), (problem,), readable=False)
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    notices: list[RuleProblem] = []
    rejected: list[str] = []
    key_lines: dict[tuple[str, str], int] = {}
    first_line_of_id: dict[str, int] = {}
    for document in documents:
        if document.data is None:
            continue  # an empty document (a trailing `---`)
        raw_id = document.data.get("id") if isinstance(document.data, dict) else None
        rule_id = str(raw_id).lower() if raw_id is not None else None
        try:
            rule = _rule(document, path)
        except _Skipped as skipped:
            notices.append(RuleProblem(path, document.line, rule_id, str(skipped)))
            continue
        except _Refused as refused:
            problems.append(RuleProblem(path, refused.line or document.line, rule_id, str(refused)))
            if rule_id is not None:
                rejected.append(rule_id)
            continue
        if rule.id in first_line_of_id:
            problems.append(
                RuleProblem(
                    path,
                    document.line,
                    rule.id,
                    f"duplicate rule id {rule.id!r} in this file "
                    f"(first defined at line {first_line_of_id[rule.id]})",
                )
            )
            rejected.append(rule.id)
            continue
        first_line_of_id[rule.id] = document.line
        rules.append(rule)
        key_lines[(rule.id, "query")] = document.key_lines.get("detection", document.line)
    return ParsedFile(
        path,
        tuple(rules),
        tuple(problems),
        readable=True,
        key_lines=key_lines,
        rejected_ids=tuple(rejected),
        notices=tuple(notices),
    )


def _documents(text: str) -> list[_Document]:
    """Every YAML document with its first line and the lines of its top-level keys. libyaml's
    parser when PyYAML has it: the pure-Python one takes ~7 s over a 1 MiB file."""
    loader = _SafeLoader(text)
    documents: list[_Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            lines: dict[str, int] = {}
            if isinstance(node, yaml.MappingNode):
                for key, _ in node.value:
                    if isinstance(key, yaml.ScalarNode):
                        lines.setdefault(str(key.value), key.start_mark.line + 1)
            data = loader.construct_document(node)
            documents.append(_Document(node.start_mark.line + 1, data, lines))
    finally:
        loader.dispose()
    return documents


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _QuietRE2(RE2RegexEngine):
    """pySigma's RE2 check of `re` values, without RE2 writing each bad pattern to stderr
    (the reason reaches the RuleProblem instead)."""

    def compile(self, pattern: str, flags: int = 0) -> RegexPattern:
        prefix = "".join(
            letter
            for flag, letter in ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))
            if flags & flag
        )
        options = re2.Options()
        options.log_errors = False
        return cast(
            RegexPattern, re2.compile(f"(?{prefix}){pattern}" if prefix else pattern, options)
        )


_POLICY = SigmaPolicy(regex_engine=_QuietRE2())


class _Skipped(Exception):
    """A well-formed rule for another logsource."""


class _Refused(Exception):
    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


def _rule(document: _Document, path: str) -> Rule:
    data = document.data
    if not isinstance(data, dict):
        raise _Refused(f"a Sigma rule is a YAML mapping, not {type(data).__name__}")
    if "action" in data:
        raise _Refused(
            "Sigma rule collections (action: global/reset/repeat) are not supported: "
            "write each rule as a whole document"
        )
    if "correlation" in data or ("filter" in data and "detection" not in data):
        raise _Refused("Sigma correlation and filter documents are not supported")
    logsource = data.get("logsource")
    if not isinstance(logsource, dict):
        raise _Refused("missing 'logsource' (a mapping)", document.key_lines.get("logsource", 0))
    wanted = all(logsource.get(key) == value for key, value in LOGSOURCE.items())
    if not wanted:
        shown = ", ".join(f"{key}: {value}" for key, value in logsource.items() if value)
        raise _Skipped(
            f"skipped: logsource {{{shown}}} is not category: process_creation, product: linux"
        )
    try:
        sigma = SigmaRule.from_dict(data, policy=_POLICY)
    except SigmaError as exc:
        raise _Refused(f"Sigma: {exc}", document.key_lines.get("detection", 0)) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise _Refused(f"Sigma: malformed rule: {exc}") from None
    if sigma.id is None:
        raise _Refused("missing 'id': a Sigma rule needs one (it keys alerts and overrides)")
    rule_id = str(sigma.id).lower()
    if not ID_PATTERN.fullmatch(rule_id) or len(rule_id) > MAX_ID_LENGTH:
        raise _Refused(f"id {rule_id!r} is not a valid rule id", document.key_lines.get("id", 0))
    try:
        query = rule_query(sigma)
    except SigmaConversionError as exc:
        raise _Refused(str(exc), document.key_lines.get("detection", 0)) from None
    except SigmaError as exc:
        raise _Refused(f"Sigma: {exc}", document.key_lines.get("detection", 0)) from None
    name = _capped(sigma.title or rule_id, "name", document)
    description = _capped(sigma.description or "", "description", document)
    level = sigma.level.name.lower() if sigma.level is not None else DEFAULT_LEVEL
    status = sigma.status.name.lower() if sigma.status is not None else None
    return Rule(
        id=rule_id,
        name=name,
        description=description,
        severity=LEVELS.get(level, DEFAULT_LEVEL),
        enabled=status not in DISABLED_STATUSES,
        tags=_tags([f"{tag.namespace}.{tag.name}" for tag in sigma.tags]),
        query=query,
        title=None,
        dedup_window_s=None,
        throttle_s=None,
        source_file=path,
        source_line=document.line,
        source_format="sigma",
        sigma_id=str(sigma.id),
        status=status,
        references=_bounded(sigma.references),
        falsepositives=_bounded(sigma.falsepositives),
    )


def _capped(text: str, key: str, document: _Document) -> str:
    limit = MAX_FIELD_CHARS[key]
    if len(text) > limit:
        sigma_key = "title" if key == "name" else key
        raise _Refused(
            f"{sigma_key!r} is {len(text)} characters long (at most {limit})",
            document.key_lines.get(sigma_key, 0),
        )
    return text


def _tags(tags: list[str]) -> tuple[str, ...]:
    """ATT&CK technique tags as ids (attack.t1059.004 → T1059.004); other tags as they are."""
    converted: list[str] = []
    for tag in tags:
        technique = _TECHNIQUE_TAG.fullmatch(tag)
        text = technique.group(1).upper() if technique else tag
        if text and len(text) <= MAX_TAG_CHARS and text not in converted:
            converted.append(text)
    return tuple(converted[:MAX_TAGS])


def _bounded(items: list[str] | None) -> tuple[str, ...]:
    return tuple(str(item)[:MAX_LIST_ITEM_CHARS] for item in (items or [])[:MAX_LIST_ITEMS])
