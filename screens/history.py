"""History: every job and every request, a page at a time (the engine filters and pages; the console never
loads every row). Filter by status, verdict, model, method and date; search by title or reference; sort;
open any row; mark two jobs and compare them. Filters are one line of `key:value` tokens and free words
(`status:failed method:rmu since:2026-03-01 alma`), completed as typed, plus two date fields (since, until).
Sorting and date windows are the engine's (`sort`, `order`, `since`, `until` on /jobs and /requests): `s` cycles
the sort column, `o` reverses it, and a click on a column header sorts by that column (again: reversed)."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Header, Input, Label

from console.messages import EngineUpdate
from console.widgets.format import due, plain, status, style, verdict, when
from console.widgets.history_filter import HINT, FilterSuggester, Query, parse_date
from console.widgets.keybar import KeyBar
from console.widgets.table import KeyedTable
from screens.base import EngineScreen, steady_cursors

PAGE = 100
DEBOUNCE = 0.3
# The sort columns `s` cycles through, per view (the engine takes these names; see engine.control.service). "id" is the
# creation order (ids grow with creation time) and the cheapest for the engine: the table's own key.
SORTS = {"jobs": ("id", "updated", "status", "verdict", "model", "method", "title"),
         "requests": ("id", "updated", "status", "verdict", "model", "title", "due")}
# A click on a column header sorts by it: column key -> sort key.
HEADER_SORTS = {"jobs": {"id": "id", "title": "title", "tier": "tier", "method": "method",
                         "model": "model", "status": "status", "verdict": "verdict", "created": "created"},
                "requests": {"id": "id", "title": "title", "reference": "reference", "intention": "intention",
                             "model": "model", "tier": "tier", "status": "status", "verdict": "verdict",
                             "created": "created", "due": "due"}}


class HistoryScreen(EngineScreen):
    KIND = "history"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="history.back"),
        Binding("enter", "open", "Open", id="history.open"),
        Binding("v", "toggle_view", "Jobs/reqs", tooltip="switch between jobs and requests", id="history.view"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column: newest, updated, status, verdict, model, "
                "method, title, due (or click a column header)", id="history.sort"),
        Binding("o", "reverse", "Reverse", tooltip="reverse the sort order", id="history.reverse"),
        Binding("right_square_bracket", "page(1)", "Next", key_display="]", tooltip="next page of 100", id="history.next_page"),
        Binding("left_square_bracket", "page(-1)", "Prev", key_display="[", tooltip="previous page", id="history.prev_page"),
        Binding("space", "mark", "Mark", tooltip="mark a job for compare (two at most)", id="history.mark"),
        Binding("c", "compare", "Compare", tooltip="compare the two marked jobs", id="history.compare"),
        Binding("slash", "search", "Filter", key_display="/", tooltip="filter: words, status:, verdict:, model:, method:, since:, until:", id="history.search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view = "jobs"
        self.sort = "id"  # newest first
        self.order = "desc"
        self.page = 0
        self.total = 0
        self.marked: list[int] = []
        self.items: list[dict] = []
        self._debounce = None
        self._options_loaded = False
        self.models: list[str] = []
        self.methods: list[str] = []
        self.errors: list[str] = []
        self._to_top = False  # after a sort, a page turn or a new filter the cursor goes to the first row

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="filter: words · status: · verdict: · model: · method:",
                        id="filter", compact=True, suggester=FilterSuggester(self))
            yield Input(placeholder="since", id="since", compact=True, max_length=10, restrict=r"[0-9-]*",
                        tooltip="created on or after this day (YYYY-MM-DD, UTC)")
            yield Input(placeholder="until", id="until", compact=True, max_length=10, restrict=r"[0-9-]*",
                        tooltip="created on or before this day (YYYY-MM-DD, UTC)")
        yield Label("", id="history-info")
        self.wide = self.app.size.width >= 100  # the model column only where it fits
        model = [("model", "model")] if self.wide else []
        yield KeyedTable([("id", "job"), ("request", "req"), ("title", "title"), ("tier", "tier"),
                          ("method", "method"), *model, ("status", "status"), ("verdict", "verdict"),
                          ("created", "created (UTC)"), ("mark", "")], id="jobs-table")
        intention = [("intention", "intention")] if self.wide else []
        tier = [("tier", "tier")] if self.wide else []  # narrow: room for the days left instead
        yield KeyedTable([("id", "req"), ("title", "title"), ("reference", "reference"), *intention,
                          *model, *tier, ("status", "status"), ("verdict", "verdict"), ("due", "due"),
                          ("created", "created (UTC)")], id="requests-table")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = "history"
        steady_cursors(self)
        self.query_one("#requests-table").display = False
        self.query_one("#jobs-table").focus()

    # ------------------------------------------------------------ data

    def parse_filter(self) -> Query:
        q = Query.parse(self.query_one("#filter", Input).value, self.view, self.models, self.methods)
        for name in ("since", "until"):  # the date fields, unless the filter line names that bound itself
            text = self.query_one(f"#{name}", Input).value.strip()
            if not text or getattr(q, name) is not None:
                continue
            day = parse_date(text)
            if day is None:
                q.errors.append(f"{name}: a date YYYY-MM-DD")
            else:
                setattr(q, name, day)
        if q.since and q.until and q.until < q.since:
            q.errors.append("until: before since")
            q.until = None
        return q

    def filters(self, q: Query) -> dict:
        window = {"since": q.since.isoformat() if q.since else None,
                  "until": q.until.isoformat() if q.until else None,  # the engine includes that whole day
                  "sort": self.sort, "order": self.order}
        if self.view == "requests":
            return {"status": q.status, "q": q.search, **window}
        return {"status": q.status, "verdict": q.verdict, "model": q.model, "method": q.method, "q": q.search,
                **window}

    async def load(self) -> None:
        client = self.app.client
        if not self._options_loaded:
            models, methods = await asyncio.gather(self.app.cached("models"), self.app.cached("methods"))
            self.models = [m["name"] for m in models]
            self.methods = [m["name"] for m in methods]
            self._options_loaded = True
        q = self.parse_filter()
        self.errors = q.errors
        filters = self.filters(q)
        page = client.requests if self.view == "requests" else client.jobs
        res = await page(limit=PAGE, offset=self.page * PAGE, **filters)
        self.total = res["total"]
        pages = max(1, -(-self.total // PAGE))
        if self.page > pages - 1:  # fewer rows than before (a narrower filter): the last page
            self.page = pages - 1
            res = await page(limit=PAGE, offset=self.page * PAGE, **filters)
            self.total = res["total"]
        self.items = res["items"]
        self.render_rows()

    def render_rows(self) -> None:
        info = self.query_one("#history-info", Label)
        pages = max(1, -(-self.total // PAGE))
        noun = "job" if self.view == "jobs" else "request"
        text = Text(f"{self.total:,} {noun}{'s' if self.total != 1 else ''}", style="bold")
        text.append(f" · page {self.page + 1}/{pages}")
        text.append(" · " + self.sort_text())
        if self.view == "jobs":
            if self.marked:
                text.append(f" · marked: {', '.join(str(m) for m in self.marked)}")
        if self.errors:
            text.append(" · " + "; ".join(self.errors), style=style("bold red"))
        elif not self.query_one("#filter", Input).value:
            text.append(" · / to filter", style="dim")
        info.update(text)
        if self.view == "jobs":
            width = max(10, min(60, self.app.size.width - (80 if self.wide else 70)))
            rows = [(str(j["id"]), [str(j["id"]), str(j["request_id"]), plain(_cut(j.get("request_title"), width)),
                                    str(j["tier"]), j["method"], *([plain(j.get("model") or "")] if self.wide else []),
                                    status(j["status"]), verdict(j["verdict"]), when(j["created_at"], not self.wide),
                                    Text("●" if j["id"] in self.marked else "", style="bold")])
                    for j in self.items]
            self._sync("#jobs-table", rows)
        else:
            width = max(10, min(60, self.app.size.width - (108 if self.wide else 78)))
            rows = [(str(r["id"]), [str(r["id"]), plain(_cut(r["title"], width)), plain(_cut(r["reference"], 14)),
                                    *([r["intention"], plain(r["model"]), str(r["current_tier"])] if self.wide else []),
                                    status(r["status"]), verdict(r["verdict"]), due(r),
                                    when(r["created_at"], not self.wide)])
                    for r in self.items]
            self._sync("#requests-table", rows)

    def sort_text(self) -> str:
        if self.sort in ("created", "updated", "id"):
            when_ = {"created": "", "updated": "updated ", "id": ""}[self.sort]
            return f"{'newest' if self.order == 'desc' else 'oldest'} {when_}first"
        return f"by {self.sort} {'↓ (descending)' if self.order == 'desc' else '↑'}"

    def _sync(self, selector: str, rows) -> None:
        table = self.query_one(selector, KeyedTable)
        table.sync(rows)
        if self._to_top and rows:
            table.move_cursor(row=0, animate=False)
        self._to_top = False

    def wants(self, update: EngineUpdate) -> bool:
        return bool(update.jobs or update.requests)

    def apply(self, update: EngineUpdate) -> None:
        # Statuses and verdicts change in place; a new job shows on the first page.
        shown = {j["id"] for j in self.items} if self.view == "jobs" else set()
        if self.view == "jobs" and update.jobs and set(update.jobs) <= shown:
            self.items = [{**j, **update.jobs.get(j["id"], {})} for j in self.items]
            self.render_rows()
        elif update.jobs or update.requests:
            self.reload()

    # ------------------------------------------------------------ filters

    @on(Input.Changed, "#filter, #since, #until")
    def filter_changed(self, event: Input.Changed) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE, self._refilter)

    @on(Input.Submitted, "#filter, #since, #until")
    def filter_submitted(self, event: Input.Submitted) -> None:
        self.query_one(self._table_id()).focus()

    def _refilter(self) -> None:
        self.page = 0
        self._to_top = True
        self.reload()

    def _table_id(self) -> str:
        return "#jobs-table" if self.view == "jobs" else "#requests-table"

    # ------------------------------------------------------------ actions

    def action_search(self) -> None:
        self.query_one("#filter", Input).focus()
        self.notify(HINT, title="filter syntax", timeout=8)

    def action_toggle_view(self) -> None:
        self.view = "requests" if self.view == "jobs" else "jobs"
        jobs = self.view == "jobs"
        self.query_one("#jobs-table").display = jobs
        self.query_one("#requests-table").display = not jobs
        self.query_one(self._table_id()).focus()
        self.sort, self.order = "id", "desc"  # each view starts newest first
        self.page = 0
        self.items = []
        self.reload()

    def action_sort(self) -> None:
        """The next sort column; a time column starts newest first, any other A to Z."""
        keys = SORTS[self.view]
        new = keys[(keys.index(self.sort) + 1) % len(keys)] if self.sort in keys else keys[0]
        self.set_sort(new, "desc" if new in ("id", "created", "updated") else "asc")

    def action_reverse(self) -> None:
        self.set_sort(self.sort, "asc" if self.order == "desc" else "desc")

    def set_sort(self, sort: str, order: str) -> None:
        self.sort, self.order = sort, order
        self.page = 0
        self._to_top = True
        self.reload()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        sort = HEADER_SORTS[self.view].get(event.column_key.value)
        if sort is None:
            return
        if sort == self.sort:
            self.action_reverse()
        else:
            self.set_sort(sort, "desc" if sort in ("created", "updated", "id") else "asc")

    def action_page(self, step: int) -> None:
        pages = max(1, -(-self.total // PAGE))
        new = min(max(0, self.page + step), pages - 1)
        if new != self.page:
            self.page = new
            self._to_top = True
            self.reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        key = self.query_one(self._table_id(), KeyedTable).selected_key
        if key is None:
            return
        if self.view == "jobs":
            self.app.open_job(int(key))
        else:
            self.app.open_request(int(key))

    def action_mark(self) -> None:
        if self.view != "jobs":
            return
        key = self.query_one("#jobs-table", KeyedTable).selected_key
        if key is None:
            return
        job_id = int(key)
        if job_id in self.marked:
            self.marked.remove(job_id)
        else:
            self.marked = (self.marked + [job_id])[-2:]
        self.render_rows()

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("mark two jobs with space, then compare")
            return
        self.app.open_compare(*self.marked)


def _cut(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"
