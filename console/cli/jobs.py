"""Jobs: list them, show one's verdicts, cancel or resume one."""

from __future__ import annotations

import click

from console.cli.common import call, client, listing_options, out, rich_console, wait_for

JOB_SORTS = ("id", "created", "updated", "status", "verdict", "model", "method", "title", "tier")


@click.command()
@click.option("--status", help="queued, running, succeeded, failed, cancelled, interrupted (comma-separated)")
@click.option("--request", "request_id", type=int)
@click.option("--limit", default=50, show_default=True)
@listing_options(JOB_SORTS)
@click.option("--json", "as_json", is_flag=True)
def jobs(status, request_id, limit, sort, order, since, until, as_json) -> None:
    """List jobs (newest first unless --sort/--order say otherwise)."""
    from console.render import jobs_table

    res = call(client().jobs, status=status, request_id=request_id, limit=limit, sort=sort, order=order,
               since=since, until=until)
    out(res, as_json, lambda r: rich_console().print(jobs_table(r["items"])))


@click.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show(job_id: int, as_json: bool) -> None:
    """A job: status, each stage's metric table (before, after, Δ, threshold, verdict), artifacts."""
    from console.render import print_job

    out(call(client().job, job_id), as_json, lambda d: print_job(rich_console(), d))


@click.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def cancel(job_id: int, as_json: bool) -> None:
    """Cancel a queued or running job (a running job's worker is stopped)."""
    res = call(client().cancel, job_id)
    out(res, as_json, lambda j: click.echo(f"job {j['id']}: {j['status']}"))


@click.command()
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def resume(job_id: int, wait: bool, as_json: bool) -> None:
    """Queue an interrupted job again; it continues from its last checkpoint."""
    c = client()
    res = call(c.resume, job_id)
    if wait:
        res = wait_for(c, job_id, quiet=as_json)
    out(res, as_json, lambda j: click.echo(f"job {j['id']}: {j['status']}"))


COMMANDS = [jobs, show, cancel, resume]
