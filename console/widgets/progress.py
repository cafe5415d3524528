"""A job's progress on one line: the phase, a bar, the percentage, step/total, the loss and the engine's ETA.

Drawn as text by one widget and repainted only when the values change: Textual's ProgressBar refreshes
itself every second and relayouts its labels, which repaints the screen over SSH for nothing. The bar uses
two glyphs (done and to do), so it reads the same without colour."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from console.widgets.format import duration, number, style

PHASE_NAMES = {"start": "starting", "load": "loading model", "locate": "locating", "train": "training",
               "guard": "building guard", "resume": "resuming", "save": "saving", "done": "done",
               "failed": "failed", "neighbours": "building neighbours",
               "line": "asking the version its earlier erasures"}
PARTIAL = " ▏▎▍▌▋▊▉"


def phase_label(phase: str | None) -> str:
    if not phase:
        return "—"
    if phase.startswith("verify:"):
        return f"verifying {phase.split(':', 1)[1]}"
    return PHASE_NAMES.get(phase, phase)


def bar(fraction: float, width: int) -> tuple[str, str]:
    """The done part (with an eighth-block edge) and the part to do."""
    fraction = min(1.0, max(0.0, fraction))
    cells = fraction * width
    full = int(cells)
    edge = PARTIAL[int((cells - full) * 8)] if full < width else ""
    done = "█" * full + (edge if edge.strip() else "")
    return done, "░" * (width - len(done))


class JobProgressView(Widget):
    DEFAULT_CSS = """
    JobProgressView { height: 1; width: 1fr; }
    """
    BAR_WIDTH = 24

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._values: tuple = (None, None, None, None, None, None)

    def show(self, phase: str | None, step: int | None, total: int | None, loss: float | None,
             eta: float | None, status: str | None = None) -> None:
        values = (phase, step, total, loss, eta, status)
        if values != self._values:
            self._values = values
            self.refresh()

    def render(self) -> Text:
        phase, step, total, loss, eta, status = self._values
        done = status == "succeeded" or phase == "done"
        fraction = 1.0 if done else (min(step or 0, total) / total if total else 0.0)
        label = phase_label(status if status in ("failed", "cancelled", "interrupted") else phase)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{label[:19]:<20}")
        full, rest = bar(fraction, self.BAR_WIDTH)
        text.append(full, style=style("green" if done else "bold cyan"))
        text.append(rest, style="dim")
        text.append(f" {fraction * 100:3.0f}%")
        if total and not done:
            text.append(f"  {step or 0}/{total}")
        if loss is not None:
            text.append(f"  loss {number(loss)}")
        if eta is not None and not done and status in (None, "running"):
            text.append(f"  ETA {duration(eta)}")
        return text
