"""Job (live): phase, progress bar with ETA, the loss curve, the stage checklist filling in as stages finish,
the metric diff table (before, after, Δ, threshold, verdict) updated in place, the locate per-layer chart and
the evidence viewer."""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Header, Static, TabbedContent, TabPane

from console.messages import EngineUpdate
from console.widgets.charts import LocateChart, LossChart
from console.widgets.checklist import StageChecklist
from console.widgets.evidence import EvidenceViewer
from console.widgets.format import (
    delta,
    duration,
    number,
    passed,
    status,
    style,
    verdict,
    when,
    with_interval,
)
from console.widgets.keybar import KeyBar
from console.widgets.progress import JobProgressView
from console.widgets.table import KeyedTable
from engine.schema.status import STAGES, TERMINAL
from screens.base import EngineScreen

STAGE_SHORT = {"unit": "unit", "control": "control", "reconstruction": "recon."}
TABS = ("overview", "metrics", "locate", "evidence", "details")


def short_rule(rule: str | None) -> str:
    if not rule:
        return "—"
    text = rule.replace("after <= ", "≤ ").replace("after >= ", "≥ ").replace(" x before", "×before")
    return text.replace(" (white-box: not judged for suppress)", " (not judged)")


def policy_rule_text(rule: dict) -> str:
    if rule.get("rule") == "band" or rule.get("judge_on", "value") != "value":
        from engine.schema.policy import rule_text

        return rule_text(rule)  # 'within [0.25, 0.75]', 'upper 95% ≤ 0.05'
    return short_rule({"max": "after <= {t}", "min": "after >= {t}", "ratio_max": "after <= {t} x before",
                       "ratio_min": "after >= {t} x before"}.get(rule.get("rule"), "{t}").format(t=rule.get("threshold")))


