"""Which rows of a small table changed: a table that forgets exactly those keys and pulls them
again always shows the wanted rows, and an unchanged row is never named."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from daemoneye.tui.logic.cells import Cell, RowView, changed_keys, content_widths
from daemoneye.tui.logic.glyphs import TIMES


def row(key: str, *texts: str) -> RowView:
    return RowView(key, tuple(Cell(text) for text in texts))


def test_unchanged_rows_are_not_named() -> None:
    rows = [row("1", "a", "b"), row("2", "c", "d")]
    shown = {r.key: r.cells for r in rows}
    assert changed_keys(shown, [row("1", "a", "b"), row("2", "c", "d")]) == []


def test_a_changed_cell_names_its_row_only() -> None:
    shown = {"1": row("1", "a", "b").cells, "2": row("2", "c", "d").cells}
    assert changed_keys(shown, [row("1", "a", "B"), row("2", "c", "d")]) == ["1"]


def test_gone_and_new_rows_are_named() -> None:
    shown = {"1": row("1", "a").cells, "2": row("2", "b").cells}
    assert sorted(changed_keys(shown, [row("2", "b"), row("3", "c")])) == ["1", "3"]


def test_a_new_order_alone_names_nothing() -> None:
    shown = {"1": row("1", "a").cells, "2": row("2", "b").cells}
    assert changed_keys(shown, [row("2", "b"), row("1", "a")]) == []


tables = st.lists(
    st.tuples(st.integers(0, 30), st.text("ab", max_size=2)),
    max_size=25,
    unique_by=lambda pair: pair[0],
)


@given(before=tables, after=tables)
def test_forgetting_the_changed_keys_always_yields_the_wanted_rows(
    before: list[tuple[int, str]], after: list[tuple[int, str]]
) -> None:
    old_rows = [row(str(k), text, str(k)) for k, text in before]
    new_rows = [row(str(k), text, str(k)) for k, text in after]
    kept = {r.key: r.cells for r in old_rows}  # what a table drew last time
    for key in changed_keys(kept, new_rows):
        kept.pop(key, None)
    wanted = {r.key: r.cells for r in new_rows}
    shown = {key: kept.get(key, wanted[key]) for key in wanted}
    assert shown == wanted


def test_columns_are_as_wide_as_their_widest_cell_within_their_limit() -> None:
    rows = [
        row("1", "22:08:30", "reverse-shell-from-web-server", "a title"),
        row("2", f"{TIMES}12 since 22:08:30", "x", "t"),
    ]
    labels, limits = ["seen", "rule", "title"], [24, 20, 0]
    assert content_widths(labels, limits, rows) == (18, 20, 0)
    assert content_widths(labels, limits, rows[:1]) == (8, 20, 0)
    assert content_widths(labels, limits, []) == (4, 4, 0), "the labels, when nothing else"
    assert content_widths(["sev"], [4], [row("1", "日本")]) == (4,), "wide characters count 2"


def test_in_a_narrow_table_the_widest_column_gives_way_to_the_rest() -> None:
    rows = [row("1", f"{TIMES}12 since 22:08:30", "reverse-shell-from-web-server", "title")]
    labels, limits = ["seen", "rule", "title"], [24, 32, 0]
    assert content_widths(labels, limits, rows, room=200) == (18, 29, 0)
    # 60 cells: the title keeps 16; the rule id, widest, gives way first
    assert content_widths(labels, limits, rows, room=60) == (18, 26, 0)
    assert content_widths(labels, limits, rows, room=10) == (4, 4, 0), "never below the label"


@given(
    st.lists(
        st.lists(st.text(alphabet="ab 1日é\u0301x", max_size=30), min_size=0, max_size=5),
        max_size=20,
    )
)
def test_widths_are_the_widest_cell_of_each_column_in_cells(cells: list[list[str]]) -> None:
    """Measured a column at a time, ASCII by length: the same as measuring every cell."""
    from rich.cells import cell_len

    labels, limits = ["a", "bb", "ccc", "d", "e"], [4, 10, 0, 30, 8]
    rows = [RowView(str(i), tuple(Cell(text) for text in texts)) for i, texts in enumerate(cells)]
    expected = [
        cell_len(label) if limit else 0 for label, limit in zip(labels, limits, strict=True)
    ]
    for texts in cells:
        for index, text in enumerate(texts):
            if limits[index]:
                expected[index] = min(limits[index], max(expected[index], cell_len(text)))
    assert content_widths(labels, limits, rows) == tuple(expected)
