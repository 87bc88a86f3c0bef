"""Sizing a ScrollView's scrollable area without laying out the screen.

Assigning `virtual_size` is a reactive that lays out the whole screen, and a layout repaints
every widget on it: 10-20 ms with 10,000 rows in the process table. A view that draws its own
lines (the process table, the detail pane) needs only its scrollbar to follow. Textual's
scrollbar update still lays out when a scrollbar appears or goes.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.scroll_view import ScrollView


def set_scroll_size(view: ScrollView, size: Size) -> None:
    """Make `size` the view's virtual size; nothing at all when it already is."""
    if size != view.virtual_size:
        view.set_reactive(ScrollView.virtual_size, size)
        view._scroll_update(size)
