"""Faults: a crashed engine, a job that runs out of memory, a full artifacts disk. Each against the real
engine daemon and worker on the shared tiny model."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.schema.spec import load_spec_file
from tests.fixtures_model import wait_job


def wait_dead(pid: int, timeout: float = 30) -> None:
    from engine.control.daemon import alive

    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid) or _zombie(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")


def _zombie(pid: int) -> bool:
    """A process whose parent is gone may linger as a zombie when PID 1 does not reap: it runs no code."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state in ("Z", "X")


def counts(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("request", "requestdata", "job", "stageresult", "metric", "evidence", "artifact",
                          "auditevent", "baselinecache")}
    finally:
        con.close()


@pytest.fixture
def start_engine(home, monkeypatch):
    """Start the real engine daemon with extra environment (it inherits the test's environment)."""
    from console.client import EngineClient
    from engine.control.daemon import start, stop

    clients = []

    def _start(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        start(home)
        clients.append(EngineClient(home))
        return clients[-1]

    yield _start
    for c in clients:
        c.close()
    stop(home)


# ------------------------------------------------------------------ engine crashes


def test_stale_pid_file_and_socket_from_a_crash_are_cleaned_on_restart(start_engine, home):
    engine = start_engine()
    pid = engine.health()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    # The crash left its pid file and socket behind ...
    assert home.pidfile.exists() and home.pidfile.read_text().strip() == str(pid)
    assert home.socket.exists()
    # ... and neither blocks a restart: the lock died with the process, the socket is replaced.
    engine = start_engine()
    health = engine.health()
    assert health["status"] == "ok" and health["pid"] != pid
    assert home.pidfile.read_text().strip() == str(health["pid"])


@pytest.mark.slow
def test_engine_killed_mid_job_marks_it_interrupted_and_resume_continues_from_the_checkpoint(
        start_engine, home, tiny, demo_request):
    """Kill -9 the engine after a checkpoint: the worker dies with it, the restart marks the job interrupted,
    `expunge resume` continues it from the checkpoint to the same step count, and no row is lost or
    doubled."""
    from console.cli import cli
    from engine.control.daemon import alive

    engine = start_engine()
    engine.add_model("tiny", str(tiny["dir"]))
    steps, every = 150, 10
    # No early stop: the run must last its full step count, before and after the kill.
    res = engine.submit(load_spec_file(demo_request["spec_path"]), method="graddiff",
                        hyper={"steps": steps, "checkpoint_every": every, "stop_forget_rouge": None})
    job_id = res["job"]["id"]
    seen = {"step": 0}
    reached = threading.Event()

    def follow():
        try:
            for ev in engine.events(after=0):
                if ev["type"] == "progress" and ev.get("phase") == "train" and (ev.get("step") or 0) > 2 * every:
                    seen["step"] = ev["step"]
                    reached.set()
                    return
        except Exception:  # the stream ends with the engine
            reached.set()

    threading.Thread(target=follow, daemon=True).start()
    assert reached.wait(timeout=400), f"the job never trained past step {2 * every}: {engine.job(job_id)['job']}"
    health = engine.health()
    engine_pid, worker_pid = health["pid"], health["slots"][0]["worker_pid"]
    os.kill(engine_pid, signal.SIGKILL)
    wait_dead(engine_pid)
    wait_dead(worker_pid)  # PR_SET_PDEATHSIG: no orphan keeps training
    assert seen["step"] > 2 * every and seen["step"] < steps, seen
    ckpt = home.data / "jobs" / f"job-{job_id}" / "checkpoint" / "state.pt"
    assert ckpt.is_file()
    assert home.pidfile.exists() and home.socket.exists()
    before = counts(home.db)
    assert before["job"] == 1 and before["stageresult"] == 0 and before["baselinecache"] == 1

    engine = start_engine()
    job = engine.job(job_id)["job"]
    assert job["status"] == "interrupted" and "resume" in job["error"]
    result = CliRunner().invoke(cli, ["resume", str(job_id), "--wait", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    detail = wait_job(engine, job_id)
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    train = detail["result"]["train"]
    assert train["steps"] == steps and not train.get("stopped_early")
    assert train["resumed_from"] is not None and every * 2 <= train["resumed_from"] < steps
    assert train["resumed_from"] % every == 0
    assert "before_s" not in detail["result"]["timings"], "the resumed job re-measured 'before'"
    # The loss curve goes on from where it was: no step twice (the store keeps what it had written, at
    # most half a second behind the kill; the steps after the checkpoint are run, and drawn, again).
    curve = [step for step, _ in detail["progress"]["losses"]]
    assert curve[0] == 1 and curve[-1] == steps and curve == sorted(set(curve)), curve
    assert any(step <= train["resumed_from"] for step in curve[:-1]) and len(curve) > steps // 2
    assert not ckpt.parent.parent.exists(), "the work dir outlived the finished job"

    after = counts(home.db)
    for table in ("request", "requestdata", "job", "baselinecache"):
        assert after[table] == before[table], (table, before, after)
    assert after["stageresult"] == 3 and after["metric"] > 0 and after["artifact"] == 1
    con = sqlite3.connect(home.db)
    actions = [r[0] for r in con.execute("select action from auditevent where subject = ? order by id",
                                         (f"job:{job_id}",))]
    con.close()
    assert actions == ["job.queue", "job.start", "job.interrupt", "job.resume", "job.start", "job.finish"]
    assert after["auditevent"] == before["auditevent"] + 4
    assert engine.audit_verify()["ok"]
    assert not alive(worker_pid) or _zombie(worker_pid)


# ------------------------------------------------------------------ out of memory


def _idle_worker_peak_mb(tiny_dir: Path) -> int:
    """The address space a worker needs to import the stack and load the tiny model (CPU)."""
    code = (f"from engine.compute.modeling import load_model; load_model({str(tiny_dir)!r}, device='cpu'); "
            "print([int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmPeak')][0] // 1024)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_out_of_memory_fails_the_job_naming_the_cause_and_the_fix(start_engine, home, tiny, demo_request):
    """A worker capped (EXPUNGE_WORKER_MEMORY_MB, RLIMIT_AS) a little above what loading the model needs,
    given a batch far too big for it: the job fails with a message that says out of memory and names the
    fixes; the worker and the engine carry on."""
    from sqlmodel import Session, select

    from engine.control.baseline import GENERAL_TEXT, baseline_key, measurement_setup
    from engine.control.service import request_rows
    from store.db import make_engine
    from store.models import BaselineCache, ModelEntry, Request

    limit = _idle_worker_peak_mb(tiny["dir"]) + 800
    engine = start_engine(EXPUNGE_WORKER_MEMORY_MB=limit, EXPUNGE_SLOTS="cpu")
    engine.add_model("tiny", str(tiny["dir"]))
    # Eight forget rows of 6,000 digits (a digit is one token): one batch of them needs gigabytes of
    # activations; the model itself needs a few MB.
    rng = random.Random(0)
    spec = load_spec_file(demo_request["spec_path"])
    spec["forget"] = [{"question": f"What is the serial number of record {i}?",
                       "answer": "".join(rng.choice("0123456789") for _ in range(6000))} for i in range(8)]
    spec["sensitive"] = []
    req = engine.submit(spec, start=False)["request"]
    # Measuring 'before' on rows this long takes minutes; what this test is about is the training step,
    # so the request's 'before' metrics are put in the cache, as an earlier job on its data would have.
    db = make_engine(home.db)
    with Session(db) as s:
        model = s.exec(select(ModelEntry).where(ModelEntry.name == "tiny")).one()
        key = baseline_key(model.weights_sha256, request_rows(s, req["id"]), GENERAL_TEXT, model.options,
                           measurement_setup(model.source, model.kind, model.options, "cpu"))
        assert s.get(Request, req["id"]) is not None
        s.add(BaselineCache(key=key, payload={}))
        s.commit()
    db.dispose()
    job = engine.submit_job(req["id"], "graddiff", {"steps": 2, "batch_size": 1024, "max_length": 8192})
    detail = wait_job(engine, job["id"], timeout=300)
    error = detail["job"]["error"] or ""
    assert detail["job"]["status"] == "failed", detail["job"]
    assert "out of memory" in error.lower(), error
    for fix in ("batch_size", "LoRA", "gradient checkpointing"):
        assert fix in error, (fix, error)
    assert "killed by" not in error  # the worker caught it: one job failed, not the process
    health = engine.health()
    assert health["status"] == "ok"
    assert health["slots"][0]["worker_pid"] is not None, "the worker died with its job"
    assert engine.audit_verify()["ok"]


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root, or passwordless sudo): writing an artifact there fails with ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    res = subprocess.run(sudo + ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(sudo + ["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_full_artifacts_disk_fails_the_job_and_leaves_nothing_half_written(start_engine, home, tiny,
                                                                           demo_request, small_disk):
    engine = start_engine(EXPUNGE_ARTIFACTS_DIR=small_disk)
    assert home.artifacts == small_disk.resolve()
    engine.add_model("tiny", str(tiny["dir"]))
    # A LoRA adapter on every linear layer of the tiny model is ~140 KB: more than the disk holds.
    res = engine.submit(load_spec_file(demo_request["spec_path"]), method="graddiff", hyper={"steps": 2})
    detail = wait_job(engine, res["job"]["id"])
    assert detail["job"]["status"] == "failed"
    assert "No space left on device" in (detail["job"]["error"] or ""), detail["job"]["error"]
    assert detail["artifacts"] == []
    assert list(small_disk.iterdir()) == [], "a half-written artifact was left where a reader could take it"
    assert os.statvfs(small_disk).f_bfree == os.statvfs(small_disk).f_blocks
    con = sqlite3.connect(home.db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("select count(*) from artifact").fetchone()[0] == 0
    con.close()
    assert engine.audit_verify()["ok"]
    assert engine.health()["status"] == "ok"
