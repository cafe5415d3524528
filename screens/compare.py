"""Compare: two jobs side by side — hyperparameters and every metric, with the difference."""

from __future__ import annotations

import asyncio
import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Static

from console.messages import EngineUpdate
from console.widgets.format import delta, number, passed, status, style, verdict
from console.widgets.keybar import KeyBar
from console.widgets.table import KeyedTable
from engine.schema.status import STAGES
from screens.base import EngineScreen

STAGE_SHORT = {"unit": "unit", "control": "control", "reconstruction": "recon."}


class CompareScreen(EngineScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="compare.back"),
        Binding("s", "swap", "Swap", tooltip="swap A and B", id="compare.swap"),
        Binding("a", "open(0)", "Open A", id="compare.open_a"),
        Binding("b", "open(1)", "Open B", id="compare.open_b"),
    ]

    def __init__(self, job_a: int, job_b: int) -> None:
        super().__init__()
        self.ids = [job_a, job_b]
        self.details: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("", id="compare-head")
        yield KeyedTable([("name", "hyperparameter"), ("a", "A"), ("b", "B"), ("diff", "")], id="compare-hyper",
                         classes="panel", cursor_type="none")
        yield KeyedTable([("stage", "stage"), ("metric", "metric"), ("before", "before"), ("a", "A after"),
                          ("b", "B after"), ("diff", "B − A"), ("va", "A"), ("vb", "B")], id="compare-metrics",
                         classes="panel")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = f"compare jobs {self.ids[0]} and {self.ids[1]}"
        self.query_one("#compare-hyper").border_title = "Hyperparameters"
        self.query_one("#compare-metrics").border_title = "Metrics"
        self.query_one("#compare-metrics").focus()

    async def load(self) -> None:
        client = self.app.client
        self.details = list(await asyncio.gather(*(client.job(i) for i in self.ids)))
        self.render_all()

    def wants(self, update: EngineUpdate) -> bool:
        return any(i in update.jobs for i in self.ids)

    def render_all(self) -> None:
        a, b = (d["job"] for d in self.details)
        head = Text()
        for label, job in (("A", a), ("B", b)):
            head.append(f"{label}  job {job['id']} · tier {job['tier']} {job['method']} · ", style="")
            head.append_text(status(job["status"]))
            head.append(" · verdict ")
            head.append_text(verdict(job["verdict"]))
            head.append(f" · request {job['request_id']} ")
            head.append(f"«{job.get('request_title') or ''}»\n")
        if a["request_id"] != b["request_id"]:
            head.append("different requests: 'before' differs too, each job's own is used for B − A", style=style("yellow"))
        self.query_one("#compare-head", Static).update(head)
        self.render_hyper(a, b)
        self.render_metrics()

    def render_hyper(self, a: dict, b: dict) -> None:
        rows = [("method", ["method", a["method"], b["method"],
                            Text("≠", style=style("bold yellow")) if a["method"] != b["method"] else ""])]
        for key in sorted(set(a["hyper"]) | set(b["hyper"])):
            va, vb = a["hyper"].get(key), b["hyper"].get(key)
            if isinstance(va, int | float) and isinstance(vb, int | float) and not isinstance(va, bool) \
                    and not isinstance(vb, bool):
                diff = delta(va, vb) if va != vb else Text("")
            else:
                diff = Text("≠", style=style("bold yellow")) if va != vb else Text("")
            rows.append((key, [key, _show(va), _show(vb), diff]))
        self.query_one("#compare-hyper", KeyedTable).sync(rows)

    def render_metrics(self) -> None:
        da, db = self.details
        stages_a = {s["stage"]: s for s in da["stages"]}
        stages_b = {s["stage"]: s for s in db["stages"]}
        rows = [("verdict", [Text("job", style="bold"), "verdict", "", "", "", "",
                             verdict(da["job"]["verdict"], True), verdict(db["job"]["verdict"], True)])]
        order = [s for s in STAGES if s in stages_a or s in stages_b]
        for stage in order:
            sa, sb = stages_a.get(stage, {}), stages_b.get(stage, {})
            rows.append((f"{stage}/", [Text(STAGE_SHORT[stage], style="bold"), Text("(stage)", style="italic"),
                                       "", "", "", "", verdict(sa.get("verdict"), True),
                                       verdict(sb.get("verdict"), True)]))
            ma = {m["name"]: m for m in sa.get("metrics", [])}
            mb = {m["name"]: m for m in sb.get("metrics", [])}
            for name in list(ma) + [n for n in mb if n not in ma]:
                x, y = ma.get(name, {}), mb.get(name, {})
                before = x.get("before") if x else y.get("before")
                rows.append((f"{stage}/{name}", ["", name, number(before), number(x.get("after")),
                                                 number(y.get("after")), delta(x.get("after"), y.get("after")),
                                                 passed(x.get("passed"), True) if x else Text("—"),
                                                 passed(y.get("passed"), True) if y else Text("—")]))
        self.query_one("#compare-metrics", KeyedTable).sync(rows)

    def action_swap(self) -> None:
        self.ids.reverse()
        self.details.reverse()
        self.sub_title = f"compare jobs {self.ids[0]} and {self.ids[1]}"
        if self.details:
            self.render_all()

    def action_open(self, index: int) -> None:
        self.app.open_job(self.ids[index])


def _show(value) -> str:
    if value is None:
        return "—"
    return json.dumps(value) if not isinstance(value, str) else value
