"""`expunge`: the console (no arguments) and every action as a headless command with --json.

The engine client (httpx) is imported by the commands that talk to the engine, not here: `expunge` with no
arguments opens the console, which paints its first screen before it connects."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from store.paths import get_paths

if TYPE_CHECKING:
    from console.client import EngineClient

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def out(obj, as_json: bool, render=None) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    elif render is not None:
        render(obj)
    else:
        click.echo(json.dumps(obj, indent=2, default=str))


def rich_console():
    from rich.console import Console

    return Console()


def client(autostart: bool = True) -> EngineClient:
    """A client on a running engine; starts one (detached) when none answers."""
    from console.client import EngineClient
    from engine.control.daemon import ping, start

    paths = get_paths()
    if ping(paths) is None:
        if not autostart:
            raise click.ClickException("the engine is not running (start it with `expunge engine start`)")
        click.echo("starting the engine…", err=True)
        try:
            start(paths)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    return EngineClient(paths)


def call(fn, *args, **kwargs):
    from console.client import EngineError

    try:
        return fn(*args, **kwargs)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None


def parse_hyper(pairs: tuple[str, ...]) -> dict | None:
    """--hyper steps=80 --hyper lora=false: values parsed as JSON when they parse, else kept as text."""
    if not pairs:
        return None
    hyper = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--hyper")
        try:
            hyper[key] = json.loads(value)
        except json.JSONDecodeError:
            hyper[key] = value
    return hyper


def wait_for(c: EngineClient, job_id: int, quiet: bool = False) -> dict:
    """Poll until the job ends, with a one-line progress display on a terminal."""
    last = ""
    tty = sys.stderr.isatty() and not quiet
    while True:
        job = call(c.job, job_id)["job"]
        if tty:
            prog = f"{job['step']}/{job['total']}" if job["total"] else ""
            loss = f" loss {job['loss']:.3f}" if job["loss"] is not None else ""
            line = f"job {job_id}: {job['status']} {job['phase']} {prog}{loss}"
            if line != last:
                click.echo("\r" + line.ljust(78), nl=False, err=True)
                last = line
        if job["status"] in TERMINAL:
            if tty:
                click.echo("", err=True)
            return job
        time.sleep(0.5)


@click.group(invoke_without_command=True)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """expunge — run erasure requests up the unlearning ladder and verify them.

    With no command, opens the operator console."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(console_cmd)


@cli.command("console")
def console_cmd() -> None:
    """Open the operator console (starts the engine if none is running)."""
    from console.app import run_console

    run_console()


# ------------------------------------------------------------------ engine

@cli.group()
def engine() -> None:
    """Start, stop and inspect the engine daemon."""


@engine.command("start")
@click.option("--foreground", is_flag=True, help="run in this terminal (debugging)")
@click.option("--tcp", metavar="HOST:PORT", help="also listen on TCP (loopback unless told; bearer token required)")
def engine_start(foreground: bool, tcp: str | None) -> None:
    from engine.control.daemon import start

    if foreground:
        from engine.control.server import main

        sys.exit(main(["--tcp", tcp] if tcp else []))
    try:
        info = start(tcp=tcp)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    state = "started" if info["started"] else "already running"
    click.echo(f"engine {state}: pid {info['pid']}, socket {get_paths().socket}")


@engine.command("stop")
def engine_stop() -> None:
    from engine.control.daemon import stop

    click.echo("engine stopped" if stop() else "no engine is running")


@engine.command("status")
@click.option("--json", "as_json", is_flag=True)
def engine_status(as_json: bool) -> None:
    from engine.control.daemon import ping

    paths = get_paths()
    health = ping(paths)
    if health is None:
        out({"running": False}, as_json, lambda _: click.echo("engine: not running"))
        sys.exit(1)

    def render(h):
        click.echo(f"engine: running, pid {h['pid']}, up {h['uptime_s']:.0f} s, socket {paths.socket}")
        for s in h["slots"]:
            click.echo(f"  slot {s['slot']} {s['device']}: " + (f"job {s['job_id']}" if s["job_id"] else "idle"))

    out({"running": True, "socket": str(paths.socket), **health}, as_json, render)


@engine.command("logs")
@click.option("-n", "lines", default=50, show_default=True)
def engine_logs(lines: int) -> None:
    from engine.control.daemon import tail

    click.echo(tail(get_paths(), lines))


# ------------------------------------------------------------------ models, methods, policies

