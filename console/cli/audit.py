"""`expunge audit`: the tamper-evident audit log, checked from the database itself (no engine needed)."""

from __future__ import annotations

import sys

import click

from console.cli.common import out
from store.paths import get_paths


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(as_json: bool) -> None:
    """Recompute the audit chain; name the first row that does not match."""
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


COMMANDS = [audit]
