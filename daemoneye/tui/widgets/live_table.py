"""A keyed, virtual table that shows an order of row keys and draws only the rows on screen
(STYLE.md 6).

`show(order, cells_of, changed)` is the one place a live table changes: inside
`app.batch_update()` it takes the new order, forgets the rows named in `changed` (all of them
when None), keeps the cursor on the same row key, and repaints only when a row on screen is
affected. A row's cells are pulled from `cells_of` when the row is drawn and kept until its key
is named as changed, so a refresh costs the rows on screen and the number of changes, never
the size of the table. Each drawn row is cached as a strip until its cells, the cursor, the
width or the theme change. `sync(rows)` is the same for small tables given as whole rows.

Why not DataTable: with 10,000 processes its `remove_row` rebuilds the row index for every
removed row and its `sort` and `add_row` measure every cell, so one filter keystroke took minutes
and a refresh most of a second.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click, Resize
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from daemoneye.tui.logic.cells import Cell, RowView, changed_keys
from daemoneye.tui.widgets.component_style import component_style
from daemoneye.tui.widgets.scroll_size import set_scroll_size

CellSource = Callable[[str], tuple[Cell, ...]]
TONES = ("new", "ended", "dim", "alert", "critical", "high", "medium", "low", "info", "ok")
PADDING = 1  # blank cells each side of a column


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    key: str
    label: str
    width: int  # 0: this column takes the width the others leave
    right: bool = False


def fit(text: str, width: int, right: bool) -> str:
    """`text` in exactly `width` cells: cut with an ellipsis, padded on the left or right."""
    if width <= 0:
        return ""
    length = len(text) if text.isascii() else cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…"
    padding = " " * (width - length)
    return padding + text if right else text + padding


class LiveTable(ScrollView, can_focus=True):
    """Rows keyed by a string, a row cursor that follows its key, a fixed header line; one
    column (SHIFTED_COLUMN) may be scrolled sideways with `shift`."""

    SHIFTED_COLUMN: ClassVar[str | None] = None
    MAX_SHIFT: ClassVar[int] = 232  # cells hold at most 240 characters (tui/logic/format.py)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--cursor",
        "live-table--cursor-blurred",
        *(f"live-table--{tone}" for tone in TONES),
    }

    @dataclass
    class RowHighlighted(Message):
        """The cursor is on another row (or the row under it changed key)."""

        live_table: LiveTable
        key: str | None

        @property
        def control(self) -> LiveTable:
            return self.live_table

    @dataclass
    class RowSelected(Message):
        """Enter or a double click on a row."""

        live_table: LiveTable
        key: str

        @property
        def control(self) -> LiveTable:
            return self.live_table

    @dataclass
    class HeaderSelected(Message):
        """A click on a column's header."""

        live_table: LiveTable
        column: str

        @property
        def control(self) -> LiveTable:
            return self.live_table

    def __init__(
        self,
        columns: Sequence[tuple[str, str, int, bool]],
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """`columns` are (key, label, width, right-aligned); width 0 marks the column that
        takes the rest of the table's width."""
        super().__init__(name=name, id=id, classes=classes)
        self.columns = tuple(ColumnSpec(*column) for column in columns)
        self._source: CellSource = _no_cells
        self._cells: dict[str, tuple[Cell, ...]] = {}  # the rows pulled from `_source` so far
        self._order: Sequence[str] = ()
        self._given: dict[str, tuple[Cell, ...]] = {}  # what the last `sync` was given
        self._cursor = 0
        self._highlighted: str | None = None
        self._widths: tuple[int, ...] = tuple(c.width for c in self.columns)
        self._styles: dict[str, Style] = {}
        self._strips: dict[str, tuple[tuple[Cell, ...], bool, int, Strip]] = {}
        self._shift = 0  # characters of SHIFTED_COLUMN scrolled out on the left

    # -- reading --------------------------------------------------------------------------
    @property
    def shown_keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_key(self) -> str | None:
        """The row key under the cursor, None when the table is empty."""
        return self._order[self._cursor] if self._cursor < len(self._order) else None

    def cells_of(self, key: str) -> tuple[Cell, ...] | None:
        """The cells of a shown row (pulled now if it has not been drawn yet)."""
        cells = self._cells.get(key)
        if cells is None and key in self._order:
            cells = self._cells[key] = self._source(key)
        return cells

    # -- changing -------------------------------------------------------------------------
    def show(
        self, order: Sequence[str], cells_of: CellSource, changed: Collection[str] | None = None
    ) -> None:
        """Show the rows `order` names, drawing each from `cells_of(key)`. `changed` names
        every key whose cells may differ since the last call (None: any may). The table keeps
        `order` as it is: the caller hands over a new sequence instead of changing this one."""
        cursor_key = self.cursor_key
        top = round(self.scroll_offset.y)
        height = max(1, self.size.height - 1)
        on_screen_before = self._order[top : top + height]
        self._source = cells_of
        if changed is None:
            self._cells.clear()
            self._strips.clear()
        elif changed:
            cells, strips = self._cells, self._strips
            for key in changed:
                cells.pop(key, None)
                strips.pop(key, None)
        if order is not self._order and (len(order) != len(self._order) or order != self._order):
            if len(order) != len(self._order):
                self._set_row_count(len(order))
            self._order = order
        with self.app.batch_update():
            self._restore_cursor(cursor_key)
            if changed is None or round(self.scroll_offset.y) != top:
                self.refresh()
            else:
                self._refresh_lines(on_screen_before, self._order[top : top + height], changed)

    def _refresh_lines(
        self, before: Sequence[str], after: Sequence[str], changed: Collection[str]
    ) -> None:
        """Repaint the lines whose row is another one now or changed its cells: a refresh
        that changes a few visible rows repaints those, not the table."""
        changed = changed if isinstance(changed, set | frozenset) else set(changed)
        width, lines = self.size.width, max(len(before), len(after))
        regions: list[Region] = []
        start = None
        for line in range(lines + 1):
            differs = line < lines and (
                line >= len(before)
                or line >= len(after)
                or before[line] != after[line]
                or after[line] in changed
            )
            if differs and start is None:
                start = line
            elif not differs and start is not None:
                regions.append(Region(0, 1 + start, width, line - start))
                start = None
        if regions:
            self.refresh(*regions)

    def _set_row_count(self, rows: int) -> None:
        """Size the scrollable area for `rows` (plus the header) without a screen layout
        (scroll_size.py): a refresh that adds or removes a row would lay it out."""
        set_scroll_size(self, Size(self.size.width, rows + 1))

    def sync(self, rows: Sequence[RowView]) -> None:
        """Make the table show exactly `rows` (for small tables given as whole rows)."""
        given = {key: cells for key, cells in rows}
        changed = changed_keys(self._given, rows)
        self._given = given
        self.show([row.key for row in rows], given.__getitem__, changed)

    def _index_of(self, key: str) -> int | None:
        """Where `key` is shown: a linear search in C, cheaper than keeping a 10,000-key index
        current on every refresh; the cursor's own row is checked first."""
        order = self._order
        if self._cursor < len(order) and order[self._cursor] == key:
            return self._cursor
        try:
            return order.index(key)
        except ValueError:
            return None

    def _restore_cursor(self, key: str | None) -> None:
        index = self._index_of(key) if key is not None else None
        if index is not None:
            self._move(index)
        else:  # the row went away: stay at the same height
            self._move(min(self._cursor, max(0, len(self._order) - 1)))

    def select_key(self, key: str) -> bool:
        """Put the cursor on `key`; False when the table has no such row."""
        index = self._index_of(key)
        if index is None:
            return False
        self._move(index)
        return True

    def _move(self, index: int) -> None:
        index = max(0, min(index, len(self._order) - 1))
        if index != self._cursor:
            for key in (self.cursor_key, self._order[index] if self._order else None):
                if key is not None:
                    self._strips.pop(key, None)
            self._refresh_rows_at(self._cursor, index)
            self._cursor = index
        elif self.cursor_key is not None:
            self._strips.pop(self.cursor_key, None)  # a new row under an unmoved cursor
        self._scroll_to_cursor()
        key = self.cursor_key
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.RowHighlighted(self, key))

    def _refresh_rows_at(self, *indexes: int) -> None:
        """Repaint the lines of the rows at `indexes`: a cursor step repaints two lines, not
        the table. The whole table when one is off screen (the step scrolls it)."""
        top = round(self.scroll_offset.y)
        visible = max(1, self.size.height - 1)
        if all(top <= index < top + visible for index in indexes):
            self.refresh(*(Region(0, 1 + index - top, self.size.width, 1) for index in indexes))
        else:
            self.refresh()

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = round(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False, immediate=True)

    # -- keys and mouse ---------------------------------------------------------------------
    def _page(self) -> int:
        return max(1, self.size.height - 2)

    def action_cursor_up(self) -> None:
        self._move(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self._cursor + 1)

    def action_page_up(self) -> None:
        self._move(self._cursor - self._page())

    def action_page_down(self) -> None:
        self._move(self._cursor + self._page())

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._order) - 1)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: Click) -> None:
        if event.y == 0:
            column = self._column_at(event.x)
            if column is not None:
                self.post_message(self.HeaderSelected(self, column))
            return
        index = round(self.scroll_offset.y) + event.y - 1
        if 0 <= index < len(self._order):
            self._move(index)
            if event.chain >= 2:
                self.action_select()

    def _column_at(self, x: int) -> str | None:
        start = 0
        for column, width in zip(self.columns, self._widths, strict=True):
            end = start + width + 2 * PADDING
            if start <= x < end:
                return column.key
            start = end
        return None

    def set_columns(self, columns: Sequence[ColumnSpec]) -> None:
        """Other columns: every row is pulled and drawn again at the next `show`."""
        self.columns = tuple(columns)
        self._cells.clear()
        self._strips.clear()
        self._lay_out(keep=True)
        self.refresh()

    # -- drawing ----------------------------------------------------------------------------
    @property
    def shift_offset(self) -> int:
        """How many characters of SHIFTED_COLUMN are scrolled out on the left."""
        return self._shift

    def shift(self, step: int) -> None:
        """Scroll SHIFTED_COLUMN's text sideways by `step` characters (left when negative),
        between 0 and MAX_SHIFT; repaints only when it moved."""
        offset = min(self.MAX_SHIFT, max(0, self._shift + step))
        if self.SHIFTED_COLUMN is None or offset == self._shift:
            return
        self._shift = offset
        self._strips.clear()
        self.refresh()

    def _label(self, column: ColumnSpec) -> str:
        if column.key == self.SHIFTED_COLUMN and self._shift:
            return f"{column.label} «{self._shift}"
        return column.label

    def fit_columns(self, room: int) -> Sequence[int] | None:
        """The columns' widths for `room` cells of content (paddings taken off), or None to
        keep the widths given; a table that sizes its columns from content says here."""
        return None

    def refit(self) -> None:
        """Size the columns again (the content changed); repaints only when one moved."""
        before = self._widths
        self._lay_out(keep=True)
        if self._widths != before:
            self._strips.clear()
            self.refresh()

    def on_resize(self, event: Resize) -> None:
        self._lay_out()

    def _lay_out(self, *, keep: bool = False) -> None:
        width = self.size.width  # the content area: scrollbars already taken off
        fitted = self.fit_columns(width - 2 * PADDING * len(self.columns))
        if fitted is not None:
            self.columns = tuple(
                replace(column, width=column_width)
                for column, column_width in zip(self.columns, fitted, strict=True)
            )
        fixed = sum(c.width + 2 * PADDING for c in self.columns if c.width)
        rest = max(8, width - fixed - 2 * PADDING)
        self._widths = tuple(c.width or rest for c in self.columns)
        if keep:
            return
        self._strips.clear()
        self.virtual_size = Size(width, len(self._order) + 1)
        self._scroll_to_cursor()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _base_style(self) -> Style:
        """The widget's own style (kept until the styles change, like the component ones:
        working it out walks the widget's ancestors, for every row drawn)."""
        style = self._styles.get("")
        if style is None:
            style = self._styles[""] = self.rich_style
        return style

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = component_style(self, f"live-table--{name}")
            self._styles[name] = style
        return style

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header(width)
        index = round(self.scroll_offset.y) + y - 1
        if not 0 <= index < len(self._order):
            return Strip.blank(width, self.rich_style)
        key = self._order[index]
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = self._source(key)
        cursor = index == self._cursor
        cached = self._strips.get(key)
        if cached is not None and cached[0] is cells and cached[1] == cursor and cached[2] == width:
            return cached[3]
        strip = self._row(cells, cursor, width)
        self._strips[key] = (cells, cursor, width, strip)
        return strip

    def _header(self, width: int) -> Strip:
        style = self.rich_style + self._style("header")
        text = "".join(
            " " * PADDING + fit(self._label(column), column_width, column.right) + " " * PADDING
            for column, column_width in zip(self.columns, self._widths, strict=True)
        )
        return Strip([Segment(text, style)]).adjust_cell_length(width, style)

    def _row(self, cells: tuple[Cell, ...], cursor: bool, width: int) -> Strip:
        base = self._base_style()
        if cursor:
            base += self._style("cursor" if self.has_focus else "cursor-blurred")
        pad = Segment(" " * PADDING, base)
        segments: list[Segment] = []
        for cell, column, column_width in zip(cells, self.columns, self._widths, strict=False):
            style = base + self._style(cell.tone) if cell.tone else base
            if cursor and cell.tone:  # the cursor's colours win; the tone keeps its emphasis
                style += Style(color=base.color, bgcolor=base.bgcolor)
            text = cell.text
            if self._shift and column.key == self.SHIFTED_COLUMN:
                text = text[self._shift :]
            segments += (pad, Segment(fit(text, column_width, cell.right), style), pad)
        return Strip(segments).adjust_cell_length(width, base)

    def on_focus(self) -> None:
        self._strips.pop(self.cursor_key or "", None)
        self.refresh()

    def on_blur(self) -> None:
        self._strips.pop(self.cursor_key or "", None)
        self.refresh()


def _no_cells(key: str) -> tuple[Cell, ...]:
    return ()
