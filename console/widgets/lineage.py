"""A model line's control figures against v0, one row per version: how much of v0's retain ROUGE-L and
probability each version keeps and how its general perplexity compares, as bars (1.0 = v0)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.widgets.format import number, style

# (metric, column label, True when higher is better)
METRICS = (("retain_rouge_l", "retain ROUGE-L ×v0", True), ("retain_prob", "retain prob ×v0", True),
           ("general_ppl", "general ppl ×v0", False))


def ratio(version: dict, metric: str) -> float | None:
    """The version's figure over v0's (v0 itself: 1.0 once the line has a measured v0)."""
    control = version.get("control") or {}
    mine, base = (control.get("metrics") or {}).get(metric), (control.get("v0") or {}).get(metric)
    if version["number"] == 0:
        base = mine
    if mine is None or not base:
        return None
    return mine / base


def bar(value: float | None, top: float, width: int) -> Text:
    if value is None:
        return Text("—", style="dim")
    filled = max(0.0, min(value, top)) / top * width
    return Text("█" * int(filled) + (" ▏▎▍▌▋▊▉"[int((filled % 1) * 8)] if filled < width else ""),
                style=style("cyan"))


class ControlChart(Static):
    """Bars of each version's control figures relative to v0 (withdrawn versions dimmed)."""

    line: dict | None = None

    def on_resize(self) -> None:
        if self.line:
            self.show(self.line)

    def show(self, line: dict) -> None:
        self.line = line
        versions = [v for v in line["versions"] if v["number"] == 0 or (v.get("control") or {}).get("metrics")]
        v0_measured = any((v.get("control") or {}).get("v0") for v in versions)
        if not v0_measured:
            self.update(Text("No control figures yet: the line's first accept measures them (and v0's).",
                             style="dim"))
            return
        v0_figures = next((v["control"]["v0"] for v in versions if (v.get("control") or {}).get("v0")), {})
        shown = [m for m in METRICS if v0_figures.get(m[0]) is not None]
        width = max(6, min(24, ((self.size.width or 80) - 12) // max(1, len(shown)) - 7))
        t = Table(title="Control against v0 (1.0 = v0; ppl: lower is better)", title_justify="left", box=None,
                  padding=(0, 1), expand=False)
        t.add_column("version", no_wrap=True)
        for _, label, _ in shown:
            t.add_column(label, no_wrap=True, min_width=width + 6)
        for v in versions:
            cells = []
            for metric, _, _ in shown:
                r = 1.0 if v["number"] == 0 else ratio(v, metric)
                cell = bar(r, 1.5 if metric == "general_ppl" else 1.0, width)
                cell.append(f" {number(r)}" if r is not None else "")
                cells.append(cell)
            label = Text(f"v{v['number']}" + ("*" if v.get("current") else ""),
                         style="dim" if v["status"] != "active" else "bold" if v.get("current") else "")
            t.add_row(label, *cells)
        self.update(t)


__all__ = ["ControlChart", "ratio"]
