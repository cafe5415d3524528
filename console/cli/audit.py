"""`expunge audit`: the tamper-evident audit log, checked from the database itself (no engine needed), or
from an exported file alone (an external auditor's check), and exported for one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from console.cli.common import call, client, out
from store.paths import get_paths


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--file", "file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="check an exported file (expunge audit export) by itself: no database or engine needed")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(file: Path | None, as_json: bool) -> None:
    """Recompute the audit chain; name the first row that does not match."""
    if file is not None:
        verify_file(file, as_json)
        return
    from sqlmodel import Session

    from store import audit as chain
    from store.db import make_engine

    paths = get_paths()
    if not paths.db.exists():
        raise click.ClickException(f"no database at {paths.db}")
    with Session(make_engine(paths.db)) as s:
        check = chain.verify(s)
    res = {"ok": check.ok, "rows": check.rows, "head": check.head, "bad_id": check.bad_id, "reason": check.reason}

    def render(r):
        if r["ok"]:
            click.echo(f"audit chain intact: {r['rows']} rows, head {r['head'][:16]}…")
        else:
            click.echo(f"audit chain BROKEN at row {r['bad_id']}: {r['reason']}")

    out(res, as_json, render)
    sys.exit(0 if check.ok else 1)


def verify_file(file: Path, as_json: bool) -> None:
    from store.audit_export import verify_lines

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file}: not UTF-8 text (byte {exc.start})") from None
    check = verify_lines(lines)
    res = {"ok": check.ok, "file": str(file), "rows": check.rows, "head": check.head, "bad_line": check.bad_line,
           "bad_id": check.bad_id, "reason": check.reason}

    def render(r):
        if r["ok"]:
            click.echo(f"{file}: audit export intact: {r['rows']} rows, head {r['head'][:16]}… (compare the head "
                       "with the one the engine's operator publishes)")
        else:
            row = f" (row {r['bad_id']})" if r["bad_id"] is not None else ""
            click.echo(f"{file}: audit export BROKEN at line {r['bad_line']}{row}: {r['reason']}")

    out(res, as_json, render)
    sys.exit(0 if check.ok else 1)


@audit.command("export")
@click.option("--since", metavar="DATE", help="rows from this day on (YYYY-MM-DD, UTC; or an ISO time); default all")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="the JSON-lines file to write")
def audit_export(since: str | None, out_file: Path) -> None:
    """Export the audit chain for an external auditor: a header with the chain head, then one row per line.
    `expunge audit verify --file FILE` checks it with the file alone."""
    from store.files import replace_file

    text = call(client().audit_export, since)
    data = text.encode()
    replace_file(out_file, lambda fh: fh.write(data))
    rows = len(text.splitlines()) - 1
    click.echo(f"{rows} audit rows written to {out_file}; check it with: expunge audit verify --file {out_file}")


COMMANDS = [audit]
