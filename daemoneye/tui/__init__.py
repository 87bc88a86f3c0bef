"""The dashboard: a Textual app that attaches to the daemon over IPC.

`source.py` is the boundary to the daemon (`DashboardSource`); `logic/` holds the business
logic as plain modules that never import Textual; `app.py`, `screens/` and `widgets/` render it.
This package's `__init__` imports nothing so the plain modules stay importable without Textual.
"""
