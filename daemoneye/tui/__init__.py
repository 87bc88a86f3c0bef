"""The dashboard: a Textual app that attaches to the daemon over IPC.

`source.py` is the boundary to the daemon (`DashboardSource`); `logic/` holds the business
logic as plain modules that never import Textual; `app.py`, `screens/` and `widgets/` render it.
This package's `__init__` imports nothing but `os`, so the plain modules stay importable
without Textual.

One setting must be made before Textual is imported: its frame rate. Textual repaints on a
timer, and after a long frame (applying a refresh of 10,000 processes takes one) that timer
skips ahead by up to two frames, so a key pressed right behind a refresh waited up to 33 ms for
its frame at the default 60. At 240 that wait is at most 8 ms. Textual paints only what
changed and only when something did, so an idle dashboard costs nothing more, and its
animations keep their own rate. A user's own TEXTUAL_FPS wins.
"""

import os

os.environ.setdefault("TEXTUAL_FPS", "240")
