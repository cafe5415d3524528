"""Model: a registered model's line of versions (issue 14). The head says which version to deploy and what it
carries; the table lists every version (what it was built from, the requests it carries, its weights hash, its
regression check against every carried request, its control figures against v0, withdrawn ones dimmed); the
chart shows the control figures against v0 across the line. Enter opens the request whose job made a version."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from console.messages import EngineUpdate
from console.widgets.format import number, verdict, when
from console.widgets.keybar import KeyBar
from console.widgets.lineage import ControlChart, ratio
from console.widgets.table import KeyedTable
from screens.base import EngineScreen


class ModelScreen(EngineScreen):
    KIND = "model"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="model.back"),
        Binding("enter", "open_request", "Open request", tooltip="open the request whose job made the version",
                id="model.open"),
        Binding("r", "refresh", "Refresh", tooltip="reload the line from the engine", id="model.refresh"),
    ]

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.line: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("", id="model-head")
        yield KeyedTable([("version", "ver"), ("created", "created (UTC)"), ("from", "built from"),
                          ("requests", "carries"), ("sha", "sha256"), ("regression", "regression"),
                          ("leaks", "leaks"), ("retain", "R-L ×v0"), ("ppl", "ppl ×v0"), ("status", "status")],
                         id="versions", classes="panel")
        yield ControlChart(id="control-chart", classes="panel")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = f"model {self.model}"
        self.query_one("#versions").border_title = "Versions"
        self.query_one("#control-chart").border_title = "Control"
        self.query_one("#versions").focus()

    async def load(self) -> None:
        self.line = await self.app.client.model_versions(self.model)
        self.render_head()
        self.render_versions()
        self.query_one(ControlChart).show(self.line)

    def wants(self, update: EngineUpdate) -> bool:
        # Accepting a job (a new version) and a rollback both publish their requests.
        return update.reconnected or bool(update.requests)

    def render_head(self) -> None:
        line = self.line
        now = next(v for v in line["versions"] if v["number"] == line["current"])
        head = Text()
        head.append(f"Model {line['model']} · current version v{now['number']}", style="bold")
        head.append(f" · deploy: expunge export {line['model']}@v{now['number']} --out DIR\n")
        carried = now["request_ids"]
        head.append("carries: " + (", ".join(f"request {r}" for r in carried) if carried else "no erasure (the base)"))
        rows = (now.get("regression") or {}).get("requests") or {}
        if rows:
            leaking = [r for r in rows.values() if not r["passed"]]
            head.append(" · regression at its accept: ")
            head.append_text(verdict(now["verdict"]))
            head.append(" — " + ("none leaks: " if not leaking else "LEAKING: ")
                        + ", ".join(f"{r['request_id']} {r['leaked']}/{r['n']}" for r in rows.values()))
        skipped = (now.get("regression") or {}).get("skipped") or []
        if skipped:
            head.append(f"\nnot checked (regression data purged): requests {', '.join(map(str, skipped))}",
                        style="dim")
        self.query_one("#model-head", Static).update(head)

    def render_versions(self) -> None:
        rows = []
        for v in reversed(self.line["versions"]):
            dim = v["status"] != "active"
            name = f"v{v['number']}" + ("*" if v.get("current") else "")
            built = "registered" if v["number"] == 0 else f"v{v['parent']} + job {v['job_id']}"
            regression = (v.get("regression") or {}).get("requests") or {}
            leaks = ", ".join(f"{r['leaked']}/{r['n']}" for r in regression.values()) or "—"
            status = v["status"] + (f": {v['withdrawn_reason']}" if v.get("withdrawn_reason") else "")
            cells = [name, when(v["created_at"]), built, ", ".join(map(str, v["request_ids"])) or "—",
                     v["sha256"][:10] + "…", verdict(v["verdict"]), leaks,
                     number(ratio(v, "retain_rouge_l")) if v["number"] else "1.000",
                     number(ratio(v, "general_ppl")) if v["number"] else "1.000", status]
            rows.append((str(v["number"]), [Text(c, style="dim") if dim and isinstance(c, str) else c
                                            for c in cells]))
        self.query_one("#versions", KeyedTable).sync(rows)

    def selected(self) -> dict | None:
        key = self.query_one("#versions", KeyedTable).selected_key
        if self.line is None or key is None:
            return None
        return next((v for v in self.line["versions"] if str(v["number"]) == key), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_request()

    def action_open_request(self) -> None:
        v = self.selected()
        if v is None or not v["request_ids"]:
            self.notify("v0 is the registered base: no request made it")
            return
        self.app.open_request(v["request_ids"][-1])

    def action_refresh(self) -> None:
        self.reload()
