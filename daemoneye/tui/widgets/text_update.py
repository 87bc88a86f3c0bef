"""Updating a Static without laying out the whole screen when its height stays the same.

`Static.update` asks for a layout of the screen on every call, and a layout repaints every
widget on it. The process screen updates its status line and the detail pane on every refresh,
so that was a full layout and repaint each second, right where a key press waits behind it.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def show_text(static: Static, content: Text) -> None:
    """Show `content`; nothing at all when it is what is shown, and a layout only when the
    text's height at the widget's width differs from the height the widget has now."""
    if isinstance(static.content, Text) and static.content == content:
        return
    width, height = static.content_size
    static.update(content, layout=False)
    if (
        not width
        or static.get_content_height(static.content_size, static.content_size, width) != height
    ):
        static.refresh(layout=True)
