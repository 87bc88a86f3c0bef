"""`rules enable` / `rules disable` kept across restarts and reloads.

The switches live in a small JSON object next to the store (`rule-switches.json`:
`{"rule-id": false, …}`), written to a temporary file and renamed over the old one (mode
0600). Only switches that differ from what the rule's file says are kept: enabling a rule its
file enables drops the switch. A missing file means no switches; an unreadable, oversized or
malformed one is logged and ignored (the rules then run as their files say) — losing this
memory must never stop rules from loading. Every switch is an admin request, audited by the
IPC server with the caller's uid and pid.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "rule-switches.json"
MAX_BYTES = 256 * 1024
MAX_SWITCHES = 10_000


def switches_file_for(db_path: Path) -> Path:
    """Where the daemon whose store is `db_path` keeps its rule switches."""
    return db_path.parent / FILE_NAME


class RuleSwitches:
    """Reads and writes the switches file; errors are logged, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, bool]:
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("rule switches: cannot read %s: %s; rules run as their files say",
                        self.path, exc)  # fmt: skip
            return {}
        if len(raw) > MAX_BYTES:
            log.warning("rule switches: %s is larger than %d bytes; ignored", self.path, MAX_BYTES)
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("rule switches: %s is not valid JSON (%s); ignored", self.path, exc)
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
        ):
            log.warning("rule switches: %s is not an object of rule ids to true/false; ignored",
                        self.path)  # fmt: skip
            return {}
        return dict(list(value.items())[:MAX_SWITCHES])

    def save(self, switches: Mapping[str, bool]) -> bool:
        """Write `switches` (at most MAX_SWITCHES); False (logged) when it could not."""
        kept = dict(sorted(switches.items())[:MAX_SWITCHES])
        text = json.dumps(kept, indent=1, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".rule-switches-", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
            except OSError:
                os.unlink(temporary)
                raise
        except OSError as exc:
            log.warning("rule switches: cannot write %s: %s; the switch lasts until the daemon "
                        "stops", self.path, exc)  # fmt: skip
            return False
        return True