@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List registered models (or `models add`)."""
    if ctx.invoked_subcommand is None:
        items = call(client().models)
        out(items, as_json, lambda xs: [click.echo(f"{m['name']:<16} {m['kind']:<5} {m['params']:>12,} params  "
                                                   f"{m['source']}") for m in xs] or None)


@models.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="weights dtype in the workers; auto: bf16 on a GPU that supports it, else fp32")
@click.option("--chat-template", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="auto: ask through the tokenizer's chat template when it has one; none: plain Q/A prompts")
@click.option("--retain", "retain_path", type=click.Path(exists=True, dir_okay=False), help="default retain sample")
@click.option("--holdout", "holdout_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def models_add(name, source, dtype, chat_template, retain_path, holdout_path, as_json) -> None:
    """Register a model. SOURCE: a local HF model directory, a .gguf file, or a model id ('org/name')
    already in the local Hugging Face cache (nothing is downloaded). The engine loads its config and
    tokenizer, counts its parameters and hashes its weights first, and refuses what it cannot load."""
    absolute = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
    entry = call(client().add_model, name, absolute(source) if Path(source).exists() else source,
                 {"dtype": dtype, "chat_template": chat_template}, absolute(retain_path), absolute(holdout_path))

    def render(m):
        checked = m.get("checked") or {}
        template = {True: "chat template found", False: "no chat template"}.get(checked.get("chat_template"), "")
        click.echo(f"registered {m['name']} ({m['kind']}): {m['params']:,} params, "
                   f"weights sha256 {m['weights_sha256'][:16]}…" + (f", {template}" if template else ""))

    out(entry, as_json, render)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def methods(as_json: bool) -> None:
    """The methods of the ladder, by tier, with their default hyperparameters."""
    items = call(client().methods)

    def render(xs):
        for m in xs:
            click.echo(f"tier {m['tier']}  {m['name']:<10} {m['description']}")
            click.echo("           " + ", ".join(f"{k}={v}" for k, v in m["defaults"].items()))

    out(items, as_json, render)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--show", "show_name", metavar="NAME", help="Print every rule of one policy in words.")
def policies(as_json: bool, show_name: str | None) -> None:
    """The verification policies (threshold profiles)."""
    items = call(client().policies)
    if show_name:
        from engine.schema.policy import describe_policy

        chosen = next((p for p in items if p["name"] == show_name), None)
        if chosen is None:
            raise click.ClickException(f"no policy '{show_name}' (known: {', '.join(p['name'] for p in items)})")
        out(chosen, as_json, lambda p: click.echo("\n".join(describe_policy(p))))
        return

    def render(xs):
        from engine.schema.policy import rule_text

        for p in xs:
            click.echo(f"{p['name']}: {p.get('description', '')}")
            for stage in ("unit", "control", "reconstruction"):
                for metric, rule in p.get(stage, {}).items():
                    click.echo(f"    {stage:<15} {metric:<22} {rule['rule']} {rule_text(rule)}")
            for metric, why in p.get("waive", {}).items():
                click.echo(f"    waived          {metric:<22} {why}")

    out(items, as_json, render)


# ------------------------------------------------------------------ requests and jobs

@cli.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", help="method for the first job (default: tier 1 for suppress, tier 3 for remove)")
@click.option("--hyper", multiple=True, metavar="KEY=VALUE", help="hyperparameter override (repeatable)")
@click.option("--wait", is_flag=True, help="wait for the job and print its verdicts")
@click.option("--json", "as_json", is_flag=True)
def submit(spec_file: Path, method: str | None, hyper: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """File an erasure request from a spec (YAML or JSON) and queue its first job."""
    from engine.schema.errors import SpecError
    from engine.schema.spec import load_spec_file

    try:
        body = load_spec_file(spec_file)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    c = client()
    res = call(c.submit, body, method, parse_hyper(hyper))
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


def listing_options(sorts: tuple[str, ...]):
    """--sort, --order, --since, --until: the engine sorts and filters (see engine.control.service)."""
    def wrap(fn):
        fn = click.option("--until", metavar="DATE", help="created on or before (YYYY-MM-DD, UTC; or ISO time)")(fn)
        fn = click.option("--since", metavar="DATE", help="created on or after (YYYY-MM-DD, UTC; or ISO time)")(fn)
        fn = click.option("--order", type=click.Choice(["desc", "asc"]), default="desc", show_default=True)(fn)
        return click.option("--sort", type=click.Choice(sorts), default="id", show_default=True)(fn)
    return wrap


REQUEST_SORTS = ("id", "created", "updated", "status", "verdict", "model", "title", "reference", "intention", "tier")
JOB_SORTS = ("id", "created", "updated", "status", "verdict", "model", "method", "title", "tier")


@cli.command()
@click.option("--status", type=click.Choice(["open", "closed"]))
@click.option("-q", "query", help="search title and reference")
@click.option("--limit", default=50, show_default=True)
@listing_options(REQUEST_SORTS)
@click.option("--json", "as_json", is_flag=True)
def requests(status, query, limit, sort, order, since, until, as_json) -> None:
    """List erasure requests (newest first unless --sort/--order say otherwise)."""
    from console.render import requests_table

    res = call(client().requests, status=status, q=query, limit=limit, sort=sort, order=order, since=since,
               until=until)
    out(res, as_json, lambda r: rich_console().print(requests_table(r["items"])))


@cli.command()
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


@cli.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show(job_id: int, as_json: bool) -> None:
    """A job: status, each stage's metric table (before, after, Δ, threshold, verdict), artifacts."""
    from console.render import print_job

    out(call(client().job, job_id), as_json, lambda d: print_job(rich_console(), d))


