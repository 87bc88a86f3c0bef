"""The row diff behind every live table: applying its operations yields exactly the wanted
rows, and it touches nothing that did not change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from daemoneye.tui.logic.cells import Cell, RowView, TableOps, diff_rows


def row(key: str, *texts: str) -> RowView:
    return RowView(key, tuple(Cell(text) for text in texts))


def apply(shown: dict[str, tuple[Cell, ...]], order: list[str],
          ops: TableOps) -> tuple[dict[str, tuple[Cell, ...]], list[str]]:
    """What a table does with the operations (the widget's sync, without Textual)."""
    shown = dict(shown)
    order = [key for key in order if key not in ops.removed]
    for key in ops.removed:
        del shown[key]
    for key, column, cell in ops.updated:
        cells = list(shown[key])
        cells[column] = cell
        shown[key] = tuple(cells)
    for added in ops.added:
        shown[added.key] = added.cells
        order.append(added.key)
    if ops.order is not None:
        order = list(ops.order)
    return shown, order


def test_unchanged_rows_produce_no_operations() -> None:
    rows = [row("1", "a", "b"), row("2", "c", "d")]
    shown = {r.key: r.cells for r in rows}
    assert diff_rows(shown, ["1", "2"], rows).empty


def test_only_changed_cells_are_updated() -> None:
    shown = {"1": row("1", "a", "b").cells, "2": row("2", "c", "d").cells}
    ops = diff_rows(shown, ["1", "2"], [row("1", "a", "B"), row("2", "c", "d")])
    assert ops.updated == [("1", 1, Cell("B"))]
    assert not ops.added and not ops.removed and ops.order is None


def test_stale_keys_are_removed_and_new_ones_added_at_the_end() -> None:
    shown = {"1": row("1", "a").cells, "2": row("2", "b").cells}
    ops = diff_rows(shown, ["1", "2"], [row("2", "b"), row("3", "c")])
    assert ops.removed == ["1"]
    assert [r.key for r in ops.added] == ["3"]
    assert ops.order is None, "appending already gives the wanted order"


def test_a_new_order_is_given_only_when_it_differs() -> None:
    shown = {"1": row("1", "a").cells, "2": row("2", "b").cells}
    ops = diff_rows(shown, ["1", "2"], [row("2", "b"), row("1", "a")])
    assert ops.order == ["2", "1"] and not ops.updated


tables = st.lists(st.tuples(st.integers(0, 30), st.text("ab", max_size=2)), max_size=25,
                  unique_by=lambda pair: pair[0])


@given(before=tables, after=tables)
def test_applying_the_diff_always_yields_the_wanted_rows(
        before: list[tuple[int, str]], after: list[tuple[int, str]]) -> None:
    old_rows = [row(str(k), text, str(k)) for k, text in before]
    new_rows = [row(str(k), text, str(k)) for k, text in after]
    shown = {r.key: r.cells for r in old_rows}
    order = [r.key for r in old_rows]
    result, result_order = apply(shown, order, diff_rows(shown, order, new_rows))
    assert result_order == [r.key for r in new_rows]
    assert result == {r.key: r.cells for r in new_rows}


@given(before=tables, after=tables)
def test_a_diff_told_what_changed_matches_the_full_diff(
        before: list[tuple[int, str]], after: list[tuple[int, str]]) -> None:
    old_rows = [row(str(k), text, str(k)) for k, text in before]
    new_rows = [row(str(k), text, str(k)) for k, text in after]
    shown = {r.key: r.cells for r in old_rows}
    order = [r.key for r in old_rows]
    new_by_key = {r.key: r for r in new_rows}
    changed: dict[str, RowView | None] = {
        key: new_by_key.get(key) for key in set(shown) | set(new_by_key)
        if shown.get(key) != (new_by_key[key].cells if key in new_by_key else None)}
    told = apply(shown, order, diff_rows(shown, order, new_rows, changed))
    assert told == apply(shown, order, diff_rows(shown, order, new_rows))
