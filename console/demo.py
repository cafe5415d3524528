"""`expunge demo`: the embedded default, from nothing to a verdict table (or the console) in one command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from store.paths import Paths, get_paths

DEMO_MODEL = "demo"
FORGET_PERSON = "Alma Rivera"
RETAIN_SAMPLE = 100


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def prepare_demo(paths: Paths, size: str = "demo") -> dict:
    """Build (or reuse) the demo target, and write its retain/holdout samples and the sample request."""
    import random

    from engine.builder import cached_target
    from engine.demo_data import demo_split

    split = demo_split()
    click.echo("building the demo model (cached after the first run)…", err=True)
    model_dir = cached_target(split["train"], paths.models / "cache", size=size)
    folder = paths.data / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    forget = [r for r in split["train"] if r["person"] == FORGET_PERSON]
    others = [r for r in split["train"] if r["person"] != FORGET_PERSON]
    retain = random.Random(0).sample(others, min(RETAIN_SAMPLE, len(others)))
    write_jsonl(folder / "forget.jsonl", forget)
    write_jsonl(folder / "retain.jsonl", retain)
    write_jsonl(folder / "holdout.jsonl", split["holdout"])
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "address", "account")})
    spec = {"title": f"Erasure request 4711 — {FORGET_PERSON}", "reference": "DSR-2026-4711",
            "intention": "remove", "model": DEMO_MODEL, "forget": "forget.jsonl", "sensitive": sensitive,
            "policy": "default"}
    (folder / "request.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return {"model_dir": model_dir, "folder": folder, "spec_path": folder / "request.yaml"}


def run_demo(headless: bool, auto_escalate: bool, as_json: bool = False) -> None:
    from console.cli import call, client, rich_console, wait_for
    from console.render import print_job
    from engine.schema.spec import load_spec_file

    paths = get_paths().ensure()
    demo = prepare_demo(paths)
    c = client()
    call(c.add_model, DEMO_MODEL, str(demo["model_dir"]), {}, str(demo["folder"] / "retain.jsonl"),
         str(demo["folder"] / "holdout.jsonl"))
    body = load_spec_file(demo["spec_path"])
    res = call(c.submit, body, None, None, True, auto_escalate)
    request_id = res["request"]["id"]
    click.echo(f"filed request {request_id} from {demo['spec_path']}", err=True)
    if not headless:
        from console.app import run_console

        run_console(open_request=request_id)
        return
    results = []
    job = res["job"]
    while job is not None:
        wait_for(c, job["id"], quiet=as_json)
        detail = call(c.job, job["id"])
        results.append(detail)
        if not as_json:
            print_job(rich_console(), detail)
        job = None
        if auto_escalate:
            job = next_auto_job(c, request_id, detail)
    if as_json:
        click.echo(json.dumps({"request_id": request_id, "jobs": results}, indent=2, default=str))
    final = results[-1]["job"]
    sys.exit(0 if final["status"] == "succeeded" else 1)


def next_auto_job(c, request_id: int, detail: dict) -> dict | None:
    """The engine queues the next tier itself for an auto-escalating request; find that job."""
    import time

    from console.cli import call

    if detail["job"]["verdict"] == "pass" or detail["job"]["status"] != "succeeded":
        return None
    for _ in range(40):
        jobs = call(c.jobs, request_id=request_id, order="asc")["items"]
        later = [j for j in jobs if j["id"] > detail["job"]["id"]]
        if later:
            return later[0]
        if detail["job"]["tier"] >= 3:
            return None
        time.sleep(0.25)
    return None
