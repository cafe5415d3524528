"""Erasure requests: file one (`submit`), list them, climb the ladder (`escalate`), accept a job's result,
close a request and prove its texts are gone (`purge`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from console.cli.common import call, client, listing_options, out, parse_hyper, rich_console, wait_for
from console.cli.tune import tune_body, tune_options

REQUEST_SORTS = ("id", "created", "updated", "status", "verdict", "model", "title", "reference", "intention", "tier",
                 "due")


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", help="method for the first job (default: tier 1 for suppress, tier 3 for remove)")
@click.option("--hyper", multiple=True, metavar="KEY=VALUE", help="hyperparameter override (repeatable)")
@click.option("--auto-escalate", is_flag=True, help="climb the ladder from tier 1 until the verdicts pass")
@tune_options
@click.option("--wait", is_flag=True, help="wait for the job and print its verdicts")
@click.option("--json", "as_json", is_flag=True)
def submit(spec_file: Path, method: str | None, hyper: tuple[str, ...], auto_escalate: bool, tune: bool,
           trials: int | None, minutes: float | None, tune_seed: int, wait: bool, as_json: bool) -> None:
    """File an erasure request from a spec (YAML or JSON) and queue its first job."""
    from engine.schema.errors import SpecError
    from engine.schema.spec import load_spec_file

    try:
        body = load_spec_file(spec_file)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    c = client()
    res = call(c.submit, body, method, parse_hyper(hyper), True, auto_escalate,
               tune_body(tune, trials, minutes, tune_seed))
    if wait and res["job"]:
        wait_for(c, res["job"]["id"], quiet=as_json)
        res["job_detail"] = call(c.job, res["job"]["id"])

    def render(r):
        click.echo(f"request {r['request']['id']} filed" + (f", job {r['job']['id']} queued "
                                                            f"({r['job']['method']}, tier {r['job']['tier']})"
                                                            if r["job"] else ""))
        for w in r["request"]["warnings"]:
            click.echo(f"warning: {w}", err=True)
        if "job_detail" in r:
            from console.render import print_job

            print_job(rich_console(), r["job_detail"])

    out(res, as_json, render)


@click.command()
@click.option("--status", type=click.Choice(["open", "closed"]))
@click.option("-q", "query", help="search title and reference")
@click.option("--limit", default=50, show_default=True)
@click.option("--due", metavar="SPAN|DATE", help="only open requests due within SPAN (7d, 48h) or by DATE, overdue "
              "ones included; sorted by due date unless --sort says otherwise")
@listing_options(REQUEST_SORTS)
@click.option("--json", "as_json", is_flag=True)
def requests(status, query, limit, due, sort, order, since, until, as_json) -> None:
    """List erasure requests (newest first unless --sort/--order say otherwise), with days left to answer."""
    from console.render import requests_table

    if due and sort == "id":
        sort, order = "due", "asc" if order == "desc" else order
    res = call(client().requests, status=status, q=query, limit=limit, sort=sort, order=order, since=since,
               until=until, due=due)
    out(res, as_json, lambda r: rich_console().print(requests_table(r["items"])))


@click.command()
@click.argument("request_id", type=int)
@click.option("--method", help="a named method instead of the next tier's default")
@click.option("--hyper", multiple=True, metavar="KEY=VALUE")
@tune_options
@click.option("--wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def escalate(request_id: int, method: str | None, hyper: tuple[str, ...], tune: bool, trials: int | None,
             minutes: float | None, tune_seed: int, wait: bool, as_json: bool) -> None:
    """Run the next tier of the ladder on a request (each tier starts from the model version the request was filed
    on); with --tune, search the method's sensitive hyperparameters first and run the winner."""
    from console.render import print_job

    c = client()
    job = call(c.escalate, request_id, method, parse_hyper(hyper), tune_body(tune, trials, minutes, tune_seed))
    if wait:
        wait_for(c, job["id"], quiet=as_json)
        detail = call(c.job, job["id"])
        out(detail, as_json, lambda d: print_job(rich_console(), d))
    else:
        out(job, as_json, lambda j: click.echo(f"job {j['id']} queued: tier {j['tier']} {j['method']}"))


@click.command("close")
@click.argument("request_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def close_cmd(request_id: int, as_json: bool) -> None:
    """Close a request: purge its texts, keep hashes, metrics and masked evidence."""
    res = call(client().close_request, request_id)
    out(res, as_json, lambda r: click.echo(f"request {r['id']} closed; its texts are purged"))


@click.command()
@click.argument("request_id", type=int)
@click.argument("job_id", type=int)
@click.option("--comment", help="the approver's comment, kept with the acceptance in the audit chain")
@click.option("--json", "as_json", is_flag=True)
def accept(request_id: int, job_id: int, comment: str | None, as_json: bool) -> None:
    """Record a finished job as the request's accepted result (needs the approver role; under a policy with
    approval = "second_person", someone other than the job's executor): the model's next version is built from
    it and checked against every erasure it carries (refused, naming the request that leaks again, when one does)."""
    res = call(client().accept, request_id, job_id, comment)
    out(res, as_json, lambda r: click.echo(f"request {r['id']}: accepted job {r['accepted_job_id']} by "
                                           f"{r['accepted_by']}; landed in {r['model']}@v{r['landed_version']}"))


@click.command()
@click.argument("request_id", type=int)
@click.option("--days", type=click.IntRange(1, 60), required=True, help="how many days later the answer is due")
@click.option("--reason", required=True, help="why (the data subject is told; kept in the audit chain)")
@click.option("--json", "as_json", is_flag=True)
def extend(request_id: int, days: int, reason: str, as_json: bool) -> None:
    """Extend a request's deadline (GDPR Art. 12(3): by at most two months in all, with a reason)."""
    res = call(client().extend, request_id, days, reason)
    out(res, as_json, lambda r: click.echo(f"request {r['id']}: due {r['due_at'][:10]} ({r['days_left']} days left; "
                                           f"extended {r['extension_days']} days in all)"))


@click.command()
@click.argument("request_id", type=int)
@click.option("--check", "check_only", is_flag=True, help="only check; the request is left as it is")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
              help="the request's spec: its sensitive strings and forget answers are searched for")
