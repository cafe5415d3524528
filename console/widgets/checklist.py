"""The stage checklist of a job: load, measure before, the method, the three verification stages, save —
filled in from the phases the worker reports, then with each stage's verdict once the job finishes."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.widgets.format import style, verdict
from engine.schema.status import STAGES

METHOD_PHASES = ("guard", "locate", "train", "resume")
ITEMS = ("load", "before", "method", "unit", "control", "reconstruction", "save")


class PhaseTracker:
    """The furthest checklist item reached, from the phases seen in order."""

    def __init__(self) -> None:
        self.reached = -1
        self.before_seen = False

    def see(self, phase: str | None, total: int | None = None) -> None:
        if not phase:
            return
        index = self.reached
        if phase in ("start", "load"):
            index = 0
        elif phase.startswith("verify:"):
            stage = phase.split(":", 1)[1]
            after_method = self.reached >= 2 or bool(total)  # the engine keeps the method's total afterwards
            if after_method and stage in STAGES:
                index = 3 + STAGES.index(stage)
            else:
                index = 1
                self.before_seen = True
        elif phase in METHOD_PHASES:
            index = 2
        elif phase == "save":
            index = 6
        elif phase == "done":
            index = len(ITEMS)
        self.reached = max(self.reached, index)


class StageChecklist(Static):
    DEFAULT_CSS = """
    StageChecklist { height: 7; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.tracker = PhaseTracker()
        self.method = "method"
        self.status = "queued"
        self.stage_verdicts: dict[str, str] = {}

    def reset(self, job: dict, stages: list[dict]) -> None:
        self.tracker = PhaseTracker()
        self.method = job["method"]
        self.status = job["status"]
        self.stage_verdicts = {s["stage"]: s["verdict"] for s in stages}
        if job["status"] == "succeeded":
            self.tracker.reached = len(ITEMS)
        else:
            self.tracker.see(job.get("phase"), job.get("total"))
        self.draw()

    def see(self, phases: list[str], total: int | None) -> None:
        """New phases; redrawn only when the furthest item moves (steps show on the progress line)."""
        before = self.tracker.reached
        for phase in phases:
            self.tracker.see(phase, total)
        if self.tracker.reached != before:
            self.draw()

    def set_status(self, status: str) -> None:
        self.status = status
        self.draw()

    def draw(self) -> None:
        t = Table.grid(padding=(0, 1))
        t.add_column(width=1)
        t.add_column()
        t.add_column()
        reached = self.tracker.reached
        labels = {"load": "load the model", "before": "measure before", "method": f"unlearn: {self.method}",
                  "unit": "verify unit", "control": "verify control", "reconstruction": "verify reconstruction",
                  "save": "save the artifact"}
        for i, item in enumerate(ITEMS):
            extra = Text("")
            if i < reached or self.status == "succeeded":
                mark = Text("✓", style=style("green"))
                if item == "before" and not self.tracker.before_seen and self.status != "succeeded":
                    extra = Text("cached", style="dim")
            elif i == reached and self.status == "running":
                mark = Text("▶", style=style("bold cyan"))
            elif i == reached and self.status == "failed":
                mark = Text("✗", style=style("bold red"))
                extra = Text("failed here", style=style("red"))
            elif i == reached and self.status in ("cancelled", "interrupted"):
                mark = Text("■", style=style("yellow"))
                extra = Text(self.status, style=style("yellow"))
            else:
                mark = Text("·", style="dim")
            if item in STAGES and item in self.stage_verdicts:
                extra = verdict(self.stage_verdicts[item])
            t.add_row(mark, Text(labels[item], style="" if i <= reached else "dim"), extra)
        key = (reached, self.status, tuple(sorted(self.stage_verdicts.items())), self.method)
        if key != getattr(self, "_drawn", None):
            self._drawn = key
            self.update(t, layout=False)  # a fixed size: no relayout, only these seven lines repaint
