"""Small formatting helpers: verdict badges, statuses, numbers, durations. Every badge carries its meaning in
words and a glyph as well as a colour, so it reads the same with NO_COLOR and in the ANSI themes."""

from __future__ import annotations

import os

from rich.text import Text

from console.render import fmt
from engine.schema.figures import due_text, interval_text

VERDICTS = {
    "pass": ("✓ PASS", "bold green"),
    "fail": ("✗ FAIL", "bold red"),
    "incomplete": ("! INCOMPLETE", "bold yellow"),  # a judged metric not measured: not a pass
    "skipped": ("– skip", "dim"),
}
# Without colour a failure must still jump out: reversed, not a dark grey that red turns into.
MONO = {"bold green": "bold", "bold red": "bold reverse", "green": "", "bold cyan": "bold", "yellow": "italic",
        "bold reverse red": "bold reverse", "bold red underline": "bold underline", "red": "bold",
        "bold yellow": "bold italic"}


def no_color() -> bool:
    return "NO_COLOR" in os.environ


def style(name: str) -> str:
    """A style that stays readable under NO_COLOR (Textual then renders every colour as grey)."""
    return MONO.get(name, name) if no_color() else name
STATUSES = {
    "queued": "yellow",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "interrupted": "yellow",
    "open": "",
    "closed": "dim",
}


def verdict(v: str | None, compact: bool = False) -> Text:
    if v is None:
        return Text("—", style="dim")
    label, look = VERDICTS.get(v, (v.upper(), ""))
    return Text(label.split(" ", 1)[-1] if compact else label, style=style(look))


def passed(p: bool | None, compact: bool = False) -> Text:
    if p is None:
        return Text("reported" if not compact else "rep.", style="dim")
    return verdict("pass" if p else "fail", compact)


def status(s: str | None) -> Text:
    if not s:
        return Text("—", style="dim")
    return Text(s, style=style(STATUSES.get(s, "")))


def due(request: dict) -> Text:
    """Days left to answer (open), overdue marked; on time or late (closed)."""
    text = due_text(request)
    left = request.get("days_left")
    if request.get("status") == "closed":
        look = "dim" if request.get("on_time") else "bold red"
    elif left is not None and left < 0:
        look = "bold red"
    elif left is not None and left <= 7:
        look = "yellow"
    else:
        look = ""
    return Text(text or "—", style=style(look) if look else "")


def due_order(request: dict) -> tuple:
    """Open requests first, soonest due first (overdue on top); then the closed ones, newest first."""
    if request.get("status") == "open" and request.get("days_left") is not None:
        return (0, request["days_left"], -request["id"])
    return (1, 0, -request["id"])


def number(value) -> str:
    return fmt(value)


def with_interval(metric: dict) -> str:
    """A metric's value after, with its 95% interval and sample size where one was measured."""
    return fmt(metric.get("after")) + interval_text(metric)


def delta(before, after) -> Text:
    if before is None or after is None:
        return Text("—", style="dim")
    d = after - before
    return Text(("+" if d > 0 else "") + fmt(d))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def when(iso: str | None, short: bool = False) -> str:
    """An ISO timestamp (UTC, as the engine stores it) as 'YYYY-MM-DD HH:MM' ('YY-MM-DD HH:MM' when short)."""
    if not iso:
        return "—"
    text = iso[:16].replace("T", " ")
    return text[2:] if short else text


def plain(value) -> Text:
    """User content (titles, prompts) as literal text: never parsed as markup."""
    return Text("" if value is None else str(value))


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
