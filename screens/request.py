"""Request: the escalation ladder (one row per tier tried, one column per stage, each cell a verdict), the
accepted job, escalate / cancel / accept / close, and the request's audit events."""

from __future__ import annotations

import json

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from console.client import EngineError
from console.messages import EngineUpdate
from console.widgets.format import due, plain, status, style, verdict, when
from console.widgets.keybar import KeyBar
from console.widgets.progress import phase_label
from console.widgets.table import KeyedTable
from engine.schema.status import STAGES, TERMINAL
from screens.base import EngineScreen


class RequestScreen(EngineScreen):
    KIND = "request"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="request.back"),
        Binding("enter", "open_job", "Open job", id="request.open"),
        Binding("e", "escalate", "Escalate", tooltip="run the next tier (confirm method and hyperparameters)", id="request.escalate"),
        Binding("x", "cancel_job", "Cancel", tooltip="cancel the selected queued or running job", id="request.cancel"),
        Binding("a", "accept", "Accept", tooltip="record the selected job as the request's result", id="request.accept"),
        Binding("C", "close_request", "Close", key_display="C", tooltip="close the request and purge its texts", id="request.close"),
        Binding("space", "mark", "Mark", tooltip="mark a job for compare", id="request.mark"),
        Binding("c", "compare", "Compare", tooltip="compare the marked jobs (or this one with the one before)", id="request.compare"),
        Binding("r", "report", "Report", tooltip="write the sign-off report (HTML or Markdown) to a file", id="request.report"),
        Binding("m", "open_model", "Model", tooltip="the model's line of versions: which one to deploy, what it carries",
                id="request.model"),
    ]

    # The role each key needs (shown disabled, with the role, to a caller without it).
    ROLE_OF_ACTION = {"escalate": "operator", "cancel_job": "operator", "accept": "approver",
                      "close_request": "approver"}

    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id
        self.detail: dict | None = None
        self.marked: list[int] = []

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("", id="request-head")
        yield KeyedTable([("tier", "tier"), ("method", "method"), ("job", "job"), ("status", "status"),
                          ("unit", "unit"), ("control", "control"), ("reconstruction", "reconstr."),
                          ("verdict", "verdict"), ("mark", "")], id="ladder", classes="panel")
        yield KeyedTable([("ts", "time (UTC)"), ("actor", "actor"), ("action", "action"), ("subject", "subject"),
                          ("detail", "detail")], id="audit", classes="panel", cursor_type="none")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = f"request {self.request_id}"
        self.query_one("#ladder").border_title = "Escalation ladder"
        self.query_one("#audit").border_title = "Audit"
        self.query_one("#ladder").focus()

    async def load(self) -> None:
        self.detail = await self.app.client.request(self.request_id)
        self.render_head()
        self.render_ladder()
        self.render_audit()

    def wants(self, update: EngineUpdate) -> bool:
        return update.touches_request(self.request_id)

    def apply(self, update: EngineUpdate) -> None:
        if self.wants(update):
            self.reload()
        elif self.detail and any(j["id"] in update.progress for j in self.detail["jobs"]):
            self.render_ladder()

    # ------------------------------------------------------------ rendering

    def render_head(self) -> None:
        r = self.detail["request"]
        head = Text()
        head.append(f"Request {r['id']} · ", style="bold")
        head.append(r["title"], style="bold")
        head.append("\n")
        head.append(f"{r['reference'] or 'no reference'} · {r['intention']} · model {r['model']} · "
                    f"policy {r['policy']} · ")
        head.append_text(status(r["status"]))
        head.append(f" · tier {r['current_tier']} · verdict ")
        head.append_text(verdict(r["verdict"]))
        head.append("\ndata: ")
        data = {d["kind"]: d for d in self.detail["data"]}
        parts = []
        for kind in ("forget", "retain", "holdout", "probes", "neighbours", "sensitive"):
            if kind in data:
                parts.append(f"{kind} {data[kind]['count']}" + (" (purged)" if data[kind]["purged"] else ""))
        head.append(" · ".join(parts))
        kept = next((j["kept"] for j in reversed(self.detail["jobs"]) if j.get("kept")), None)
        if kept:  # the latest job's: the request's own neighbours, or built from the base's own answers
            n = kept["neighbours"]
            source = "supplied" if n.get("supplied") else "built"
            head.append(f"\nneighbours ({source}) {n['built']}: {n['trained']} trained on, {n['judged']} judged · "
                        f"retain: {kept['retain']['trained']} trained on, {kept['retain']['judged']} judged")
        accepted = r["accepted_job_id"]
        head.append(" · accepted: ")
        head.append(f"job {accepted}" if accepted else "none", style="bold" if accepted else "dim")
        if accepted and r.get("accepted_by"):
            head.append(f" by {r['accepted_by']} {when(r.get('accepted_at'))}")
        # Model versions (issue 14): shown once the line has more than the base, so older views read as before.
        if r.get("base_version"):
            head.append(f" · started from {r['model']}@v{r['base_version']}")
            if kept and kept.get("line"):  # what its job kept of the erasures that version carries
                line = kept["line"]
                n = len(line["requests"])
                head.append(f" (kept its answers to {line['kept']} forget prompts of {n} earlier "
                            f"request{'s' if n != 1 else ''})")
        if r.get("landed_version") is not None:
            head.append(f" · landed in {r['model']}@v{r['landed_version']}", style="bold")
        head.append(f"\nfiled by {r.get('requested_by') or '—'} · received {(r.get('received_at') or '')[:10]} · "
                    f"{r.get('legal_basis') or 'no legal basis'} · due {(r.get('due_at') or '')[:10]} ")
        head.append_text(due(r))
        if r.get("extension_days"):
            head.append(f" (extended {r['extension_days']}d: {r.get('extension_reason')})", style="dim")
        for w in r.get("warnings") or []:
            head.append(f"\nwarning: {w}", style=style("yellow"))
        self.query_one("#request-head", Static).update(head)

    def render_ladder(self) -> None:
        rows = []
        accepted = self.detail["request"]["accepted_job_id"]
        for j in self.detail["jobs"]:
            stages = {s["stage"]: s for s in j.get("stages") or []}
            cells = []
            for name in STAGES:
                if name in stages:
                    cells.append(verdict(stages[name]["verdict"]))
                else:
                    cells.append(Text("…" if j["status"] in ("queued", "running") else "—", style="dim"))
            state = status(j["status"])
            if j["status"] == "running":
                p = self.app.live.get(j["id"])
                phase, step, total = (p.phase, p.step, p.total) if p else (j["phase"], j["step"], j["total"])
                state = Text(phase_label(phase) + (f" {step}/{total}" if total and phase == "train" else ""),
                             style=style("bold cyan"))
            mark = ("★ accepted" if j["id"] == accepted else "") + (" ●" if j["id"] in self.marked else "")
            rows.append((str(j["id"]), [str(j["tier"]), j["method"], str(j["id"]), state, *cells,
                                        verdict(j["verdict"]), Text(mark.strip(), style="bold")]))
        self.query_one("#ladder", KeyedTable).sync(rows)

    def render_audit(self) -> None:
        rows = []
        for e in reversed(self.detail["audit"]):
            detail = json.dumps(e["detail"], ensure_ascii=False, separators=(",", ":"))
            rows.append((str(e["id"]), [when(e["ts"]), e["actor"], e["action"], e["subject"],
                                        plain(detail if len(detail) <= 60 else detail[:59] + "…")]))
        self.query_one("#audit", KeyedTable).sync(rows)

    # ------------------------------------------------------------ actions

    def selected_job(self) -> dict | None:
        key = self.query_one("#ladder", KeyedTable).selected_key
        if self.detail is None or key is None:
            return None
        return next((j for j in self.detail["jobs"] if str(j["id"]) == key), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "ladder":
            self.action_open_job()

    def action_open_job(self) -> None:
        job = self.selected_job()
        if job:
            self.app.open_job(job["id"])

    def action_mark(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        if job["id"] in self.marked:
            self.marked.remove(job["id"])
        else:
            self.marked = (self.marked + [job["id"]])[-2:]
        self.render_ladder()

    def action_compare(self) -> None:
        if len(self.marked) == 2:
            self.app.open_compare(*self.marked)
            return
        job = self.selected_job()
        others = [j["id"] for j in (self.detail or {}).get("jobs", []) if job and j["id"] != job["id"]]
        if job is None or not others:
            self.notify("mark two jobs with space, then compare")
            return
        earlier = [i for i in others if i < job["id"]]
        self.app.open_compare(earlier[-1] if earlier else others[0], job["id"])

    def action_escalate(self) -> None:
        self.run_worker(self._escalate, exclusive=True, group="action")

    async def _escalate(self) -> None:
        from screens.confirm import EscalateScreen

        if self.detail is None:
            return
        req = self.detail["request"]
        if req["status"] != "open":
            self.notify("this request is closed; no job can run on it", severity="warning")
            return
        try:
            methods = await self.app.cached("methods")
        except EngineError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return

        def done(job: dict | None) -> None:
            if job:
                self.notify(f"job {job['id']} queued: tier {job['tier']} {job['method']}")
                self.reload()

        self.app.push_screen(EscalateScreen(req, methods), done)

    def action_cancel_job(self) -> None:
        from screens.confirm import ConfirmScreen

        job = self.selected_job()
        if job is None or job["status"] not in ("queued", "running"):
            self.notify("select a queued or running job to cancel")
            return

        async def done(yes: bool | None) -> None:
            if yes and await self.app.api(self.app.client.cancel, job["id"]):
                self.notify(f"job {job['id']} cancelled")
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Cancel job {job['id']} (tier {job['tier']} {job['method']})?",
                                           "A running job's worker is stopped; its progress is lost.",
                                           yes="Cancel job", no="Keep it"), done)

    def action_accept(self) -> None:
        """The accept modal: who ran the job, the policy's acceptance rule, the approver's comment."""
        job = self.selected_job()
        if job is None or job["status"] != "succeeded":
            self.notify("select a finished job to accept")
            return

        async def ask() -> None:
            from screens.accept import AcceptScreen

            policies = await self.app.api(self.app.cached, "policies") or []
            req = self.detail["request"]
            policy = next((p for p in policies if p.get("name") == req["policy"]), {})
            me = (self.app.caller or {}).get("name")

            def done(res: dict | None) -> None:
                if res:
                    self.notify(f"job {job['id']} accepted as the request's result by {res.get('accepted_by')}")
                    self.reload()

            self.app.push_screen(AcceptScreen(req, job, policy.get("approval", "one_person"), me), done)

        self.run_worker(ask, group="action")

    def action_close_request(self) -> None:
        from screens.confirm import ConfirmScreen

        if self.detail is None or self.detail["request"]["status"] == "closed":
            self.notify("the request is already closed")
            return
        active = [j for j in self.detail["jobs"] if j["status"] not in TERMINAL]
        if active:
            self.notify(f"job {active[0]['id']} is {active[0]['status']}; cancel it before closing",
                        severity="warning")
            return

        async def done(yes: bool | None) -> None:
            if yes and await self.app.api(self.app.client.close_request, self.request_id):
                self.notify(f"request {self.request_id} closed; its texts are purged")
                self.reload()

        self.app.push_screen(ConfirmScreen(
            f"Close request {self.request_id}?",
            "Its forget, retain and other texts are purged for good; hashes, metrics and masked evidence are "
            "kept. No job can run on it afterwards.", yes="Close and purge", no="Keep open"), done)

    def action_open_model(self) -> None:
        if self.detail is not None:
            self.app.open_model(self.detail["request"]["model"])

    def action_report(self) -> None:
        """Ask where to write the sign-off report, then have the engine render it and write it off the UI."""
        from screens.report import ReportScreen

        if self.detail is None:
            self.notify("the request has not loaded yet")
            return

        def chosen(path) -> None:
            if path is not None:
                self.notify(f"writing the report to {path}…", title="report", timeout=4, markup=False)
                self.write_report(path)

        self.app.push_screen(ReportScreen(self.detail["request"]), chosen)

    @work(thread=True, group="report", exit_on_error=False)
    def write_report(self, path) -> None:
        """In a thread: the engine renders the report (which takes a moment for HTML with charts); the file
        is written atomically. The result is a toast either way."""
        from console.client import EngineClient
        from console.reportfile import write_report

        app = self.app
        try:
            with EngineClient(app.paths, timeout=120.0) as client:
                res = write_report(client, self.request_id, path)
        except EngineError as exc:
            app.call_from_thread(app.notify, f"the engine could not render the report: {exc}",
                                 title="report not written", severity="error", timeout=15, markup=False)
            return
        except OSError as exc:
            app.call_from_thread(app.notify, f"{path}: {exc.strerror or exc}", title="report not written",
                                 severity="error", timeout=15, markup=False)
            return
        app.call_from_thread(app.notify, f"{res['path']} ({res['bytes']:,} bytes)",
                             title=f"report of request {self.request_id} written", timeout=10, markup=False)
