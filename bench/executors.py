"""Benchmark: the same demo jobs on the `local` executor and on `ray` (a local two-node cluster), side by side.

    python bench/executors.py                    # 6 jobs per configuration, the tests' tiny target
    python bench/executors.py --jobs 3 --only local ray1
    python bench/executors.py --address HOST:PORT   # an existing cluster instead of the local one

Configurations, each on a fresh engine (its own EXPUNGE_HOME), the jobs queued at once:
  local    one local CPU slot (the worker subprocess)
  ray1     Ray, one slot (`--gpus 1`), the model read from its path on the node (a shared folder)
  ray2     Ray, two slots on two nodes (`--gpus 2`)
  ship1    Ray, one slot, the model shipped through the object store (ship_models = "always"), cached on the
           node by its weights' sha256: the first job pays for the copy, the others find it

Each configuration first runs warm-up jobs (not timed): one that measures 'before' (cached for the rest), then
one per slot at once, so every slot's worker has its model loaded; then the timed jobs are queued at once.
Per job: wall = finished_at - started_at (what the scheduler's slot spent on it); runner = the worker's own
run_job time (timings.total_s); overhead = wall - runner (dispatch, the worker's pipe or Ray's polls, the
artifact's return). For Ray, the executor's own measures too (transfer: dispatch_s, model_s, artifact_s).
Targets (issue 16): Ray's per-job overhead <= 2 s over local with a warm actor; 2 slots finish the jobs in
<= 0.6x one slot's time. Results go to bench/results/executors-<time>.json with the machine, its load and the
commit."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("EXPUNGE_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

CONFIGS = {"local": {}, "ray1": {"gpus": 1}, "ray2": {"gpus": 2}, "ship1": {"gpus": 1, "ship": True}}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def demo_spec() -> tuple[Path, dict]:
    """The tests' tiny target and its demo request (one person's facts; 16 others retained; 4 holdout),
    judged on the quick profile with the guard: the cheapest whole job."""
    from tests.fixtures_model import tiny_model_dir, tiny_split

    split = tiny_split()
    train = split["train"]
    person = train[0]["person"]
    forget = [r for r in train if r["person"] == person]
    others = [r for r in train if r["person"] != person]
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "account", "address")})
    spec = {"title": f"Erasure request for {person}", "reference": "BENCH-1", "intention": "suppress",
            "model": "tiny", "forget": forget, "retain": others[:16], "holdout": split["holdout"][:4],
            "sensitive": sensitive, "policy": "default", "verification": "quick"}
    return tiny_model_dir(), spec


def run_config(name: str, conf: dict, jobs: int, model_dir: Path, spec: dict, address: str | None) -> dict:
    from console.client import EngineClient
    from engine.control.daemon import start, stop
    from store.paths import get_paths
    from tests.fixtures_model import wait_job

    home = Path(tempfile.mkdtemp(prefix="ex-bexec-", dir="/tmp"))
    os.environ["EXPUNGE_HOME"] = str(home)
    paths = get_paths().ensure()
    ship = 'ship_models = "always"\n' if conf.get("ship") else ""
    (paths.config / "engine.toml").write_text(f'[ray]\nnode_dir = "{paths.data / "nodes"}"\n{ship}')
    env_slots = os.environ.pop("EXPUNGE_SLOTS", None)
    if address is None:
        os.environ["EXPUNGE_SLOTS"] = "cpu"
    t = time.monotonic()
    start(paths, ray=address if conf.get("gpus") else None, gpus=conf.get("gpus"), wait=180)
    client = EngineClient(paths)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # the Ray actors placed (local: at once)
            slots = client.health()["slots"]
            if all(s.get("state") in ("idle", "ready") for s in slots):
                break
            time.sleep(0.2)
        ready_s = time.monotonic() - t
        client.add_model("tiny", str(model_dir))
        # Warm-up, not timed: one job measures 'before' (cached for the rest), then one job per slot at once
        # loads each slot's worker and model. The timed jobs then see warm slots, as a busy engine's do.
        res = client.submit(spec, method="guard")
        first = wait_job(client, res["job"]["id"], timeout=1800)
        warm = [client.submit_job(res["request"]["id"], "guard", {})["id"] for _ in slots]
        warmup = [first] + [wait_job(client, i, timeout=1800) for i in warm]
        t = time.monotonic()
        ids = [client.submit_job(res["request"]["id"], "guard", {})["id"] for _ in range(jobs)]
        details = [wait_job(client, i, timeout=1800) for i in ids]
        total_s = time.monotonic() - t
    finally:
        client.close()
        stop(paths)
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("EXPUNGE_SLOTS", None)
        if env_slots is not None:
            os.environ["EXPUNGE_SLOTS"] = env_slots
    rows = []
    for d in details:
        job = d["job"]
        assert job["status"] == "succeeded", job["error"]
        wall = stamp(job["finished_at"]) - stamp(job["started_at"])
        runner = d["result"]["timings"]["total_s"]
        rows.append({"job": job["id"], "wall_s": round(wall, 2), "runner_s": runner,
                     "overhead_s": round(wall - runner, 2), "measured_before": "before_s" in d["result"]["timings"],
                     "node": job["node"], "transfer": d["result"].get("transfer"), "verdict": job["verdict"]})
    cold = [{"job": d["job"]["id"], "wall_s": round(stamp(d["job"]["finished_at"]) - stamp(d["job"]["started_at"]), 2),
             "runner_s": d["result"]["timings"]["total_s"], "transfer": d["result"].get("transfer")} for d in warmup]
    return {"config": name, "slots": len(slots), "ready_s": round(ready_s, 1), "total_s": round(total_s, 1),
            "jobs": rows, "warmup": cold}


def summary(run: dict) -> dict:
    """Timed jobs (warm slots, cached 'before'): total wall time and mean per-job overhead; the first warm-up
    job's overhead (a cold slot: the worker starts and loads the model; on ship1 the model is shipped)."""
    first = run["warmup"][0]
    return {"total_s": run["total_s"], "mean_overhead_s": round(statistics.mean(r["overhead_s"] for r in run["jobs"]), 2),
            "max_overhead_s": max(r["overhead_s"] for r in run["jobs"]),
            "cold_first_job_overhead_s": round(first["wall_s"] - first["runner_s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local one, two nodes)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    model_dir, spec = demo_spec()
    cluster = None
    address = args.address
    if address is None and any(CONFIGS[c].get("gpus") for c in args.only):
        from ray.cluster_utils import Cluster

        node = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": 80 * 1024 * 1024}  # a fake GPU each
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        address = cluster.address
    runs = []
    try:
        for name in args.only:
            print(f"{name}: {args.jobs} jobs ...", flush=True)
            runs.append(run_config(name, CONFIGS[name], args.jobs, model_dir, spec,
                                   address if CONFIGS[name].get("gpus") else None))
            print(json.dumps(summary(runs[-1])), flush=True)
    finally:
        if cluster is not None:
            cluster.shutdown()

    by = {r["config"]: summary(r) for r in runs}
    print(f"\n{'config':8} {'slots':>5} {'total s':>8} {'overhead/job s':>15} {'max':>6} {'cold first job':>15}")
    for r in runs:
        s = by[r["config"]]
        print(f"{r['config']:8} {r['slots']:>5} {s['total_s']:>8.1f} {s['mean_overhead_s']:>15.2f} "
              f"{s['max_overhead_s']:>6.2f} {s['cold_first_job_overhead_s']:>15.2f}")
    ratios = {}
    if "local" in by and "ray1" in by:
        ratios["ray1_minus_local_overhead_s"] = round(by["ray1"]["mean_overhead_s"] - by["local"]["mean_overhead_s"], 2)
    if "ray1" in by and "ray2" in by:
        ratios["ray2_over_ray1_total"] = round(by["ray2"]["total_s"] / by["ray1"]["total_s"], 2)
    if "ship1" in by:
        shipped = next((r["transfer"] for r in next(x for x in runs if x["config"] == "ship1")["warmup"]
                        if (r["transfer"] or {}).get("model") == "shipped"), None)
        ratios["ship_first_job"] = shipped
    if "ray1" in by and "ship1" in by:
        ratios["ship1_minus_ray1_total_s"] = round(by["ship1"]["total_s"] - by["ray1"]["total_s"], 1)
    print(json.dumps(ratios, indent=2))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    record = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "loadavg_at_end": os.getloadavg()},
              "note": "shared 2-core machine: other sessions' tests and benchmarks ran meanwhile; Ray nodes are two "
                      "raylets on this one machine with one fake GPU (num_gpus=1 resource) and 1 CPU each",
              "jobs": args.jobs, "summary": by, "ratios": ratios, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"executors-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
