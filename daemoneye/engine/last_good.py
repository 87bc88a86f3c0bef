"""The last good rules of each rule file, kept on disk so that they survive a restart.

While the daemon runs, a rule file that breaks keeps its last good rules (reload.py). That
memory used to end with the process: a restart with the file still half-written lost those
rules silently. So after every load the validated rules of each file are written here, one
JSON file per rule file (in a directory next to the store, 0700, files 0600, replaced
atomically), and a load with no earlier set in memory (the daemon's first) falls back to
them. The kept rules are data only: they are validated again before they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemoneye.models import Rule

log = logging.getLogger(__name__)

DIRECTORY_NAME = "rules-last-good"
FORMAT_VERSION = 1
# A kept file never holds more than a rule file may (rule_file.MAX_FILE_BYTES) plus its JSON
# quoting; anything bigger is not ours and is ignored.
MAX_KEPT_BYTES = 8 * 1024 * 1024
_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(Rule))


@dataclass(frozen=True, slots=True)
class KeptFile:
    """The last good rules of one rule file and when that version was first loaded."""

    path: str
    saved_at: float
    rules: tuple[Rule, ...]


def directory_for(db_path: Path) -> Path:
    """Where the daemon whose store is `db_path` keeps last good rules."""
    return db_path.parent / DIRECTORY_NAME


class LastGoodFiles:
    """Reads and (unless `read_only`) writes the kept copies under `directory`. Errors are
    logged, never raised: losing this memory must not stop rules from loading."""

    def __init__(self, directory: Path, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        # What is on disk and since when, per rule file: rewrites are skipped when unchanged.
        self._written: dict[str, tuple[tuple[Rule, ...], float]] = {}

    def _file_for(self, rule_file: str) -> Path:
        digest = hashlib.sha256(rule_file.encode("utf-8", "surrogatepass")).hexdigest()
        return self.directory / f"{digest[:32]}.json"

    def get(self, rule_file: str) -> KeptFile | None:
        """The kept rules of `rule_file`, or None (none kept, unreadable, or not ours)."""
        path = self._file_for(rule_file)
        try:
            with path.open("rb") as kept:
                data = kept.read(MAX_KEPT_BYTES + 1)
        except FileNotFoundError:
            return None
        except PermissionError:
            # Another user's daemon keeps these (`rules list` run by a reader): not ours to see.
            log.debug("no permission to read the last good rules of %s", rule_file)
            return None
        except OSError as exc:
            log.warning("cannot read the last good rules of %s: %s", rule_file, exc)
            return None
        try:
            found = _decode(json.loads(data), rule_file) if len(data) <= MAX_KEPT_BYTES else None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring the kept rules of %s in %s: %s", rule_file, path, exc)
            return None
        if found is not None:
            self._written[rule_file] = (found.rules, found.saved_at)
        return found

    def saved_at(self, rule_file: str) -> float | None:
        """When the kept version of `rule_file` was first loaded (None when unknown)."""
        written = self._written.get(rule_file)
        return None if written is None else written[1]

    def put(self, rule_file: str, rules: Iterable[Rule], now: float | None = None) -> None:
        """Keep `rules` as the last good version of `rule_file` (only when they changed)."""
        chosen = tuple(rules)
        written = self._written.get(rule_file)
        if written is not None and written[0] == chosen:
            return
        saved_at = time.time() if now is None else now
        if self.read_only:
            self._written[rule_file] = (chosen, saved_at)
            return
        document = {
            "version": FORMAT_VERSION,
            "path": rule_file,
            "saved_at": saved_at,
            "rules": [{name: getattr(rule, name) for name in _RULE_FIELDS} for rule in chosen],
        }
        target = self._file_for(rule_file)
        temporary = target.with_suffix(".tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            log.warning(
                "cannot keep the last good rules of %s in %s: %s", rule_file, self.directory, exc
            )
            with contextlib.suppress(OSError):
                temporary.unlink()
            return
        self._written[rule_file] = (chosen, saved_at)


def _decode(document: Any, rule_file: str) -> KeptFile | None:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        return None
    if document.get("path") != rule_file:
        return None  # a digest collision or a copied file: not this rule file's rules
    rules = []
    for raw in document["rules"]:
        values = {name: raw[name] for name in _RULE_FIELDS if name in raw}
        for name in ("tags", "references", "falsepositives"):
            values[name] = tuple(values.get(name, ()))
        rule = Rule(**values)
        if not all(
            isinstance(getattr(rule, name), str)
            for name in ("id", "name", "description", "severity", "query")
        ):
            raise TypeError(f"a kept rule has a field of the wrong type: {raw!r:.200}")
        rules.append(rule)
    return KeptFile(rule_file, float(document["saved_at"]), tuple(rules))
