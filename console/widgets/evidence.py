"""The evidence viewer: each attacked prompt with the model's output before and after, and in a leaked output
the leaked parts highlighted: the character spans the engine's leak matcher found (engine.compute.verify.metrics.
leak_spans), reversed and bold so they stand out without colour too. Where the engine recorded no spans (rows
from an older engine, or a leak judged on the whole answer), the whole output is marked."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from console.widgets.format import style
from console.widgets.table import KeyedTable

LEAK_STYLE = "bold reverse red"
SPAN_STYLE = "bold reverse red"  # NO_COLOR: bold reverse
WHOLE_STYLE = "bold red underline"  # NO_COLOR: bold underline
STAGE_SHORT = {"reconstruction": "recon."}


def leak_badge(leaked: bool) -> Text:
    return Text("LEAK", style=style(LEAK_STYLE)) if leaked else Text("ok", style=style("green"))


def highlighted(output: str, spans) -> Text:
    """`output` with each [start, end) span in SPAN_STYLE (offsets are characters; clipped to the text)."""
    t = Text(output)
    for start, end in spans:
        start, end = max(0, int(start)), min(len(output), int(end))
        if start < end:
            t.stylize(style(SPAN_STYLE), start, end)
    return t


def output_text(label: str, output: str, leaked: bool, spans=None) -> Text:
    t = Text()
    t.append(f"{label:<7}", style="bold")
    if leaked:
        t.append(" LEAK ", style=style(LEAK_STYLE))
        t.append(" ")
        if output and spans:
            t.append_text(highlighted(output, spans))
        else:
            t.append(output or "(empty)", style=style(WHOLE_STYLE))
    else:
        t.append(" ok   ", style=style("green"))
        t.append(" ")
        t.append(output or "(empty)")
    return t


class EvidenceViewer(Vertical):
    DEFAULT_CSS = """
    EvidenceViewer > KeyedTable { height: 1fr; min-height: 4; }
    EvidenceViewer > #evidence-detail { height: auto; max-height: 50%; border-top: solid $primary-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: list[dict] = []
        self.leaks_only = False
        self.detail: Text | None = None  # the selected row's prompt and outputs, as shown

    def compose(self) -> ComposeResult:
        yield KeyedTable([("n", "#"), ("stage", "stage"), ("attack", "attack"), ("before", "before"),
                          ("after", "after"), ("prompt", "prompt")], id="evidence-table")
        with VerticalScroll(id="evidence-detail"):
            yield Static("", id="evidence-text")

    def show(self, rows: list[dict]) -> None:
        self.rows = rows
        self._render_rows()

    def toggle_leaks(self) -> bool:
        self.leaks_only = not self.leaks_only
        self._render_rows()
        return self.leaks_only

    def _visible(self) -> list[tuple[int, dict]]:
        return [(i, r) for i, r in enumerate(self.rows) if not self.leaks_only or r["leaked_after"]]

    def _render_rows(self) -> None:
        table = self.query_one(KeyedTable)
        table.sync([(str(i), [str(i + 1), STAGE_SHORT.get(r["stage"], r["stage"]), r["attack"], leak_badge(r["leaked_before"]),
                              leak_badge(r["leaked_after"]), Text(_one_line(r["prompt"], 60))])
                    for i, r in self._visible()])
        self._render_detail(table.selected_key)

    def _render_detail(self, key: str | None) -> None:
        text = self.query_one("#evidence-text", Static)
        if not self.rows:
            text.update(Text("No evidence: the job has not been verified.", style="dim"))
            return
        if key is None:
            text.update(Text("No prompt leaks after the job." if self.leaks_only else "", style="dim"))
            return
        r = self.rows[int(key)]
        t = Text()
        t.append(f"#{int(key) + 1} · {r['stage']} · {r['attack']}\n", style="dim")
        t.append("prompt  ", style="bold")
        t.append(r["prompt"])
        t.append("\n")
        t.append_text(output_text("before", r["output_before"], r["leaked_before"], r.get("spans_before")))
        t.append("\n")
        t.append_text(output_text("after", r["output_after"], r["leaked_after"], r.get("spans_after")))
        self.detail = t
        text.update(t)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._render_detail(event.row_key.value if event.row_key else None)


def _one_line(text: str, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