class JobScreen(EngineScreen):
    ROLE_OF_ACTION = {"cancel": "operator", "resume": "operator"}
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="job.back"),
        Binding("t", "next_tab", "Tab", tooltip="next tab: overview, metrics, locate, evidence, details", id="job.next_tab"),
        Binding("o", "open_request", "Request", tooltip="open the job's request", id="job.request"),
        Binding("x", "cancel", "Cancel", id="job.cancel"),
        Binding("R", "resume", "Resume", key_display="R", tooltip="queue an interrupted or failed job again", id="job.resume"),
        Binding("l", "leaks_only", "Leaks", tooltip="evidence: only the prompts that still leak after the job", id="job.leaks"),
    ]

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.detail: dict | None = None
        self.policy: dict | None = None
        self.request: dict | None = None
        self._tune_step: int | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("", id="job-head")
        yield JobProgressView(id="job-progress")
        with TabbedContent(id="job-tabs", initial="overview"):
            with TabPane("Overview", id="overview"), Horizontal(id="overview-body"):
                yield StageChecklist(id="checklist")
                yield LossChart(id="loss")
            with TabPane("Metrics", id="metrics"):
                yield KeyedTable([("stage", "stage"), ("metric", "metric"), ("before", "before"),
                                  ("after", "after"), ("delta", "Δ"), ("threshold", "threshold"),
                                  ("verdict", "verdict"), ("note", "note")], id="metric-table")
            with TabPane("Locate", id="locate"), VerticalScroll():
                yield LocateChart(id="locate-chart")
            with TabPane("Evidence", id="evidence"):
                yield EvidenceViewer(id="evidence-viewer")
            with TabPane("Details", id="details"), VerticalScroll():
                yield Static("", id="job-details")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = f"job {self.job_id}"

    # ------------------------------------------------------------ data

    async def load(self) -> None:
        client = self.app.client
        detail = await client.job(self.job_id)
        job = detail["job"]
        if self.request is None or self.request.get("id") != job["request_id"]:
            self.request = (await client.request(job["request_id"]))["request"]
        if self.policy is None:
            policies = await self.app.cached("policies")
            self.policy = next((p for p in policies if p.get("name") == self.request.get("policy")), {})
        self.detail = detail
        self.render_all()

    def render_all(self) -> None:
        d = self.detail
        job = d["job"]
        self.render_head()
        self.render_progress()
        self.query_one(StageChecklist).reset(job, d["stages"])
        losses = (d.get("progress") or {}).get("losses") or []
        live = self.app.live.get(self.job_id)
        self.query_one(LossChart).set_points(
            losses, empty_text=("no training loss: a tier 1 guard does not train" if job["tier"] == 1
                                else "no loss yet" if job["status"] in ("queued", "running") else "no loss recorded"))
        if live and job["status"] == "running" and live.loss is not None:
            self.query_one(LossChart).add_points([(live.step, live.loss)])
        self.render_metrics()
        self.render_trials()
        self.query_one(LocateChart).show((d.get("result") or {}).get("locate"), d.get("result"))
        self.query_one(EvidenceViewer).show(d.get("evidence") or [])
        self.render_details()

    def render_head(self) -> None:
        job = self.detail["job"]
        t = Text()
        t.append(f"Job {job['id']} · tier {job['tier']} {job['method']}", style="bold")
        t.append(f" · request {job['request_id']} ")
        t.append(f"«{job.get('request_title') or ''}»")
        t.append(f" · model {job.get('model') or '—'}\n")
        t.append("status ")
        t.append_text(status(job["status"]))
        t.append(" · verdict ")
        t.append_text(verdict(job["verdict"]))
        if job.get("device"):
            t.append(f" · {job['device']}")
        if job.get("executor") not in (None, "local"):  # where it ran: a Ray node
            t.append(f" · {job['executor']} node {job.get('node') or '?'}")
        if job.get("error"):
            t.append("\n" + job["error"].strip().splitlines()[0][:300], style=style("red"))
        self.query_one("#job-head", Static).update(t)

    def render_progress(self) -> None:
        job = self.detail["job"]
        live = self.app.live.get(self.job_id) if job["status"] == "running" else None
        view = self.query_one(JobProgressView)
        if live:
            view.show(live.phase, live.step, live.total, live.loss, live.eta, job["status"])
        else:
            view.show(job["phase"], job["step"], job["total"], job["loss"], job["eta_s"], job["status"])

    def render_metrics(self) -> None:
        rows = []
        stages = self.detail["stages"]
        if stages:
            for st in stages:
                for i, m in enumerate(st["metrics"]):
                    rows.append((f"{st['stage']}/{m['name']}", [
                        Text(STAGE_SHORT.get(st["stage"], st["stage"]) if i == 0 else "", style="bold"),
                        m["name"], number(m["before"]), with_interval(m), delta(m["before"], m["after"]),
                        short_rule(m["rule"]), passed(m["passed"]), m.get("note") or ""]))
        elif self.policy:
            # Before results arrive: the policy's metrics, pending; the same keys are filled in place later.
            for stage in STAGES:
                for i, (name, rule) in enumerate((self.policy.get(stage) or {}).items()):
                    rows.append((f"{stage}/{name}", [
                        Text(STAGE_SHORT[stage] if i == 0 else "", style="bold"), name, "…", "…", Text("—"),
                        policy_rule_text(rule), Text("pending", style="dim"), ""]))
        self.query_one("#metric-table", KeyedTable).sync(rows)

    def render_trials(self) -> None:
        """A tuned job gets a Trials tab (added on first sight: an untuned job's screen is as it was)."""
        if not self.detail["job"].get("tune"):
            return
        from console.widgets.trials import TrialsView

        views = self.query(TrialsView)
        if views:
            views.first().show(self.detail.get("trials") or [], self.detail.get("result"))
            return
        tabs = self.query_one(TabbedContent)
        view = TrialsView(id="trials-view")
        done = tabs.add_pane(TabPane("Trials", view, id="trials"))
        detail = self.detail

        async def fill() -> None:
            await done
            view.show(detail.get("trials") or [], detail.get("result"))

        self.run_worker(fill, group="trials")

    def render_details(self) -> None:
        d = self.detail
        job = d["job"]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row("created", when(job["created_at"]))
        grid.add_row("started", when(job["started_at"]))
        grid.add_row("finished", when(job["finished_at"]))
        grid.add_row("device", job.get("device") or "—")
        if job.get("executor") not in (None, "local"):  # local: the engine's own host
            grid.add_row("ran on", f"{job['node']} ({job.get('executor') or 'local'})")
        tuned = ((d.get("result") or {}).get("tuning") or {}).get("hyper")
        if tuned:  # a tuned job ran the winning trial's hyperparameters, not the ones it was queued with
            grid.add_row("hyperparameters", f"the winner's (trial {d['result']['tuning'].get('winner')})")
        for key, value in sorted((tuned or job["hyper"]).items()):
            grid.add_row(f"  {key}", json.dumps(value))
        for key, value in ((d.get("result") or {}).get("timings") or {}).items():
            grid.add_row(f"  {key}", duration(value) if isinstance(value, int | float) else str(value))
        for art in d.get("artifacts") or []:
            grid.add_row("artifact", Text(f"{art['kind']} {art['path']}\nsha256 {art['sha256']}"))
        self.query_one("#job-details", Static).update(grid)

    # ------------------------------------------------------------ live

    def wants(self, update: EngineUpdate) -> bool:
        return self.job_id in update.jobs or self.job_id in update.progress

    def apply(self, update: EngineUpdate) -> None:
        if self.detail is None:
            return
        job = self.detail["job"]
        if self.job_id in update.jobs:
            new = update.jobs[self.job_id]
            old_status = job["status"]
            if new:
                self.detail["job"] = {**job, **new}
            if new.get("status") in TERMINAL or new.get("status") != old_status:
                self.reload()  # stages, metrics, evidence and locate arrive with the result
                return
            self.render_head()
        p = update.progress.get(self.job_id)
        if p is not None and p.phase == "tune" and p.step != self._tune_step:
            self._tune_step = p.step  # a trial ended and the next began: its row is in the store now
            self.reload()
        if p is not None:
            live = self.app.live.get(self.job_id, p)  # accumulated: a verify event carries only its phase
            self.query_one(JobProgressView).show(live.phase, live.step, live.total, live.loss, live.eta, "running")
            self.query_one(StageChecklist).see(p.phases or [p.phase], p.total)
            self.query_one(LossChart).add_points(p.points)

    # ------------------------------------------------------------ actions

    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        order = TABS + (("trials",) if self.query("#trials") else ())
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)]

    def action_open_request(self) -> None:
        if self.detail:
            self.app.open_request(self.detail["job"]["request_id"])

    def action_leaks_only(self) -> None:
        only = self.query_one(EvidenceViewer).toggle_leaks()
        self.query_one(TabbedContent).active = "evidence"
        self.notify("evidence: only the prompts that still leak" if only else "evidence: every prompt")

    def action_cancel(self) -> None:
        from screens.confirm import ConfirmScreen

        if self.detail is None or self.detail["job"]["status"] not in ("queued", "running"):
            self.notify("only a queued or running job can be cancelled")
            return
        job = self.detail["job"]

        async def done(yes: bool | None) -> None:
            if yes and await self.app.api(self.app.client.cancel, self.job_id):
                self.notify(f"job {self.job_id} cancelled")
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Cancel job {self.job_id} (tier {job['tier']} {job['method']})?",
                                           "A running job's worker is stopped; its progress is lost.",
                                           yes="Cancel job", no="Keep it"), done)

    def action_resume(self) -> None:
        if self.detail is None or self.detail["job"]["status"] not in ("interrupted", "failed"):
            self.notify("only an interrupted or failed job can be resumed")
            return

        async def go() -> None:
            if await self.app.api(self.app.client.resume, self.job_id):
                self.notify(f"job {self.job_id} queued again; it continues from its last checkpoint")
                self.reload()

        self.run_worker(go, group="action")
