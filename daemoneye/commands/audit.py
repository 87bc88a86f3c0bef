"""`daemoneye audit verify`: recompute the audit log's hash chain.

Prints the number of entries and "intact", or the first entry that does not verify and why;
when retention pruned old entries, a second line says which, when, and whether their signed
checkpoint verified. Exit code 1 when the log was tampered with (a bad checkpoint included).
"""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context
from daemoneye.engine.audit import verify
from daemoneye.errors import StoreError
from daemoneye.output import render
from daemoneye.store.schema import SCHEMA_VERSION

EXIT_TAMPERED = 1


def verify_audit(ctx: Context) -> int:
    with ctx.open_store() as store:
        version = int(str(store.fetch_rows("PRAGMA user_version")[0][0]))
        if version < 2:
            raise StoreError(
                f"{store.path}: the store is at schema version {version} and has "
                f"no audit log yet (this DaemonEye uses {SCHEMA_VERSION}); start "
                "the daemon once to migrate it"
            )
        result = verify(store)
    if ctx.output == "table":
        if result.intact:
            sys.stdout.write(f"{result.entries} entries, intact\n")
        else:
            where = (
                f"first bad entry: {result.first_bad_seq}: "
                if result.first_bad_seq is not None
                else ""
            )
            sys.stdout.write(f"{result.entries} entries, NOT intact: {where}{result.reason}\n")
        if result.pruned is not None:
            sys.stdout.write(result.pruned.line() + "\n")
    else:
        pruned = None if result.pruned is None else result.pruned.line()
        render(
            ("entries", "intact", "first_bad_seq", "reason", "pruned"),
            [(result.entries, result.intact, result.first_bad_seq, result.reason, pruned)],
            ctx.output,
            sys.stdout,
        )
    return 0 if result.intact else EXIT_TAMPERED