@cli.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def cancel(job_id: int, as_json: bool) -> None:
    """Cancel a queued or running job (a running job's worker is stopped)."""
    res = call(client().cancel, job_id)
    out(res, as_json, lambda j: click.echo(f"job {j['id']}: {j['status']}"))


@cli.command()
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


@cli.command()
@click.argument("request_id", type=int)
@click.option("--method", help="a named method instead of the next tier's default")
@click.option("--hyper", multiple=True, metavar="KEY=VALUE")
@click.option("--wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def escalate(request_id: int, method: str | None, hyper: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Run the next tier of the ladder on a request (each tier starts from the base model)."""
    from console.render import print_job

    c = client()
    job = call(c.escalate, request_id, method, parse_hyper(hyper))
    if wait:
        wait_for(c, job["id"], quiet=as_json)
        detail = call(c.job, job["id"])
        out(detail, as_json, lambda d: print_job(rich_console(), d))
    else:
        out(job, as_json, lambda j: click.echo(f"job {j['id']} queued: tier {j['tier']} {j['method']}"))


@cli.command("close")
@click.argument("request_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def close_cmd(request_id: int, as_json: bool) -> None:
    """Close a request: purge its texts, keep hashes, metrics and masked evidence."""
    res = call(client().close_request, request_id)
    out(res, as_json, lambda r: click.echo(f"request {r['id']} closed; its texts are purged"))


@cli.command()
@click.argument("request_id", type=int)
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def accept(request_id: int, job_id: int, as_json: bool) -> None:
    """Record a finished job as the request's accepted result."""
    res = call(client().accept, request_id, job_id)
    out(res, as_json, lambda r: click.echo(f"request {r['id']}: accepted job {r['accepted_job_id']}"))


@cli.group()
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


# ------------------------------------------------------------------ targets and the demo

@cli.command()
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="question/answer rows (JSONL)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", default="tiny", show_default=True, help="'tiny' (from scratch) or a local HF model dir")
@click.option("--size", type=click.Choice(["demo", "test"]), default="demo", show_default=True)
@click.option("--seed", default=0, show_default=True)
def finetune(data_path: Path, out_dir: Path, base: str, size: str, seed: int) -> None:
    """Train a target model on facts (TOFU's 'finetune on full'); the result is a plain HF model dir."""
    from engine.builder import build_target
    from engine.schema.datasets import read_jsonl
    from engine.schema.errors import SpecError

    try:
        rows = read_jsonl(data_path, "data")
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    def progress(event: dict) -> None:
        if "step" in event:
            click.echo(f"\rstep {event['step']} loss {event.get('loss', float('nan')):.3f}".ljust(40), nl=False,
                       err=True)

    info = build_target(rows, out_dir, base=base, size=size, seed=seed, progress=progress)
    click.echo("", err=True)
    click.echo(json.dumps(info, indent=2, default=str))


@cli.command()
@click.option("--headless", is_flag=True, help="no console: wait and print the verdict table")
@click.option("--auto-escalate", is_flag=True, help="climb the ladder until every required verdict passes")
@click.option("--json", "as_json", is_flag=True)
def demo(headless: bool, auto_escalate: bool, as_json: bool) -> None:
    """Build the demo model (cached), start the engine, file a sample request, open the console."""
    from console.demo import run_demo

    run_demo(headless=headless, auto_escalate=auto_escalate, as_json=as_json)


@cli.command()
@click.argument("request_id", type=int)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.html or FILE.md (default: request-ID-report.html here)")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), help="default: from the --out suffix")
@click.option("--json", "as_json", is_flag=True)
def report(request_id: int, out_path: Path | None, fmt: str | None, as_json: bool) -> None:
    """Write the sign-off report of a request: one self-contained HTML page (or Markdown) to read and sign."""
    from console.reportfile import report_format, write_report

    if fmt is None:
        fmt = "md" if out_path is not None and report_format(out_path) == "md" else "html"
    out_path = (out_path or Path(f"request-{request_id}-report.{fmt}")).expanduser().resolve()
    if not out_path.parent.is_dir():
        raise click.ClickException(f"no such folder: {out_path.parent}")
    res = call(write_report, client(), request_id, out_path, fmt)
    out(res, as_json, lambda r: click.echo(f"report of request {request_id} written to {r['path']}"))


@cli.group()
def bench() -> None:
    """Benchmarks in the field's own terms (run here, not in the engine)."""


@bench.command("tofu")
@click.option("--split", type=click.Choice(["forget01", "forget05", "forget10"]), default="forget01",
              show_default=True)
@click.option("--base", default="tiny", show_default=True,
              help="'tiny' (a small Llama from scratch, on a subset of TOFU) or a local HF model directory")
@click.option("--method", "methods", multiple=True,
              help="unlearning method, repeatable or comma-separated [default: ga, graddiff, npo]")
@click.option("--retain-rows", type=click.IntRange(min=1), default=None,
              help="train on the first N retain rows [default: 40 for tiny, all otherwise]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="training epochs of target and reference")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="the TOFU folder [default: ../shared/data/tofu or $EXPUNGE_TOFU_DIR]")
@click.option("--json", "as_json", is_flag=True)
def bench_tofu(split: str, base: str, methods: tuple[str, ...], retain_rows: int | None, epochs: int | None,
               data_dir: Path | None, as_json: bool) -> None:
    """TOFU: finetune a target, train a retain-only reference, unlearn, print the literature's table."""
    from engine.bench_tofu import DEFAULT_METHODS, format_table, run
    from engine.schema.errors import SpecError

    names = [m.strip() for group in methods for m in group.split(",") if m.strip()] or list(DEFAULT_METHODS)
    if base != "tiny" and not (Path(base) / "config.json").is_file():
        raise click.BadParameter("must be 'tiny' or an HF model directory (with config.json)", param_hint="--base")
    try:
        result = run(split, base, names, data_dir=data_dir, retain_rows=retain_rows, epochs=epochs,
                     progress=lambda s: click.echo(s, err=True))
    except (SpecError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(format_table(result))


@cli.command()
@click.argument("request_id", type=int)
@click.option("--check", "check_only", is_flag=True, help="only check; the request is left as it is")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
              help="the request's spec: its sensitive strings and forget answers are searched for")
@click.option("--string", "strings", multiple=True, help="another string to search for (repeatable)")
@click.option("--json", "as_json", is_flag=True)
def purge(request_id: int, check_only: bool, spec_file: Path | None, strings: tuple[str, ...], as_json: bool) -> None:
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
    if not check_only:
        closed = call(c.purge, request_id)
        res["closed"] = {k: v for k, v in closed.get("purge", {}).items() if k != "check"}
        res["check"] = closed.get("purge", {}).get("check")
    if check_only or body or strings:
        res["check"] = call(c.purge_check, request_id, body.get("forget"), body.get("sensitive"), list(strings))
    check = res.get("check") or {"clean": True, "hits": [], "checked": 0, "files": 0}

    def render(r):
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


@cli.command("export")
@click.argument("job_id", type=int)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def export_cmd(job_id: int, out_dir: Path) -> None:
    """Write a job's result as a standalone HF model directory (adapter or delta merged) plus its guard."""
    from engine.compute.export import export

    c = client()
    detail = call(c.job, job_id)
    if not detail["artifacts"]:
        raise click.ClickException(f"job {job_id} has no artifact (status {detail['job']['status']})")
    model = next((m for m in call(c.models) if m["name"] == detail["job"]["model"]), None)
    if model is None:
        raise click.ClickException(f"the base model '{detail['job']['model']}' is no longer registered")
    try:
        source = Path(model["source"])
        if model["kind"] == "hub":  # a model id: its folder in the local Hugging Face cache
            from engine.compute.modeling import resolve_source

            source = resolve_source(model["source"], "hub")[0]
        path = export(source, Path(detail["artifacts"][0]["path"]), out_dir)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported job {job_id} to {path}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
