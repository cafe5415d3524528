"""A DataTable whose rows are diffed by key: cells change in place, the cursor stays on its row."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class KeyedTable(DataTable):
    """`sync(rows)` makes the table show exactly these rows, in this order, touching only what changed."""

    DEFAULT_CSS = """
    KeyedTable { height: auto; max-height: 100%; }
    """
    BINDINGS = [Binding("enter", "select_cursor", "Open", id="table.open")]

    def __init__(self, columns: Sequence[tuple[str, str]], **kwargs) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)
        self._columns_spec = list(columns)  # (key, label)
        self._values: dict[str, list] = {}
        self._order: list[str] = []
        self._measured: list[int] | None = None  # column widths the render caches were last cleared for

    def on_mount(self) -> None:
        for key, label in self._columns_spec:
            # A Text label: DataTable reads a str as markup, whose emoji table costs the first paint an import.
            self.add_column(Text(label), key=key)

    def _update_dimensions(self, new_rows) -> None:
        """Textual sizes new rows' columns on the table's next idle (`_on_idle` -> here), but caches every
        rendered cell, row and line under `_update_count`, which this does not change. A frame painted between
        `add_row` and that idle (a busy event loop: a loaded machine, a slow terminal) caches the rows cut to
        the old widths, often the header labels, and later frames reuse them: the columns stay squeezed
        until the cursor moves or the terminal resizes. So when the column widths change, the caches go."""
        super()._update_dimensions(new_rows)
        widths = [column.get_render_width(self) for column in self.ordered_columns]
        if widths != self._measured:
            self._measured = widths
            self._clear_caches()  # and refresh

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
        except Exception:  # an empty table or a cursor past the end
            return None

    def sync(self, rows: Sequence[tuple[str, Sequence]]) -> None:
        keys = [k for k, _ in rows]
        if keys != self._order:
            current = self.selected_key
            self.clear()
            self._values = {}
            for key, cells in rows:
                self.add_row(*cells, key=key)
                self._values[key] = list(cells)
            self._order = keys
            if current in self._values:
                self.move_cursor(row=self.get_row_index(current), animate=False)
            return
        cols = [k for k, _ in self._columns_spec]
        for key, cells in rows:
            old = self._values.get(key)
            for i, value in enumerate(cells):
                if old is None or i >= len(old) or _changed(old[i], value):
                    try:
                        self.update_cell(key, cols[i], value, update_width=True)
                    except RowDoesNotExist:
                        pass
            self._values[key] = list(cells)

    def move_to_key(self, key: str) -> None:
        if key in self._values:
            self.move_cursor(row=self.get_row_index(key), animate=False)


def _changed(a, b) -> bool:
    if type(a) is not type(b):
        return True
    if hasattr(a, "plain") and hasattr(a, "style"):
        return a.plain != b.plain or str(a.style) != str(b.style) or a.spans != b.spans
    return a != b
