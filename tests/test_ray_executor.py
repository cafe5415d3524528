"""The Ray executor against a real local Ray cluster: a head and a second node on this machine (CPU only,
one fake GPU each: `num_gpus=1` resources), started once per test session. The engine daemon connects to
it with `--ray ADDRESS` and runs the shared tiny model's jobs on actors, as an operator's would run on GPU
servers. The refusals (no Ray installed, a bad config) need no cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.schema.spec import load_spec_file
from tests.fixtures_model import wait_job

REPO = Path(__file__).resolve().parent.parent
QUICK = {"intention": "suppress", "verification": "quick"}  # the cheapest whole job: the guard, quick profile


def small_spec(demo_request: dict) -> dict:
    """The demo request cut down (its person's facts, 16 others to retain, 4 holdout): these tests are about
    where a job runs, not about what it measures, so it measures little."""
    spec = {**load_spec_file(demo_request["spec_path"]), **QUICK}
    return {**spec, "retain": spec["retain"][:16], "holdout": spec["holdout"][:4]}


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes (1 CPU, 1 fake GPU, a small object store each) for the whole session; their processes
    inherit this environment (PYTHONPATH: the nodes run this checkout)."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": 80 * 1024 * 1024}
    # The head's GCS takes a free port (Ray's default for a Cluster): two test sessions never collide.
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    second = cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield {"cluster": cluster, "address": cluster.address, "second": second}
    cluster.shutdown()


@pytest.fixture
def ray_engine(home, ray_cluster):
    """Start an engine daemon on the Ray cluster (`gpus`: how many of its two fake GPUs)."""
    from console.client import EngineClient
    from engine.control.daemon import start, stop

    clients = []

    def _start(gpus: int | None = None):
        # The nodes' job folders and model cache inside this test's home (removed with it).
        (home.config / "engine.toml").write_text(f'[ray]\nnode_dir = "{home.data / "nodes"}"\n')
        start(home, ray=ray_cluster["address"], gpus=gpus, wait=120)
        clients.append(EngineClient(home))
        wait_slots_ready(clients[-1], gpus or 2)
        return clients[-1]

    yield _start
    for c in clients:
        c.close()
    stop(home)


def wait_slots_ready(client, count: int, timeout: float = 180, not_pid: int | None = None) -> list[dict]:
    deadline = time.time() + timeout
    slots = []
    while time.time() < deadline:
        slots = client.health()["slots"]
        if len(slots) == count and all(s["state"] == "ready" and s["actor_pid"] != not_pid for s in slots):
            return slots
        time.sleep(0.3)
    raise AssertionError(f"the Ray slots did not become ready: {slots}")


def wait_training(client, job_id: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        job = client.job(job_id)["job"]
        if job["phase"] == "train" and job["step"] >= 1:
            return job
        assert job["status"] == "running" or job["status"] == "queued", job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never started training: {job}")


def follow_events(client, into: list, stop: threading.Event) -> threading.Thread:
    def run():
        try:
            for ev in client.events(after=0):
                into.append((time.monotonic(), ev))
                if stop.is_set():
                    return
        except Exception:  # noqa: BLE001 (the stream ends with the engine)
            return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def progress_phases(events: list, job_id: int) -> list[str]:
    phases = []
    for _, ev in events:
        if ev["type"] == "progress" and ev.get("job_id") == job_id and ev.get("phase"):
            if not phases or phases[-1] != ev["phase"]:
                phases.append(ev["phase"])
    return phases


async def console_views(home, job_id: int) -> tuple[list[str], str]:
    """What the console shows: the dashboard's slot lines and the job screen's head."""
    from console.app import ExpungeApp
    from tests.console_store import settle

    app = ExpungeApp(paths=home, start_engine=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        slots = [str(w.render()) for w in app.screen.query(".slot-head")]
    app = ExpungeApp(paths=home, start_engine=False, open_job=job_id)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        head = str(app.screen.query_one("#job-head").render())
    return slots, head


def metric_values(detail: dict) -> dict:
    return {(st["stage"], m["name"]): (m["before"], m["after"], m["passed"])
            for st in detail["stages"] for m in st["metrics"]}


# ------------------------------------------------------------------ refusals (no cluster needed)


@pytest.fixture
def without_ray(tmp_path, monkeypatch):
    """An environment where `import ray` fails, as on an install without the extra: a `ray` package first on
    PYTHONPATH that raises ImportError."""
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(blocker.parent), str(REPO),
                                                      os.environ.get("PYTHONPATH", "")]))


def test_engine_without_the_extra_refuses_ray_naming_the_install_command(home, without_ray):
    cli = subprocess.run([sys.executable, "-m", "console.cli", "engine", "start", "--ray", "auto"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert cli.returncode != 0
    assert "pip install 'expunge[ray]'" in cli.stderr, cli.stderr
    assert not home.socket.exists(), "no engine may start"
    # The same from the config file: the engine refuses at start and says how to install it.
    (home.config / "engine.toml").write_text('executor = "ray"\n')
    cli = subprocess.run([sys.executable, "-m", "console.cli", "engine", "start"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert cli.returncode != 0
    assert "pip install 'expunge[ray]'" in cli.stderr, cli.stderr


def test_a_bad_executor_setting_is_refused_naming_it(home):
    (home.config / "engine.toml").write_text('executor = "slurm"\n')
    cli = subprocess.run([sys.executable, "-m", "console.cli", "engine", "start"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert cli.returncode != 0 and "executor must be \"local\" or \"ray\", not 'slurm'" in cli.stderr, cli.stderr
    cli = subprocess.run([sys.executable, "-m", "console.cli", "engine", "start", "--gpus", "2"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert cli.returncode != 0 and "--gpus goes with --ray" in cli.stderr, cli.stderr


# ------------------------------------------------------------------ on the cluster


@pytest.mark.slow
def test_demo_request_runs_on_ray_live_with_the_same_verdicts_as_local(home, tiny, demo_request, ray_engine,
                                                                       ray_cluster):
    """The same job (same seed) on the local executor and then on Ray: the same verdicts and figures; the
    Ray job's progress events arrive while it runs, phase by phase as locally; its artifact comes back to
    this host checked; job, audit and manifest name the Ray node; `engine status` lists both slots."""
    from console.client import EngineClient
    from engine.artifacts import tree_sha256
    from engine.control.daemon import start, stop

    spec = small_spec(demo_request)
    start(home)
    local = EngineClient(home)
    local.add_model("tiny", str(tiny["dir"]))
    events_local, done = [], threading.Event()
    follow_events(local, events_local, done)
    res = local.submit(spec, method="guard")
    request_id, local_id = res["request"]["id"], res["job"]["id"]
    local_detail = wait_job(local, local_id)
    assert local_detail["job"]["status"] == "succeeded", local_detail["job"]["error"]
    assert local_detail["job"]["executor"] == "local"
    done.set()
    local.close()
    stop(home)

    engine = ray_engine()
    status = subprocess.run([sys.executable, "-m", "console.cli", "engine", "status"], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    lines = [ln for ln in status.stdout.splitlines() if ln.strip().startswith("slot")]
    assert len(lines) == 2 and all(" ray cuda:0 on " in ln and ln.endswith(": ready") for ln in lines), status.stdout
    node_ids = {s["node_id"] for s in engine.health()["slots"]}
    assert len(node_ids) == 2, "one actor per node (SPREAD over the two nodes' GPUs)"

    events, done = [], threading.Event()
    follow_events(engine, events, done)
    job_id = engine.submit_job(request_id, "guard", {})["id"]
    detail = wait_job(engine, job_id)
    done.set()
    job = detail["job"]
    assert job["status"] == "succeeded", job["error"]
    assert job["executor"] == "ray" and any(n[:12] in job["node"] for n in node_ids), job

    # Live: progress events came, phase after phase, before the job's end was published; the phases are
    # the local worker's (the same job runner).
    finished_at = next(t for t, ev in events if ev["type"] == "job" and ev.get("job_id") == job_id
                       and ev["job"]["status"] == "succeeded")
    live = [ev for t, ev in events if ev["type"] == "progress" and ev.get("job_id") == job_id and t < finished_at]
    assert len(live) >= 5, live
    assert progress_phases(events, job_id) == progress_phases(events_local, local_id)

    # The same verdicts and figures (the Ray job measured 'before' itself: its slot's device differs).
    assert job["verdict"] == local_detail["job"]["verdict"]
    assert ({s["stage"]: s["verdict"] for s in detail["stages"]}
            == {s["stage"]: s["verdict"] for s in local_detail["stages"]})
    assert metric_values(detail) == metric_values(local_detail)

    # The artifact is on this host, whole, and its manifest and the audit name the node.
    art = detail["artifacts"][0]
    path = Path(art["path"])
    assert path.parent == home.artifacts and path.is_dir()
    assert tree_sha256(path) == art["sha256"] == art["manifest"]["artifact_sha256"]
    assert art["manifest"]["placement"]["executor"] == "ray" and art["manifest"]["placement"]["node"] == job["node"]
    assert detail["result"]["transfer"]["model"] == "path" and detail["result"]["transfer"]["artifact_bytes"] > 0
    import sqlite3

    con = sqlite3.connect(home.db)
    row = con.execute("select detail_json from auditevent where action = 'job.start' and subject = ?",
                      (f"job:{job_id}",)).fetchone()
    con.close()
    assert job["node"] in row[0] and '"ray"' in row[0]
    assert engine.audit_verify()["ok"]

    # The console: the dashboard lists both Ray slots with their node; the job screen says where it ran.
    import asyncio

    slots, head = asyncio.run(console_views(home, job_id))
    assert len(slots) == 2 and all(" · ray " in line and "node " in line for line in slots), slots
    assert f"ray node {job['node']}" in head, head
    from engine.control.executors.ray_executor import engine_namespace

    jobs_dir = home.data / "nodes" / engine_namespace(home) / "jobs"
    assert jobs_dir.is_dir() and not list(jobs_dir.iterdir()), "the node kept the job's folder"


@pytest.mark.slow
def test_cancel_and_a_killed_actor_on_ray(home, tiny, demo_request, ray_engine):
    """One slot: cancel reaches the actor's running job and stops it; killing the actor's process mid-job
    fails that one job with Ray's reason (ActorDiedError, the node) and the next job runs on a recreated
    actor; an engine killed mid-job takes its actor (and the actor's worker) with it, and the restarted
    engine marks the job interrupted and resumable and runs on a new actor."""
    engine = ray_engine(gpus=1)
    engine.add_model("tiny", str(tiny["dir"]))
    spec = small_spec(demo_request)
    long = {"steps": 20000, "checkpoint_every": 10000, "stop_forget_rouge": None}
    res = engine.submit(spec, method="graddiff", hyper=long)
    request_id, first = res["request"]["id"], res["job"]["id"]

    wait_training(engine, first)
    engine.cancel(first)
    detail = wait_job(engine, first, timeout=60)
    assert detail["job"]["status"] == "cancelled"
    step = engine.job(first)["job"]["step"]
    time.sleep(2)
    assert engine.job(first)["job"]["step"] == step, "the cancelled job kept training"
    assert wait_slots_ready(engine, 1)[0]["job_id"] is None

    second = engine.submit_job(request_id, "graddiff", long)["id"]
    wait_training(engine, second)
    slot = engine.health()["slots"][0]
    os.kill(slot["actor_pid"], signal.SIGKILL)
    detail = wait_job(engine, second, timeout=120)
    error = detail["job"]["error"] or ""
    assert detail["job"]["status"] == "failed"
    assert "ActorDiedError" in error and slot["node_id"] in error, error

    recreated = wait_slots_ready(engine, 1, not_pid=slot["actor_pid"])[0]
    if recreated["node_id"] == slot["node_id"]:  # the new actor removed what the dead one left on its node
        from engine.control.executors.ray_executor import engine_namespace

        assert not (home.data / "nodes" / engine_namespace(home) / "jobs" / f"job-{second}").exists()
    third = engine.submit_job(request_id, "guard", {})["id"]
    detail = wait_job(engine, third)
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    assert engine.health()["slots"][0]["actor_pid"] == recreated["actor_pid"] != slot["actor_pid"]
    assert engine.health()["status"] == "ok" and engine.audit_verify()["ok"]

    from engine.control.daemon import alive
    from tests.test_faults import wait_dead

    fourth = engine.submit_job(request_id, "graddiff", long)["id"]
    wait_training(engine, fourth)
    engine_pid = engine.health()["pid"]
    os.kill(engine_pid, signal.SIGKILL)
    wait_dead(engine_pid)
    wait_dead(recreated["actor_pid"], timeout=60)  # Ray ends the actors of a driver that died
    restarted = ray_engine(gpus=1)
    job = restarted.job(fourth)["job"]
    assert job["status"] == "interrupted" and "resume" in job["error"], job
    assert restarted.health()["slots"][0]["actor_pid"] not in (recreated["actor_pid"], None)
    assert not alive(recreated["actor_pid"]) and restarted.audit_verify()["ok"]
