"""`daemoneye audit verify`: recompute the audit log's hash chain.

The running daemon verifies its own store (so this works for a user who cannot read the
store, and with --host); without a daemon, or with --db, the store is read directly. Prints the
number of entries and "intact", or the first entry that does not verify and why;
when retention pruned old entries, a second line says which, when, and whether their signed
checkpoint verified. Exit code 1 when the log was tampered with (a bad checkpoint included).
"""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context, with_daemon_or_store
from daemoneye.engine.audit import verify
from daemoneye.errors import StoreError
from daemoneye.models import AuditVerification
from daemoneye.output import render
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.schema import SCHEMA_VERSION

EXIT_TAMPERED = 1


def verify_audit(ctx: Context) -> int:
    result = with_daemon_or_store(
        ctx,
        lambda client: client.audit_verify(),
        _verify_store,
        named_store_first=True,
    )
    if ctx.output == "table":
        if result.ok:
            sys.stdout.write(f"{result.entries} entries, intact\n")
        else:
            where = (
                f"first bad entry: {result.first_bad_id}: "
                if result.first_bad_id is not None
                else ""
            )
            sys.stdout.write(f"{result.entries} entries, NOT intact: {where}{result.reason}\n")
        if result.pruned is not None:
            sys.stdout.write(result.pruned + "\n")
    else:
        render(
            ("entries", "intact", "first_bad_seq", "reason", "pruned"),
            [(result.entries, result.ok, result.first_bad_id, result.reason, result.pruned)],
            ctx.output,
            sys.stdout,
        )
    return 0 if result.ok else EXIT_TAMPERED


def _verify_store(store: ReadOnlyStore) -> AuditVerification:
    version = int(str(store.fetch_rows("PRAGMA user_version")[0][0]))
    if version < 2:
        raise StoreError(
            f"{store.path}: the store is at schema version {version} and has "
            f"no audit log yet (this DaemonEye uses {SCHEMA_VERSION}); start "
            "the daemon once to migrate it"
        )
    return verify(store).as_model()
