"""How a measured figure reads wherever it is shown (`expunge show`, the console, the sign-off report): one
spelling of a 95% interval. Plain Python, no imports: the console loads it before its first frame."""

from __future__ import annotations


def interval_text(metric: dict) -> str:
    """' [0.000–0.262] n=12' to follow a value whose 95% interval was measured; '' when none was."""
    if metric.get("ci_low") is None or metric.get("ci_high") is None:
        return ""
    n = f" n={metric['n']}" if metric.get("n") is not None else ""
    return f" [{metric['ci_low']:.3f}–{metric['ci_high']:.3f}]{n}"
