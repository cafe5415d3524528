"""Dashboard: the engine (slots, device, memory, the running job with its progress), the queue, recent
requests with their verdicts and days left to answer (open ones soonest due first, overdue marked)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Header, Label, Static

from console.messages import ConnectionChanged, EngineUpdate
from console.widgets.format import due, due_order, human_bytes, plain, status, style, verdict, when
from console.widgets.keybar import KeyBar
from console.widgets.progress import JobProgressView
from console.widgets.table import KeyedTable
from screens.base import EngineScreen

MEMORY_EVERY = 3.0


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a local process (the engine runs on this host: its socket is local)."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gpu_memory(device: str) -> str | None:
    """Used/total memory of one GPU from nvidia-smi (no CUDA library in this process)."""
    if not device.startswith("cuda:"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device.split(':', 1)[1]}",
                              "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=3).stdout.strip()
        used, total = (int(x) for x in out.split(","))
        return f"GPU {used / 1024:.1f}/{total / 1024:.0f} GB"
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


class SlotView(Widget):
    """One slot: device, its job and the job's progress bar, the worker's memory."""

    DEFAULT_CSS = """
    SlotView { height: auto; }
    SlotView > .slot-head { height: 1; width: 1fr; }
    SlotView > JobProgressView { display: none; }
    SlotView.-busy > JobProgressView { display: block; }
    """

    def __init__(self, slot: int) -> None:
        super().__init__(id=f"slot-{slot}")
        self.slot = slot
        self.job_id: int | None = None
        self.memory = ""

    def compose(self) -> ComposeResult:
        yield Static("", classes="slot-head")
        yield JobProgressView()

    def show(self, info: dict, job: dict | None, live) -> None:
        self.job_id = job["id"] if job else None
        self.set_class(job is not None, "-busy")
        head = Text.assemble((f"slot {info['slot']}", "bold"), f" · {info['device']} · ")
        remote = info.get("executor") not in (None, "local")
        if remote:  # a Ray slot: the node its actor runs on, and the actor's state when it has no job
            head.append(f"{info['executor']} {info.get('node') or '?'} · ")
        if job is None:
            head.append(info.get("state", "idle") if remote else "idle",
                        style="bold red" if info.get("state") == "dead" else "dim")
        else:
            head.append(f"job {job['id']} ", style="bold")
            head.append(f"tier {job['tier']} {job['method']} · ")
            head.append(Text(f"«{job.get('request_title') or ''}»"))
        if self.memory:
            head.append(f" · {self.memory}", style="dim")
        if head != getattr(self, "_head", None):
            self._head = head
            self.query_one(".slot-head", Static).update(head, layout=False)
        if job is not None:
            p = live.get(job["id"]) if live else None
            self.query_one(JobProgressView).show(
                p.phase if p else job.get("phase"), p.step if p else job.get("step"),
                p.total if p else job.get("total"), p.loss if p else job.get("loss"),
                p.eta if p else job.get("eta_s"), job.get("status"))


class DashboardScreen(EngineScreen):
    KIND = "dashboard"
    AUTO_FOCUS = "#requests"  # focused as it is composed (the default, the first table, would be restyled twice)
    BINDINGS = [
        Binding("enter", "open", "Open", id="dashboard.open"),
        Binding("c", "cancel", "Cancel", tooltip="cancel the selected queued job, or the running one", id="dashboard.cancel"),
        Binding("j", "open_running", "Running", tooltip="open the running job", id="dashboard.running"),
        Binding("r", "refresh", "Refresh", tooltip="reload everything from the engine", id="dashboard.refresh"),
        # Not in the key bar (at 80 columns they would push out Help, History and New): listed by ? and the README.
        Binding("space", "mark", "Mark", tooltip="mark a request for a batch", id="dashboard.mark", show=False),
        Binding("b", "batch", "Batch", tooltip="run the marked requests as one job (one run over their union)",
                id="dashboard.batch", show=False),
    ]

    ROLE_OF_ACTION = {"cancel": "operator", "batch": "operator"}

    def __init__(self) -> None:
        super().__init__(id="dashboard")
        self.health: dict | None = None
        self.running: dict[int, dict] = {}
        self.queue: list[dict] = []
        self.requests: list[dict] = []
        self.requests_total = 0
        self.queue_total = 0
        self.memory_timer = None
        self.marked: list[int] = []  # requests marked for a batch

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Vertical(id="engine-panel", classes="panel"):
            yield Label("", id="engine-state")
            yield Vertical(id="slots")
        yield KeyedTable([("id", "job"), ("request", "request"), ("tier", "tier"), ("method", "method"),
                          ("queued", "queued")], id="queue", classes="panel")
        self.wide = self.app.size.width >= 110  # model and filing time only where they fit
        extra = [("model", "model"), ("created", "filed (UTC)")] if self.wide else []
        # The intention only where it fits beside the days left (as in the history).
        intention = [("intention", "intention")] if self.wide else []
        yield KeyedTable([("id", "req"), ("title", "title"), ("reference", "reference"), *intention,
                          ("tier", "tier"), ("status", "status"), ("verdict", "verdict"), ("due", "due"), *extra],
                         id="requests", classes="panel")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#engine-panel").border_title = "Engine"
        self.query_one("#queue").border_title = "Queue"
        self.query_one("#requests").border_title = "Requests"
        self.show_connection()
        self.memory_timer = self.set_interval(MEMORY_EVERY, self.refresh_memory)

    # ------------------------------------------------------------ data

    async def load(self) -> None:
        client = self.app.client
        health, running, queue, requests = await asyncio.gather(
            client.health(), client.jobs(status="running", limit=50),
            client.jobs(status="queued", order="asc", limit=50), client.requests(limit=50))
        self.health = health
        self.running = {j["id"]: j for j in running["items"]}
        self.queue = queue["items"]
        self.queue_total = queue["total"]
        # Open requests by days left to answer (overdue first), then the closed ones.
        self.requests, self.requests_total = sorted(requests["items"], key=due_order), requests["total"]
        await self.render_slots()
        self.render_queue()
        self.render_requests()
        self.show_connection()

    def wants(self, update: EngineUpdate) -> bool:
        return bool(update.jobs or update.requests)

    def apply(self, update: EngineUpdate) -> None:
        if update.jobs or update.requests:
            self.reload()  # statuses moved: the queue and the slots change together
        elif update.progress:
            self.update_progress()

    def update_progress(self) -> None:
        for view in self.query(SlotView):
            if view.job_id in self.running:
                info = self._slot_info(view.slot)
                if info:
                    view.show(info, self.running[view.job_id], self.app.live)

    def _slot_info(self, slot: int) -> dict | None:
        for s in (self.health or {}).get("slots", []):
            if s["slot"] == slot:
                return s
        return None

    async def render_slots(self) -> None:
        slots = (self.health or {}).get("slots", [])
        container = self.query_one("#slots", Vertical)
        views = {v.slot: v for v in self.query(SlotView)}
        wanted = {s["slot"] for s in slots}
        for slot, view in views.items():
            if slot not in wanted:
                await view.remove()
        for s in slots:
            if s["slot"] not in views:
                view = SlotView(s["slot"])
                await container.mount(view)
                views[s["slot"]] = view
            job = self.running.get(s["job_id"]) if s.get("job_id") else None
            views[s["slot"]].show(s, job, self.app.live)

    def render_queue(self) -> None:
        table = self.query_one("#queue", KeyedTable)
        table.border_title = f"Queue ({self.queue_total})"
        width = max(12, self.app.size.width - 50)
        table.sync([(str(j["id"]), [str(j["id"]), plain(f"{j['request_id']} {j.get('request_title') or ''}"[:width]),
                                     str(j["tier"]), j["method"], when(j["created_at"])]) for j in self.queue])

    def render_requests(self) -> None:
        table = self.query_one("#requests", KeyedTable)
        table.border_title = f"Requests ({self.requests_total})"
        width = max(12, min(60, self.app.size.width - (102 if self.wide else 60)))
        rows = []
        for r in self.requests:
            extra = [plain(r["model"]), when(r["created_at"])] if self.wide else []
            mark = "● " if r["id"] in self.marked else ""
            rows.append((str(r["id"]), [mark + str(r["id"]), plain(_cut(r["title"], width)), plain(_cut(r["reference"], 16)),
                                        *([r["intention"]] if self.wide else []), str(r["current_tier"]),
                                        status(r["status"]),
                                        verdict(r["verdict"]), due(r), *extra]))
        table.sync(rows)

    def show_connection(self) -> None:
        app = self.app
        state = Text()
        if app.connected:
            state.append("● connected", style=style("green"))
        else:
            state.append("○ " + app.connection_detail, style=style("bold yellow"))
        if self.health:
            slots = self.health.get("slots", [])
            busy = sum(1 for s in slots if s.get("job_id"))
            state.append(f" · {len(slots)} slot{'s' if len(slots) != 1 else ''}, {busy} busy")
            state.append(f" · {self.queue_total} queued")
        self.query_one("#engine-state", Label).update(state)

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self.show_connection()

    def on_screen_suspend(self) -> None:
        if self.memory_timer is not None:
            self.memory_timer.pause()  # covered: no timer events, nothing to repaint

    def on_screen_resume(self) -> None:
        if self.memory_timer is not None:
            self.memory_timer.resume()
        self.show_connection()
        super().on_screen_resume()

    async def refresh_memory(self) -> None:
        if not self.shown or not self.health:
            return
        for s in self.health.get("slots", []):
            view = next((v for v in self.query(SlotView) if v.slot == s["slot"]), None)
            if view is None or s.get("executor") not in (None, "local"):  # a Ray node's memory is not read here
                continue
            parts = []
            rss = rss_bytes(s.get("worker_pid"))
            if rss:
                parts.append(f"worker {human_bytes(rss)}")
            if s.get("job_id") and s["device"].startswith("cuda:"):
                gpu = await asyncio.to_thread(gpu_memory, s["device"])
                if gpu:
                    parts.append(gpu)
            memory = " · ".join(parts)
            if memory != view.memory:
                view.memory = memory
                view.show(s, self.running.get(s.get("job_id")), self.app.live)

    # ------------------------------------------------------------ actions

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open(event.data_table, event.row_key.value)

    def action_open(self) -> None:
        table = self.focused if isinstance(self.focused, KeyedTable) else self.query_one("#requests", KeyedTable)
        self._open(table, table.selected_key)

    def _open(self, table: DataTable, key: str | None) -> None:
        if key is None:
            return
        if table.id == "requests":
            self.app.open_request(int(key))
        else:
            self.app.open_job(int(key))

    def action_open_running(self) -> None:
        if self.running:
            self.app.open_job(min(self.running))
        else:
            self.notify("no job is running")

    def action_refresh(self) -> None:
        self.reload()

    def action_cancel(self) -> None:
        from screens.confirm import ConfirmScreen

        queue = self.query_one("#queue", KeyedTable)
        if self.focused is queue and queue.selected_key:
            job = next((j for j in self.queue if str(j["id"]) == queue.selected_key), None)
        else:
            job = self.running[min(self.running)] if self.running else None
        if job is None:
            self.notify("no running or queued job selected")
            return

        async def done(yes: bool | None) -> None:
            if yes:
                res = await self.app.api(self.app.client.cancel, job["id"])
                if res:
                    self.notify(f"job {job['id']} cancelled")
                self.reload()

        self.app.push_screen(ConfirmScreen(
            f"Cancel job {job['id']} (tier {job['tier']} {job['method']}) of request {job['request_id']}?",
            "A running job's worker is stopped; its progress is lost.", yes="Cancel job", no="Keep it"), done)

    def action_mark(self) -> None:
        key = self.query_one("#requests", KeyedTable).selected_key
        if key is None:
            return
        rid = int(key)
        self.marked = [m for m in self.marked if m != rid] if rid in self.marked else self.marked + [rid]
        self.render_requests()

    def action_batch(self) -> None:
        """The marked requests as one job (issue 14): one unlearning run over their union, each verified on its
        own; the method is tier 3's default, as an escalation would pick."""
        from screens.confirm import ConfirmScreen

        if len(self.marked) < 2:
            self.notify("mark at least two open requests on the same model with space, then b")
            return
        ids = list(self.marked)

        async def done(yes: bool | None) -> None:
            if not yes:
                return
            jobs = await self.app.api(self.app.client.batch, ids, "npo")
            if jobs:
                self.marked = []
                self.notify(f"batch queued: jobs {', '.join(str(j['id']) for j in jobs)} (one run, led by job "
                            f"{jobs[0]['id']})")
                self.reload()

        self.app.push_screen(ConfirmScreen(
            f"Run requests {', '.join(map(str, ids))} as one batch?",
            "One NPO run over the union of their forget sets; each request is verified on its own data and keeps "
            "its own verdicts. Accepting any of its jobs lands them all in one model version.",
            yes="Queue the batch", no="Not now"), done)


def _cut(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"
