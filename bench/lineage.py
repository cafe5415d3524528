"""Benchmark a model line (issue 14): N requests accepted in turn through the real engine, one version each.

    .venv/bin/python bench/lineage.py                  # 10 requests on the demo model if built, else the tiny one
    .venv/bin/python bench/lineage.py --requests 3 --method npo --tiny   # graddiff by default
    .venv/bin/python bench/lineage.py --retry-tuned 8  # a job failing unit or control is run again, tuned

Per version k: the accept's wall time and its split (apply the job's change to v(k-1), materialise the HF folder,
the regression pass over the k carried forget sets, control; as the build subprocess measured them, plus its
start-up and the engine's hashing as the rest; the build process's first-generation warm-up on its own), the regression pass against k × one request's unit stage
(`after` unit timing of the jobs, mean), and the control figures against v0. Then the two ways to hold version
k, measured side by side: loading the materialised folder vs loading v0 and re-applying the k changes (the
"stack"). Targets (issue 14): regression of version k ≤ k × one unit stage, in one generation pass; retain
ROUGE-L of v10 ≥ 0.9 × v0 on the demo model.

Each request's job starts from the line's current version and keeps that version's answers to the forget prompts
of every request it carries (engine.compute.verify.line). By default every job is accepted as it comes (its own
verdict, judged against its parent, is printed beside it); --retry-tuned plays a careful operator, who accepts a job
failing unit or control only after running it again with its hyperparameters searched.

Writes bench/results/lineage-<model>-<N>[-retry<T>].json with the machine, the load and the commit."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/console.py (run as a script, its folder is first on the path) would shadow the console package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENSITIVE_KINDS = ("phone", "email", "account", "address")


def demo_model() -> tuple[Path, list[dict]] | None:
    """The demo model `expunge demo` built (the operator's own data folder), if there is one."""
    from engine.builder import META_FILE
    from engine.demo_data import demo_split
    from store.paths import get_paths

    cache = get_paths().models / "cache"
    for d in sorted(cache.glob("demo-*")) if cache.is_dir() else []:
        if (d / META_FILE).is_file():
            return d, demo_split()["train"]
    return None


def tiny_model() -> tuple[Path, list[dict]]:
    from tests.fixtures_model import tiny_model_dir, tiny_split

    return tiny_model_dir(), tiny_split()["train"]


def specs(rows: list[dict], n: int) -> tuple[list[dict], list[dict]]:
    """n one-person requests (the first n people), each retaining everyone but the subjects and the control
    sample (8 people after the subjects: the model's registered control set)."""
    people = list(dict.fromkeys(r["person"] for r in rows))
    if len(people) < n + 16:
        raise SystemExit(f"the model knows {len(people)} people: too few for {n} requests and a control set")
    control_people = people[n:n + 8]
    retain = [r for r in rows if r["person"] not in people[:n] and r["person"] not in control_people]
    control = [r for r in rows if r["person"] in control_people]
    out = []
    for i, person in enumerate(people[:n]):
        forget = [r for r in rows if r["person"] == person]
        out.append({"title": f"Erasure request for {person}", "reference": f"BENCH-{i + 1}", "intention": "remove",
                    "model": "m", "forget": forget, "retain": retain,
                    "sensitive": sorted({r["value"] for r in forget if r["attribute"] in SENSITIVE_KINDS}),
                    "policy": "default", "verification": "quick"})
    return out, control


def unit_seconds(detail: dict) -> float:
    after = ((detail.get("result") or {}).get("verify_timings") or {}).get("after") or {}
    return float(sum((after.get("unit") or {}).values()))


def stack_vs_materialised(line: dict, base: Path, job_artifacts: list[str]) -> dict:
    """Seconds to hold the last version: load its folder, vs load v0 and re-apply every job's change in turn."""
    from engine.compute.candidate import load_candidate
    from engine.compute.modeling import load_model

    last = line["versions"][-1]
    load_model(str(base), "hf", {"dtype": "fp32"}, "cpu")  # untimed: the process's first load pays the imports
    t = time.perf_counter()
    load_model(last["path"], "hf", {"dtype": "fp32"}, "cpu")
    materialised = time.perf_counter() - t
    t = time.perf_counter()
    model, tok = load_model(str(base), "hf", {"dtype": "fp32"}, "cpu")
    for art in job_artifacts:
        cand = load_candidate(model, tok, Path(art), inplace=True)
        model = cand.model.merge_and_unload() if cand.kind == "adapter" else cand.model
    stack = time.perf_counter() - t
    return {"materialised_load_s": round(materialised, 2), "stack_load_s": round(stack, 2),
            "stack_over_materialised": round(stack / materialised, 2) if materialised else None}


def run(args) -> dict:
    found = None if args.tiny else demo_model()
    model_dir, rows = found or tiny_model()
    label = "demo" if found else "test-size tiny"
    home = Path(tempfile.mkdtemp(prefix="ex-lineage-bench-", dir="/tmp"))
    os.environ["EXPUNGE_HOME"] = str(home)
    from console.client import EngineClient, EngineError
    from engine.control.daemon import start, stop
    from store.paths import get_paths

    paths = get_paths().ensure()
    requests, control = specs(rows, args.requests)
    control_file = home / "control.jsonl"
    control_file.write_text("".join(json.dumps(r) + "\n" for r in control))
    start(paths)
    client = EngineClient(paths, timeout=60)
    versions, units, artifacts = [], [], []
    try:
        client.add_model("m", str(model_dir), {"dtype": "fp32"}, retain_path=str(control_file))
        for k, spec in enumerate(requests, start=1):
            res = client.submit(spec, method=args.method)
            detail = finished(client, res["job"]["id"])
            judged = job_verdict(detail)
            if args.retry_tuned and not judged["unit_and_control"]:
                # A careful operator: a job that fails unit or control is not accepted as it is but run again
                # with the method's hyperparameters searched (`expunge escalate REQ --method M --tune`).
                print(f"request {k}: job {res['job']['id']} stages {judged['stages']}, failed {judged['job_failed']}: "
                      "escalate --tune", flush=True)
                retry = client.escalate(res["request"]["id"], method=args.method, tune={"trials": args.retry_tuned})
                detail = finished(client, retry["id"])
                judged = {**job_verdict(detail), "retried_after": judged}
                res = {**res, "job": retry}  # the tuned job is the one accepted, whatever its verdict
            units.append(unit_seconds(detail))
            artifacts.append(detail["artifacts"][0]["path"])
            t = time.perf_counter()
            try:
                client.accept(res["request"]["id"], res["job"]["id"])
            except EngineError as exc:  # the regression check refused it: the line stays as it was
                versions.append({"request": k, "refused": str(exc), "accept_s": round(time.perf_counter() - t, 2),
                                 **judged})
                print(f"request {k}: accept refused: {exc} (job {judged['job_verdict']}, {judged['job_steps']} steps, "
                      f"failed {judged['job_failed']})", flush=True)
                artifacts.pop()
                continue
            accept_s = time.perf_counter() - t
            v = client.model_versions("m")["versions"][-1]
            tm = v["timings"]
            measured = sum(tm.get(x, 0.0) for x in ("apply_s", "materialise_s", "warmup_s", "regression_s",
                                                     "control_s", "v0_control_s"))
            metrics, v0 = v["control"]["metrics"], v["control"]["v0"]
            versions.append({
                "version": v["number"], "carried": len(v["request_ids"]), "accept_s": round(accept_s, 2),
                "apply_s": tm.get("apply_s"), "materialise_s": tm.get("materialise_s"), "warmup_s": tm.get("warmup_s"),
                "regression_s": tm.get("regression_s"), "control_s": tm.get("control_s"),
                "v0_control_s": tm.get("v0_control_s"), "rest_s": round(accept_s - measured, 2),
                "regression_budget_s": round(len(v["request_ids"]) * (sum(units) / len(units)), 3),
                "leaks": {r: f"{x['leaked']}/{x['n']}" for r, x in v["regression"]["requests"].items()},
                "retain_rouge_l_x_v0": _ratio(metrics, v0, "retain_rouge_l"),
                "retain_prob_x_v0": _ratio(metrics, v0, "retain_prob"),
                "general_ppl_x_v0": _ratio(metrics, v0, "general_ppl"), **judged})
            print(_row(versions[-1]), flush=True)
        line = client.model_versions("m")
        holding = stack_vs_materialised(line, model_dir, artifacts)
    finally:
        client.close()
        stop(paths)
        shutil.rmtree(home, ignore_errors=True)
    return {"model": label, "method": args.method, "requests": args.requests, "retry_tuned": args.retry_tuned,
            "unit_stage_mean_s": round(sum(units) / len(units), 3), "versions": versions,
            "holding_version_n": holding}


def finished(client, job_id: int) -> dict:
    from tests.fixtures_model import wait_job

    detail = wait_job(client, job_id, timeout=3600)
    if detail["job"]["status"] != "succeeded":
        raise SystemExit(f"job {job_id} {detail['job']['status']}: {detail['job']['error']}")
    return detail


def job_verdict(detail: dict) -> dict:
    """The job's own verdict (judged against its parent version), whether its unit and control stages pass, the
    metrics it failed, and its steps."""
    job = detail["job"]
    stages = {s["stage"]: s["verdict"] for s in detail.get("stages") or []}
    failed = [f"{m['name']} {m['after']:.3g}" for s in detail.get("stages") or [] for m in s["metrics"]
              if m["passed"] is False and m["after"] is not None]
    return {"job": job["id"], "job_verdict": job["verdict"], "job_steps": job["step"], "job_failed": failed,
            "stages": stages, "unit_and_control": stages.get("unit") == "pass" and stages.get("control") == "pass",
            "tuned": job.get("tune") is not None}


def _ratio(metrics: dict, v0: dict, name: str) -> float | None:
    a, b = metrics.get(name), v0.get(name)
    return round(a / b, 3) if a is not None and b else None


HEADER = (f"{'ver':>4} {'carries':>7} {'accept':>7} {'apply':>6} {'mater.':>6} {'regr.':>6} {'≤k×unit':>8} "
          f"{'control':>7} {'rest':>6}  {'R-L×v0':>6} {'prob×v0':>7} {'ppl×v0':>6}  leaks")


def _row(v: dict) -> str:
    def f(x, w, d=2):
        return f"{x:>{w}.{d}f}" if isinstance(x, int | float) else f"{'—':>{w}}"
    leaks = " ".join(v["leaks"].values())
    return (f"{'v' + str(v['version']):>4} {v['carried']:>7} {f(v['accept_s'], 7)} {f(v['apply_s'], 6)} "
            f"{f(v['materialise_s'], 6)} {f(v['regression_s'], 6)} {f(v['regression_budget_s'], 8)} "
            f"{f((v['control_s'] or 0) + (v['v0_control_s'] or 0), 7)} {f(v['rest_s'], 6)}  "
            f"{f(v['retain_rouge_l_x_v0'], 6, 3)} {f(v['retain_prob_x_v0'], 7, 3)} {f(v['general_ppl_x_v0'], 6, 3)}"
            f"  {leaks}  job {v.get('job')}{' tuned' if v.get('tuned') else ''} {v.get('job_verdict')} "
            f"{v.get('job_steps')} steps {' '.join(v.get('job_failed') or [])}")


def machine() -> dict:
    from bench.record import commit
    from bench.record import machine as described

    return {"machine": described(), "commit": commit(), "load": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--method", default="graddiff")
    ap.add_argument("--retry-tuned", type=int, default=0, metavar="TRIALS",
                    help="a job that fails unit or control is run again tuned (escalate --tune, TRIALS trials) and "
                         "the tuned job accepted; 0 (default): every job is accepted as it comes")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny model even when the demo model is built")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    print(HEADER, flush=True)
    started = time.time()
    result = {**run(args), **machine(), "wall_s": round(time.time() - started, 1)}
    landed = [v for v in result["versions"] if "refused" not in v]
    last = landed[-1]
    within = [v["version"] for v in landed if v["regression_s"] is not None
              and v["regression_s"] <= v["regression_budget_s"]]
    result["targets"] = {
        "regression_within_k_units": f"{len(within)}/{len(landed)} versions",
        "refused": len(result["versions"]) - len(landed),
        "retain_rouge_l_last_x_v0": last["retain_rouge_l_x_v0"], "retain_target": 0.9}
    h = result["holding_version_n"]
    print(f"\nholding v{last['version']}: materialised folder {h['materialised_load_s']} s vs v0 + {len(landed)}"
          f" changes re-applied {h['stack_load_s']} s ({h['stack_over_materialised']}×)")
    print(f"regression within k × one unit stage ({result['unit_stage_mean_s']} s): "
          f"{result['targets']['regression_within_k_units']}; retain ROUGE-L v{last['version']}/v0 "
          f"{last['retain_rouge_l_x_v0']} (target ≥ 0.9)")
    retry = f"-retry{args.retry_tuned}" if args.retry_tuned else ""
    out = REPO / "bench" / "results" / f"lineage-{result['model'].replace(' ', '-')}-{args.requests}{retry}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