@click.option("--string", "strings", multiple=True, help="another string to search for (repeatable)")
@click.option("--with-regression-data", "with_regression", is_flag=True,
              help="also delete the sealed forget prompts and key spans kept for the model line's regression checks")
@click.option("--json", "as_json", is_flag=True)
def purge(request_id: int, check_only: bool, spec_file: Path | None, strings: tuple[str, ...], with_regression: bool,
          as_json: bool) -> None:
    """Close a request (purging its texts) and prove they are gone; --check only proves it.

    The proof scans the raw bytes of the database, its WAL and every file under the data dir for each
    sensitive string and forget answer. After a close the engine keeps only hashes, so a later check
    needs the operator's copy: --spec SPEC (its sets are matched against the kept hashes) or --string.
    Exits 1 when any string is found."""
    from engine.schema.errors import SpecError
    from engine.schema.spec import load_spec_file

    body: dict = {}
    if spec_file is not None:
        try:
            spec = load_spec_file(spec_file)
        except SpecError as exc:
            raise click.ClickException(str(exc)) from None
        body = {"forget": spec["forget"], "sensitive": spec.get("sensitive") or []}
    c = client()
    res: dict = {"request_id": request_id}
    if with_regression and not check_only:
        res["regression_data_rows"] = call(c.purge_regression_data, request_id)["rows"]
    if not check_only:
        closed = call(c.purge, request_id)
        res["closed"] = {k: v for k, v in closed.get("purge", {}).items() if k != "check"}
        res["check"] = closed.get("purge", {}).get("check")
    if check_only or body or strings:
        res["check"] = call(c.purge_check, request_id, body.get("forget"), body.get("sensitive"), list(strings))
    check = res.get("check") or {"clean": True, "hits": [], "checked": 0, "files": 0}

    def render(r):
        if "regression_data_rows" in r:
            click.echo(f"request {request_id}: {r['regression_data_rows']} sealed regression data row(s) deleted; "
                       "later versions are no longer checked against it")
        if "closed" in r:
            done = r["closed"]
            click.echo(f"request {request_id} closed: texts purged; {done.get('baseline_cache_rows', 0)} cached "
                       f"baseline row(s), {len(done.get('artifact_files_removed', []))} artifact file(s) and "
                       f"{done.get('work_dirs_removed', 0)} work dir(s) removed")
        for kind, ok in (check.get("matches_request") or {}).items():
            if not ok:
                click.echo(f"warning: the spec's {kind} set does not match the hash request {request_id} kept; "
                           "you may be checking other texts", err=True)
        if check["clean"]:
            click.echo(f"clean: none of {check['checked']} string(s) found in {check['files']} file(s) "
                       f"({check.get('bytes', 0):,} bytes)")
        else:
            click.echo(f"FOUND {len(check['hits'])} of {check['checked']} string(s):")
            for hit in check["hits"]:
                click.echo(f"  {hit['preview']} (sha256 {hit['sha256'][:12]}…) in " + ", ".join(hit["files"]))
        if check.get("too_short_to_check"):
            click.echo(f"note: {check['too_short_to_check']} string(s) under 4 characters were not searched for",
                       err=True)

    out(res, as_json, render)
    sys.exit(0 if check["clean"] else 1)


@click.command()
@click.argument("request_ids", nargs=-1, type=int, required=True)
@click.option("--method", default="npo", show_default=True, help="the one method run over all of them")
@click.option("--hyper", multiple=True, metavar="KEY=VALUE")
@click.option("--wait", is_flag=True, help="wait for the run and print each request's verdicts")
@click.option("--json", "as_json", is_flag=True)
def batch(request_ids: tuple[int, ...], method: str, hyper: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Run several open requests on the same model as one job: one unlearning run over the union of their
    forget sets, each request verified on its own (its own verdicts, evidence and report). Accepting any of
    the jobs lands them all in one model version."""
    from console.render import print_job

    c = client()
    jobs = call(c.batch, list(request_ids), method, parse_hyper(hyper))
    if not wait:
        out(jobs, as_json, lambda js: [click.echo(f"job {j['id']} queued for request {j['request_id']} "
                                                  f"({j['method']}, batched with job {jobs[0]['id']})")
                                       for j in js] and None)
        return
    wait_for(c, jobs[0]["id"], quiet=as_json)
    details = [call(c.job, j["id"]) for j in jobs]

    def render(ds):
        for d in ds:
            click.echo(f"request {d['job']['request_id']}:")
            print_job(rich_console(), d)

    out(details, as_json, render)


COMMANDS = [submit, requests, escalate, close_cmd, accept, purge, extend, batch]
