"""Plain-terminal rendering of engine answers (rich), shared by the CLI commands."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from engine.schema.figures import due_text, interval_text

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "incomplete": "bold yellow", "skipped": "dim"}


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def verdict_text(v: str | None) -> str:
    if v is None:
        return "—"
    return f"[{VERDICT_STYLE.get(v, '')}]{v.upper()}[/]"


def stage_tables(detail: dict) -> list[Table]:
    tables = []
    for st in detail["stages"]:
        required = "" if st["required"] else " (not judged for this intention)"
        # Tight padding: with the intervals the table still fits an 80-column terminal.
        t = Table(title=f"{st['stage']} — {st['verdict'].upper()}{required}", title_justify="left",
                  title_style=VERDICT_STYLE.get(st["verdict"], ""), collapse_padding=True, pad_edge=False)
        # The metric names stay whole on an 80-column terminal; the intervals and rules wrap instead.
        for col in ("metric", "before", "after", "Δ", "threshold", "verdict"):
            t.add_column(col, justify="left" if col in ("metric", "threshold") else "right",
                         no_wrap=col == "metric", max_width={"after": 11, "threshold": 13}.get(col))
        notes = []
        for m in st["metrics"]:
            passed = None if m["passed"] is None else ("pass" if m["passed"] else "fail")
            t.add_row(m["name"], fmt(m["before"]), fmt(m["after"]) + interval_text(m), fmt(m["delta"]), m["rule"],
                      verdict_text(passed))
            if m.get("note"):
                notes.append(f"{m['name']}: {m['note']}")
        if notes:  # why a metric was not judged (not measured, no signal, waived) or which side it failed
            t.caption, t.caption_justify = "\n".join(notes), "left"
        tables.append(t)
    return tables


def print_job(console: Console, detail: dict) -> None:
    job = detail["job"]
    console.print(f"[bold]job {job['id']}[/] — request {job['request_id']} «{job['request_title']}» — "
                  f"tier {job['tier']} {job['method']} on {job['model']} — {job['status']}"
                  + (f" — verdict {verdict_text(job['verdict'])}" if job["verdict"] else ""))
    if job["error"]:
        console.print(f"[red]error:[/] {job['error']}")
    for t in stage_tables(detail):
        console.print(t)
    result = detail.get("result") or {}
    for what, b in (("training", (result.get("train") or {}).get("oom_backoff")),
                    ("generation", result.get("generation_oom_backoff"))):
        if b:  # the job went on at half the batch; its numbers are valid, its speed is not the usual
            console.print(f"[yellow]out of memory in {what}:[/] batch {b['batch_size_before']} → {b['batch_size']}"
                          + (f" from step {b['step']}" if "step" in b else "") + f" ({b['error']})")
    locate = result.get("locate")
    if locate:
        t = Table(title="locate — where the answer becomes decodable", title_justify="left")
        for col in ("layer", "gold prob", "gold rank", "top-1 share"):
            t.add_column(col, justify="right")
        for row in locate:
            t.add_row(str(row["layer"]), fmt(row.get("prob")), fmt(row.get("rank")), fmt(row.get("top1")))
        console.print(t)
    print_trials(console, detail)
    for art in detail.get("artifacts", []):
        console.print(f"artifact: {art['kind']} {art['path']} sha256 {art['sha256'][:16]}…")


def print_trials(console: Console, detail: dict) -> None:
    """A tuning job's trials (★ the winner) and how the winner was chosen."""
    from engine.schema.tuning import TRIAL_COLUMNS, trial_row, tuning_lines

    trials = detail.get("trials") or []
    if not trials:
        return
    t = Table(title="tuning trials — the proxy on the validation split (★ winner)", title_justify="left")
    for col in TRIAL_COLUMNS:
        t.add_column(col)
    for trial in trials:
        t.add_row(*trial_row(trial))
    console.print(t)
    for line in tuning_lines(detail.get("result") or {}):
        console.print(line)


def jobs_table(items: list[dict]) -> Table:
    t = Table()
    for col in ("job", "request", "tier", "method", "status", "verdict", "progress", "created"):
        t.add_column(col)
    for j in items:
        prog = f"{j['step']}/{j['total']}" if j["total"] else j["phase"]
        t.add_row(str(j["id"]), f"{j['request_id']} {j['request_title'] or ''}"[:40], str(j["tier"]), j["method"],
                  j["status"], verdict_text(j["verdict"]), prog, j["created_at"][:19])
    return t


def requests_table(items: list[dict]) -> Table:
    t = Table()
    for col in ("request", "title", "reference", "intention", "model", "tier", "status", "verdict", "due"):
        t.add_column(col)
    for r in items:
        t.add_row(str(r["id"]), r["title"][:40], r["reference"], r["intention"], r["model"], str(r["current_tier"]),
                  r["status"], verdict_text(r["verdict"]), due_text(r))
    return t


def version_rows(line: dict) -> list[str]:
    """`expunge models show`: a model's line of versions, one per row, the current one marked *."""
    rows = [f"{line['model']}: current v{line['current']} (new requests start from it; deploy it: "
            f"expunge export {line['model']}@v{line['current']} --out DIR)",
            f"{'version':<9}{'created':<18}{'requests':<14}{'sha256':<14}{'regression':<12}{'status'}"]
    for v in line["versions"]:
        name = f"v{v['number']}" + ("*" if v["current"] else "")
        carried = ", ".join(str(r) for r in v["request_ids"]) or "—"
        status = v["status"] + (f": {v['withdrawn_reason']}" if v.get("withdrawn_reason") else "")
        if v["number"]:
            status += f" (v{v['parent']} + job {v['job_id']})"
        rows.append(f"{name:<9}{v['created_at'][:16].replace('T', ' '):<18}{carried:<14}{v['sha256'][:12] + '…':<14}"
                    f"{(v['verdict'] or '—').upper():<12}{status}")
    return rows
