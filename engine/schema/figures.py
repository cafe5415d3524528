"""How a figure reads wherever it is shown (`expunge show`, the console, the sign-off report): one spelling of a
95% interval and of a request's legal clock. Plain Python, no imports: the console loads it before its first
frame (the pydantic read models in engine.schema.views cost it ~0.2 s)."""

from __future__ import annotations


def interval_text(metric: dict) -> str:
    """' [0.000–0.262] n=12' to follow a value whose 95% interval was measured; '' when none was."""
    if metric.get("ci_low") is None or metric.get("ci_high") is None:
        return ""
    n = f" n={metric['n']}" if metric.get("n") is not None else ""
    return f" [{metric['ci_low']:.3f}–{metric['ci_high']:.3f}]{n}"


def due_text(request: dict) -> str:
    """A request's legal clock in a table cell: '12d left', 'due today', 'OVERDUE 3d' while open; 'on time' or
    'LATE' once closed (the CLI, the dashboard and the history show the same words)."""
    if request.get("status") == "closed":
        return {True: "on time", False: "LATE", None: ""}[request.get("on_time")]
    left = request.get("days_left")
    if left is None:
        return ""
    if left < 0:
        return f"OVERDUE {-left}d"
    return "due today" if left == 0 else f"{left}d left"
