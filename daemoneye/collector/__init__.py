"""The process collector: it produces process records and events and knows nothing of the store
or the engine.

- `procfs`: parsers for /proc files and small readers (boot time, boot id, clock ticks).
- `details`: one process instance read in full through a pinned /proc/<pid> descriptor.
- `stat_poll`: the per-tick hot path (one stat read per known process, compared as bytes).
- `scanner`: `ProcScanner`, which turns that into a `ScanDelta` per tick and a live snapshot.
- `hashing`: `ExeHasher`, SHA-256 of executables on a worker thread.
- `users`: cached uid -> user name.
"""
