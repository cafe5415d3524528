"""A tuning job's trials: the table (one row per trial, ★ the winner) and a forget-vs-retain scatter of the
completed trials on the validation split (textual-plotext), with the winner marked; how it was chosen below."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.widgets.table import KeyedTable
from engine.schema.tuning import TRIAL_COLUMNS, trial_row, tuning_lines

STATE_STYLE = {"complete": "", "pruned": "dim", "failed": "red", "cancelled": "dim", "running": "bold"}


class TrialsView(Vertical):
    DEFAULT_CSS = """
    TrialsView { height: 1fr; }
    TrialsView > KeyedTable { height: auto; max-height: 50%; }
    TrialsView > PlotextPlot { height: 1fr; min-height: 8; }
    TrialsView > #trials-how { height: auto; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield KeyedTable([(c, c) for c in TRIAL_COLUMNS], id="trials-table")
        yield Static("", id="trials-how")
        plot = PlotextPlot(id="trials-plot")
        plot.theme = "clear"
        yield plot

    def show(self, trials: list[dict], result: dict | None) -> None:
        rows = []
        for t in trials:
            cells = list(trial_row(t))
            rows.append((str(t["number"]), [Text(c, style=STATE_STYLE.get(t["state"], "")) if i < 3 else c
                                            for i, c in enumerate(cells)]))
        self.query_one(KeyedTable).sync(rows)
        lines = tuning_lines(result or {}) or ["trials so far; the winner is picked when the search ends"]
        self.query_one("#trials-how", Static).update("\n".join(lines))
        self._plot([t for t in trials if t["state"] == "complete" and t.get("metrics")])

    def _plot(self, done: list[dict]) -> None:
        from textual_plotext import PlotextPlot

        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.theme("clear")
        for group, marker, keep in (("passed the proxy", "o", lambda t: t.get("passed") and not t.get("winner")),
                                    ("failed it", "x", lambda t: not t.get("passed")),
                                    ("winner", "★", lambda t: t.get("winner"))):
            pts = [t for t in done if keep(t)]
            if pts:
                plt.scatter([100 * t["metrics"]["forget_rouge_l"] for t in pts],
                            [100 * t["metrics"]["retain_rouge_l"] for t in pts], marker=marker, label=group)
        plt.xlim(-2, 102)
        plt.ylim(-2, 102)
        plt.xlabel("forget ROUGE-L % (validation; lower is better)")
        plt.ylabel("retain %")
        plt.title("trials: forget vs retain")
        plot.refresh()


__all__ = ["TrialsView"]
