"""Messages the console passes around: engine updates (coalesced) and connection changes.

The app follows the engine's event stream and batches what it hears; at most ~4 times a second it posts
one EngineUpdate to each screen on the stack. Screens update their widgets in place from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message


@dataclass
class JobProgress:
    """The newest progress of one job, plus the loss points that arrived since the last update."""

    job_id: int
    phase: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta: float | None = None
    points: list[tuple[int, float]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)  # every phase seen since the last update, in order


class EngineUpdate(Message, bubble=False):
    """What changed in the engine since the last update."""

    def __init__(self, jobs: dict[int, dict], progress: dict[int, JobProgress], requests: set[int],
                 reconnected: bool = False) -> None:
        super().__init__()
        self.jobs = jobs  # job id -> the job as the API returns it
        self.progress = progress
        self.requests = requests  # ids of requests that changed
        self.reconnected = reconnected  # the stream was re-established: anything may have changed

    def touches_request(self, request_id: int) -> bool:
        return self.reconnected or request_id in self.requests or any(
            j.get("request_id") == request_id for j in self.jobs.values())


class ConnectionChanged(Message, bubble=False):
    def __init__(self, connected: bool, detail: str = "") -> None:
        super().__init__()
        self.connected = connected
        self.detail = detail
