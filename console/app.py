"""The operator console: a Textual app over the engine daemon. It never imports torch (a test keeps it so).

The app starts the engine (detached) when none answers, then follows the engine's event stream in a worker,
reconnecting with backoff when the engine restarts. Events are coalesced: progress floods are merged per
job and handed to the screens at most ~4 times a second."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from console.messages import ConnectionChanged, EngineUpdate, JobProgress
from console.widgets.format import verdict
from store.paths import Paths, get_paths

FLUSH_INTERVAL = 0.25  # the screens hear about engine changes at most this often
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
TOAST_STATUSES = ("succeeded", "failed", "interrupted")
# The console's screens by kind: the name the help screen lists their keys under (in this order) and where the
# class is. Each is imported when first shown, so the dashboard's first paint waits for none of the others (and
# this module, below the screens, names them without importing them).
SCREEN_CLASSES = {
    "dashboard": ("dashboard", "screens.dashboard:DashboardScreen"),
    "new_request": ("new request", "screens.new_request:NewRequestScreen"),
    "request": ("request", "screens.request:RequestScreen"),
    "job": ("job", "screens.job:JobScreen"),
    "history": ("history", "screens.history:HistoryScreen"),
    "compare": ("compare", "screens.compare:CompareScreen"),
    "help": ("help", "screens.help:HelpScreen"),
    "confirm": ("confirmation", "screens.confirm:ConfirmScreen"),
    "escalate": ("escalation", "screens.confirm:EscalateScreen"),
    "model": ("model", "screens.model:ModelScreen"),
}


def palette_provider(name: str):
    """A command palette provider of console.commands, imported when the palette first opens (Textual takes a
    callable that returns the provider class)."""
    def load():
        from console import commands

        return getattr(commands, name)
    return load


class ExpungeApp(App[None]):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses (tests, bench) find it too
    TITLE = "expunge"
    SUB_TITLE = "unlearning console"
    COMMANDS = App.COMMANDS | {palette_provider(name)
                               for name in ("RequestCommands", "JobCommands", "ActionCommands")}
    COMMAND_PALETTE_BINDING = "ctrl+p"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True, id="app.quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?", id="app.help"),
        Binding("d", "dashboard", "Dashboard", id="app.dashboard"),
        Binding("h", "history", "History", id="app.history"),
        Binding("n", "new_request", "New", id="app.new_request"),
    ]

    connected: reactive[bool] = reactive(False)

    def __init__(self, paths: Paths | None = None, open_request: int | None = None, open_job: int | None = None,
                 start_engine: bool = True) -> None:
        super().__init__()
        self.paths = paths or get_paths()
        self._client = None
        self.start_engine = start_engine
        self._open_request, self._open_job = open_request, open_job
        # No animation unless the operator asks for it (SSH bandwidth): TEXTUAL_ANIMATIONS=full.
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            self.animation_level = "none"
        # EXPUNGE_THEME=textual-ansi uses the terminal's own 16 colours (its palette, its contrast choices).
        theme = os.environ.get("EXPUNGE_THEME")
        if theme and theme in self.available_themes:
            self.theme = theme
        self.connection_detail = "connecting…"
        self.engine_pid: int | None = None
        self.live: dict[int, JobProgress] = {}  # the latest progress of every job heard of
        self._pending_jobs: dict[int, dict] = {}
        self._pending_progress: dict[int, JobProgress] = {}
        self._pending_requests: set[int] = set()
        self._pending_reconnect = False
        self._flush_armed = False
        self._job_status: dict[int, str] = {}
        self.started_at = time.monotonic()
        self._cache: dict[str, tuple[float, object]] = {}
        self.caller: dict | None = None  # who the engine sees (/whoami): name and roles, for the keys' roles

    # ------------------------------------------------------------ lifecycle

    def get_default_screen(self):
        return self.screen_class("dashboard")()

    @staticmethod
    def screen_class(kind: str) -> type:
        """The screen class of a kind in SCREEN_CLASSES, imported on first use."""
        from importlib import import_module

        module, _, name = SCREEN_CLASSES[kind][1].partition(":")
        return getattr(import_module(module), name)

    def screen_classes(self) -> list[tuple[str, type]]:
        """Every screen class with its name in the help screen, in SCREEN_CLASSES' order."""
        return [(label, self.screen_class(kind)) for kind, (label, _) in SCREEN_CLASSES.items()]

    @property
    def client(self):
        """The engine's async client, made on first use: httpx is imported after the first paint."""
        if self._client is None:
            from console.client import AsyncEngineClient

            self._client = AsyncEngineClient(self.paths)
        return self._client

    def on_mount(self) -> None:
        self._load_keymap()
        self.call_after_refresh(self.follow_engine)
        if self._open_job is not None:
            self.open_job(self._open_job)
        elif self._open_request is not None:
            self.open_request(self._open_request)

    async def on_unmount(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _load_keymap(self) -> None:
        """Binding ids can be rebound in <config>/keymap.toml: `"app.history" = "ctrl+h"`."""
        path = self.paths.config / "keymap.toml"
        if not path.is_file():
            return
        import tomllib

        try:
            keymap = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            self.notify(f"{path}: {exc}", title="keymap ignored", severity="warning")
            return
        self.set_keymap({str(k): str(v) for k, v in keymap.items()})

    # ------------------------------------------------------------ the engine

    @work(exclusive=True, exit_on_error=False, group="engine")
    async def follow_engine(self) -> None:
        """Start the engine if none answers, then follow its events forever, reconnecting with backoff."""
        from console.client import EngineError
        from engine.control.daemon import ping, start  # httpx and subprocess only: no torch

        if self.start_engine and await asyncio.to_thread(ping, self.paths) is None:
            self._set_connection(False, "starting the engine…")
            try:
                await asyncio.to_thread(start, self.paths)
            except RuntimeError as exc:
                self.notify(str(exc), title="the engine did not start", severity="error", timeout=30)
        attempt = 0
        last_id: int | None = None
        while True:
            try:
                health = await self.client.health()
                if health.get("pid") != self.engine_pid:
                    last_id = None  # a new engine numbers its events from 1 again
                self.engine_pid = health.get("pid")
                await self._learn_caller()
                after = last_id if last_id is not None else health.get("last_event_id", 0)
                self._set_connection(True, "connected")
                self._pending_reconnect = True
                self._arm_flush()
                attempt = 0
                async for event in self.client.events(after=after):
                    last_id = event.get("id", last_id)
                    self._take(event)
                raise EngineError("the engine closed the event stream")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  any failure means: reconnect
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                self._set_connection(False, f"engine unreachable, retrying in {delay:.0f} s"
                                     if delay >= 1 else "engine unreachable, retrying")
                self.log.warning(f"event stream: {exc!r}")
                await asyncio.sleep(delay)

    async def _learn_caller(self) -> None:
        """Who the engine sees this console as: keys needing a role it lacks are shown disabled with it."""
        from console.client import EngineError

        try:
            caller = await self.client.whoami()
        except EngineError as exc:  # an engine without /whoami: every key stays enabled, the engine decides
            self.log.warning(f"whoami: {exc}")
            return
        if caller != self.caller:
            self.caller = caller
            for screen in self.screen_stack:
                screen.refresh_bindings()

    def _set_connection(self, connected: bool, detail: str) -> None:
        changed = connected != self.connected or detail != self.connection_detail
        self.connected, self.connection_detail = connected, detail
        if changed:
            for screen in self._shown_screens():
                screen.post_message(ConnectionChanged(connected, detail))

    def _shown_screens(self):
        """Screens on view: the top one, and those around it when it is a modal. Screens under an opaque
        screen get no messages at all: Textual repaints a covered screen's changes through the top screen,
        which would redraw the whole terminal (SSH bandwidth) for nothing."""
        from textual.app import ScreenStackError
        from textual.screen import ModalScreen

        try:
            top = self.screen
        except ScreenStackError:  # shutting down
            return []
        shown = [top]
        if isinstance(top, ModalScreen):
            shown += [s for s in self._background_screens if s is not top]
        return shown

    def _take(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            job_id = event["job_id"]
            p = self._pending_progress.get(job_id)
            if p is None:
                p = self._pending_progress[job_id] = JobProgress(job_id)
            live = self.live.setdefault(job_id, JobProgress(job_id))
            for target in (p, live):
                for key in ("phase", "step", "total", "loss", "eta"):
                    if key in event:
                        setattr(target, key, event[key])
            phase = event.get("phase")
            if phase and (not p.phases or p.phases[-1] != phase):
                p.phases.append(phase)
            if event.get("loss") is not None and event.get("step") is not None:
                p.points.append((event["step"], event["loss"]))
        elif kind == "job":
            job = event.get("job") or {}
            job_id = event.get("job_id") or job.get("id")
            if job_id is None:
                return
            self._pending_jobs[job_id] = job
            if job.get("request_id") is not None:
                self._pending_requests.add(job["request_id"])
            self._toast(job)
        elif kind == "request":
            self._pending_requests.add(event["request_id"])
        else:
            return
        self._arm_flush()

    def _arm_flush(self) -> None:
        if not self._flush_armed:
            self._flush_armed = True
            self.set_timer(FLUSH_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        update = EngineUpdate(self._pending_jobs, self._pending_progress, self._pending_requests,
                              reconnected=self._pending_reconnect)
        self._pending_jobs, self._pending_progress, self._pending_requests = {}, {}, set()
        self._pending_reconnect = False
        shown = self._shown_screens()
        for screen in self.screen_stack:
            if screen in shown:
                screen.post_message(EngineUpdate(update.jobs, update.progress, update.requests, update.reconnected))
            elif hasattr(screen, "note_hidden_update"):
                screen.note_hidden_update(update)  # a flag, read when the screen is shown again

    def _toast(self, job: dict) -> None:
        job_id, new = job.get("id"), job.get("status")
        old = self._job_status.get(job_id)
        self._job_status[job_id] = new
        if new == old or new not in TOAST_STATUSES:
            return
        what = f"job {job_id} (tier {job.get('tier')} {job.get('method')})"
        if new == "succeeded":
            v = job.get("verdict")
            self.notify(f"{what} finished: verdict {verdict(v).plain}", title="job finished",
                        severity="information" if v == "pass" else "warning", markup=False)
        elif new == "failed":
            reason = (job.get("error") or "").splitlines()[0][:200] if job.get("error") else ""
            self.notify(f"{what} failed. {reason}", title="job failed", severity="error", timeout=15, markup=False)
        else:
            self.notify(f"{what} was interrupted; it can be resumed", title="job interrupted",
                        severity="warning", markup=False)

    async def cached(self, name: str, ttl: float = 30.0):
        """A slow-changing list from the client ("models", "methods", "policies"), asked at most every `ttl`
        seconds."""
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        value = await getattr(self.client, name)()
        self._cache[name] = (time.monotonic(), value)
        return value

    async def api(self, call, *args, **kwargs):
        """`await call(*args, **kwargs)`, a call of the engine client; a refusal becomes an error toast and None."""
        from console.client import EngineError

        try:
            return await call(*args, **kwargs)
        except EngineError as exc:
            self.notify(str(exc), title="the engine refused" if exc.status else "engine", severity="error",
                        timeout=12, markup=False)
            return None

    # ------------------------------------------------------------ navigation

    NAVIGATION = {"dashboard": "dashboard", "history": "history", "new_request": "new_request", "help": "help"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Navigation keys are hidden on their own screen and under a modal."""
        if action in self.NAVIGATION:
            from textual.screen import ModalScreen

            screen = self.screen
            if isinstance(screen, ModalScreen) or getattr(screen, "KIND", None) == self.NAVIGATION[action]:
                return False
            if action == "new_request" and self.caller is not None and "operator" not in self.caller["roles"]:
                return None  # filing needs the operator role: shown disabled
        return True

    def _push_once(self, kind: str) -> None:
        """Show a screen of this kind, unless one is already on top."""
        cls = self.screen_class(kind)
        if not isinstance(self.screen, cls):
            self.push_screen(cls())

    def action_dashboard(self) -> None:
        dashboard = self.screen_class("dashboard")
        while len(self.screen_stack) > 1 and not isinstance(self.screen, dashboard):
            self.pop_screen()

    def action_history(self) -> None:
        self._push_once("history")

    def action_new_request(self) -> None:
        self._push_once("new_request")

    def action_help(self) -> None:
        self._push_once("help")

    def open_request(self, request_id: int) -> None:
        self.push_screen(self.screen_class("request")(request_id))

    def open_job(self, job_id: int) -> None:
        self.push_screen(self.screen_class("job")(job_id))

    def open_model(self, name: str) -> None:
        """A model's line of versions (issue 14)."""
        self.push_screen(self.screen_class("model")(name))

    def open_compare(self, job_a: int, job_b: int) -> None:
        """A is the earlier job, B the later one (s swaps them)."""
        self.push_screen(self.screen_class("compare")(min(job_a, job_b), max(job_a, job_b)))

    def action_start_engine(self) -> None:
        self.follow_engine()


def run_console(open_request: int | None = None, open_job: int | None = None) -> None:
    ExpungeApp(open_request=open_request, open_job=open_job).run()


__all__ = ["ExpungeApp", "run_console"]
