"""The loss curve (textual-plotext, redrawn at most once a second) and the locate per-layer chart."""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Label, Static

from console.widgets.format import number

REPLOT_EVERY = 2.0  # plotext redraws the whole figure: the costliest thing on the live screen
MAX_POINTS = 300  # more than the braille cells across a wide terminal


class LossChart(Widget):
    """The training loss by step; points merge by step, so a reload and the live stream never double up."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 6; }
    LossChart > Label { color: $text-muted; padding: 1 2; }
    LossChart > PlotextPlot { display: none; }
    LossChart.-has-data > PlotextPlot { display: block; }
    LossChart.-has-data > Label { display: none; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.points: dict[int, float] = {}
        self._last_plot = 0.0
        self._pending = False
        self.empty_text = "no loss yet"

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Label(self.empty_text)
        plot = PlotextPlot()
        plot.theme = "clear"  # the terminal's own colours: no ANSI to parse back on every redraw
        yield plot

    def set_points(self, points, empty_text: str | None = None) -> None:
        self.points = {int(s): float(v) for s, v in points}
        if empty_text is not None:
            self.empty_text = empty_text
            self.query_one(Label).update(empty_text)
        self._plot()

    def add_points(self, points) -> None:
        if not points:
            return
        for s, v in points:
            self.points[int(s)] = float(v)
        now = time.monotonic()
        if now - self._last_plot >= REPLOT_EVERY:
            self._plot()
        elif not self._pending:
            self._pending = True
            self.set_timer(REPLOT_EVERY - (now - self._last_plot), self._plot)

    def _plot(self) -> None:
        from textual_plotext import PlotextPlot

        self._pending = False
        self._last_plot = time.monotonic()
        if self.has_class("-has-data") != bool(self.points):
            self.set_class(bool(self.points), "-has-data")
        if not self.points:
            return
        plot = self.query_one(PlotextPlot)
        steps = sorted(self.points)
        shown = steps[:: max(1, len(steps) // MAX_POINTS)]
        if shown[-1] != steps[-1]:
            shown.append(steps[-1])
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.theme("clear")
        plt.plot(shown, [self.points[s] for s in shown], marker="braille")
        plt.xlabel("step")
        plt.title(f"loss (last {number(self.points[steps[-1]])} at step {steps[-1]})")
        plot.refresh()


class LocateChart(Static):
    """Per layer: how decodable the forget answers are under the logit lens; the layer RMU steers is marked."""

    rows: list[dict] | None = None
    result: dict | None = None

    def on_resize(self) -> None:
        if self.rows:
            self.show(self.rows, self.result)

    def show(self, rows: list[dict] | None, result: dict | None = None) -> None:
        self.rows, self.result = rows, result
        if not rows:
            self.update(Text("No locate pass for this job (tier 2 methods locate before they edit).", style="dim"))
            return
        steered = (result or {}).get("rmu_layer")
        rows = sorted(rows, key=lambda r: r["layer"])
        top = max((r.get("prob") or 0.0) for r in rows) or 1.0
        width = max(8, min(60, (self.size.width or 80) - 64))
        t = Table(title="Where the forget answers become decodable (logit lens)", title_justify="left", box=None,
                  padding=(0, 1), expand=True)
        t.add_column("layer", justify="right", no_wrap=True)
        t.add_column("gold probability", width=width + 1, no_wrap=True)
        t.add_column("prob", justify="right", no_wrap=True)
        t.add_column("rank", justify="right", no_wrap=True)
        t.add_column("top-1", justify="right", no_wrap=True)
        t.add_column("", no_wrap=True)
        for r in rows:
            prob = r.get("prob") or 0.0
            filled = prob / top * width
            bar = "█" * int(filled) + (" ▏▎▍▌▋▊▉"[int((filled % 1) * 8)] if filled < width else "")
            label = "embeddings" if r["layer"] == 0 else str(r["layer"])
            note = Text("")
            if steered is not None and r["layer"] == steered + 1:
                note = Text(f"◀ RMU block {steered}", style="bold")
            rank = r.get("rank")
            rank_text = str(int(rank)) if isinstance(rank, int | float) and float(rank).is_integer() else number(rank)
            t.add_row(label, Text(bar, style="cyan"), number(prob), rank_text, number(r.get("top1")), note)
        self.update(t)


__all__ = ["LossChart", "LocateChart"]
