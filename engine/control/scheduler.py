"""The persistent queue (Job rows in SQLite) mapped onto slots: one worker process per GPU, or one CPU slot.

Each slot has a thread that claims the next queued job, hands it to its worker and turns the worker's
events into store writes and bus events. A worker that dies fails its one job; the next job gets a
fresh worker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import update
from sqlmodel import select

from engine.control.baseline_key import measurement_setup, setup_sha256
from engine.control.events import EventBus
from engine.control.registry import converted_dir
from engine.control.service import escalate, get_model, job_out, now, request_rows
from engine.schema.datasets import rows_sha256
from engine.schema.errors import SpecError
from engine.schema.policy import load_policy
from store import audit
from store.db import session
from store.models import Artifact, BaselineCache, Evidence, Job, Metric, Request, StageResult
from store.paths import Paths

PROGRESS_WRITE_INTERVAL = 0.5
log = logging.getLogger("expunge.scheduler")


def detect_slots() -> list[dict]:
    """One slot per visible GPU (CUDA_VISIBLE_DEVICES per worker), else one CPU slot; no torch import here."""
    override = os.environ.get("EXPUNGE_SLOTS")
    if override == "0":  # no slots: the engine queues jobs but runs none (maintenance, load tests)
        return []
    if override == "cpu" or shutil.which("nvidia-smi") is None:
        return [{"slot": 0, "device": "cpu", "env": {"CUDA_VISIBLE_DEVICES": ""}}]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() != "":
        gpus = [g.strip() for g in visible.split(",") if g.strip()]
    else:
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        gpus = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
    if not gpus:
        return [{"slot": 0, "device": "cpu", "env": {"CUDA_VISIBLE_DEVICES": ""}}]
    return [{"slot": i, "device": f"cuda:{g}", "env": {"CUDA_VISIBLE_DEVICES": g}} for i, g in enumerate(gpus)]


def signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


@dataclass
class Slot:
    index: int
    device: str
    env: dict
    proc: subprocess.Popen | None = None
    job_id: int | None = None
    cancelled: set = field(default_factory=set)


class Scheduler:
    def __init__(self, db, paths: Paths, bus: EventBus, slots: list[dict] | None = None) -> None:
        self.db, self.paths, self.bus = db, paths, bus
        self.slots = [Slot(s["slot"], s["device"], s["env"]) for s in (slots or detect_slots())]
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.claim_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for slot in self.slots:
            t = threading.Thread(target=self._run_slot, args=(slot,), name=f"slot-{slot.index}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for slot in self.slots:
            self._kill_worker(slot)
        for t in self.threads:
            t.join(timeout=10)

    def status(self) -> list[dict]:
        return [{"slot": s.index, "device": s.device, "job_id": s.job_id,
                 "worker_pid": s.proc.pid if s.proc and s.proc.poll() is None else None} for s in self.slots]

    def cancel(self, job_id: int) -> bool:
        """Kill the worker running this job (the job is already marked cancelled in the store)."""
        for slot in self.slots:
            if slot.job_id == job_id:
                slot.cancelled.add(job_id)
                self._kill_worker(slot)
                return True
        return False

    # ------------------------------------------------------------ slot loop

    def _run_slot(self, slot: Slot) -> None:
        while not self.stopping.is_set():
            job_id = self._claim(slot)
            if job_id is None:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            try:
                self._run_one(slot, job_id)
            except Exception as exc:  # never let one job take the slot down
                self._fail(job_id, f"engine error while running the job: {type(exc).__name__}: {exc}")
                self._kill_worker(slot)
            finally:
                slot.job_id = None

    def _claim(self, slot: Slot) -> int | None:
        with self.claim_lock, session(self.db) as s:
            job = s.exec(select(Job).where(Job.status == "queued")
                         .order_by(Job.priority.desc(), Job.id.asc()).limit(1)).first()
            if job is None:
                return None
            res = s.exec(update(Job).where(Job.id == job.id, Job.status == "queued").values(
                status="running", started_at=now(), slot=slot.index, device=slot.device, error=None, phase="start"))
            if res.rowcount != 1:
                return None
            audit.append(s, "job.start", f"job:{job.id}", {"slot": slot.index, "device": slot.device})
            s.commit()
            slot.job_id = job.id
        self._publish_job(job.id)
        return job.id

    def _ensure_worker(self, slot: Slot) -> subprocess.Popen:
        if slot.proc is not None and slot.proc.poll() is None:
            return slot.proc
        env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.paths.state / f"worker-{slot.index}.log", "ab")  # noqa: SIM115 (the child owns it)
        slot.proc = subprocess.Popen([sys.executable, "-m", "engine.compute.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, env=env, text=True, bufsize=1,
                                     start_new_session=True)
        log.close()
        return slot.proc

    def _kill_worker(self, slot: Slot) -> None:
        proc = slot.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    def _run_one(self, slot: Slot, job_id: int) -> None:
        payload = self._payload(job_id, slot.device)
        proc = self._ensure_worker(slot)
        proc.stdin.write(json.dumps(payload) + "\n")
        proc.stdin.flush()
        tracker = ProgressTracker(self, job_id)
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            kind = msg.get("type")
            if kind == "progress":
                tracker.update(msg)
            elif kind == "baseline":
                self._store_baseline(msg["key"], msg["payload"])
            elif kind == "result":
                tracker.flush()
                self._store_result(job_id, msg)
                return
            elif kind == "error":
                tracker.flush()
                self._fail(job_id, msg["message"])
                return
        # The worker died in the middle of the job.
        code = proc.wait(timeout=30)
        slot.proc = None
        if job_id in slot.cancelled:
            slot.cancelled.discard(job_id)
            self._publish_job(job_id)
            return
        why = f"killed by {signal_name(code)}" if code < 0 else f"exited with status {code}"
        if code == -signal.SIGKILL:
            why += " (an operator, or the kernel's out-of-memory killer)"
        self._fail(job_id, f"the worker process {why} during the job; last log lines:\n{self._log_tail(slot)}")

    def _log_tail(self, slot: Slot, lines: int = 8) -> str:
        path = self.paths.state / f"worker-{slot.index}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------ payload and results

    def _payload(self, job_id: int, device: str = "cpu") -> dict:
        """What the worker needs for the job; `device`: the slot's, part of the cached 'before' key."""
        from engine.demo_data import GENERAL_TEXT

        with session(self.db) as s:
            job = s.get(Job, job_id)
            req = s.get(Request, job.request_id)
            model = get_model(s, req.model_name)
            rows = request_rows(s, req.id)
            if rows.get("forget") is None:
                raise RuntimeError(f"request {req.id} has been closed and its texts purged")
            policy = load_policy(req.policy)
            model_spec = {"name": model.name, "source": model.source, "kind": model.kind,
                          "weights_sha256": model.weights_sha256,
                          "options": job_model_options(json.loads(model.options_json), json.loads(req.spec_json))}
            if model.kind == "gguf":
                model_spec["converted"] = str(converted_dir(self.paths.converted, model.weights_sha256))
            setup = measurement_setup(model.source, model.kind, model_spec["options"], device)
            key = baseline_key(model.weights_sha256, rows, GENERAL_TEXT, model_spec["options"], setup)
            cached = s.exec(select(BaselineCache).where(BaselineCache.key == key)).first()
            work_dir = self.paths.data / "jobs" / f"job-{job_id}"
            return {
                "job_id": job_id, "method": job.method, "hyper": json.loads(job.hyper_json),
                "intention": req.intention, "policy": policy, "model": model_spec,
                "rows": {k: rows.get(k) for k in ("forget", "retain", "holdout", "probes")},
                "sensitive": rows.get("sensitive") or [], "general_text": GENERAL_TEXT,
                "baseline_key": key, "baseline": json.loads(cached.payload_json) if cached else None,
                "work_dir": str(work_dir), "resume": (work_dir / "checkpoint").exists(),
                "artifact_dir": str(self.paths.artifacts / f"job-{job_id}"),
            }

    def _store_baseline(self, key: str, payload: dict) -> None:
        with session(self.db) as s:
            if s.exec(select(BaselineCache).where(BaselineCache.key == key)).first() is None:
                s.add(BaselineCache(key=key, payload_json=json.dumps(payload)))
                s.commit()

    def _store_result(self, job_id: int, msg: dict) -> None:
        with session(self.db) as s:
            job = s.get(Job, job_id)
            if job.status != "running":  # cancelled while finishing: keep the operator's decision
                return
            req = s.get(Request, job.request_id)
            # The policy the worker judged against, not a re-read: a profile edited meanwhile changes nothing.
            policy_json = json.dumps(msg["policy"])
            for st in msg["stages"]:
                sr = StageResult(job_id=job_id, stage=st["stage"], verdict=st["verdict"], required=st["required"],
                                 policy_name=req.policy, policy_json=policy_json, note=st.get("note"))
                s.add(sr)
                s.flush()
                for m in st["metrics"]:
                    s.add(Metric(stage_result_id=sr.id, name=m["name"], before=m["before"], after=m["after"],
                                 threshold=m["threshold"], rule=m["rule"], passed=m["passed"],
                                 ci_low=m.get("ci_low"), ci_high=m.get("ci_high"), n=m.get("n"), note=m.get("note")))
            for e in msg["evidence"]:
                e = dict(e)
                spans = {"before": e.pop("spans_before", None), "after": e.pop("spans_after", None)}
                s.add(Evidence(job_id=job_id, **e, spans_json=json.dumps(spans)))
            art = msg["artifact"]
            s.add(Artifact(job_id=job_id, kind=art["kind"], path=art["path"], sha256=art["sha256"],
                           manifest_json=json.dumps(art["manifest"])))
            job.status, job.verdict, job.finished_at = "succeeded", msg["verdict"], now()
            job.phase, job.eta_s, job.device = "done", 0.0, msg.get("device", job.device)
            job.result_json = json.dumps(msg.get("result", {}))
            req.verdict = msg["verdict"]
            s.add(job)
            s.add(req)
            audit.append(s, "job.finish", f"job:{job_id}", {
                "verdict": msg["verdict"], "stages": {st["stage"]: st["verdict"] for st in msg["stages"]},
                "artifact_sha256": art["sha256"]})
            s.commit()
        shutil.rmtree(self.paths.data / "jobs" / f"job-{job_id}", ignore_errors=True)
        self._publish_job(job_id)
        self._auto_escalate(job_id)

    def _auto_escalate(self, job_id: int) -> None:
        """An auto-escalating request climbs one tier after a failed verdict, until the top tier."""
        with session(self.db) as s:
            job = s.get(Job, job_id)
            req = s.get(Request, job.request_id)
            if not req.auto_escalate or job.verdict == "pass" or job.tier >= 3 or req.status != "open":
                return
            try:
                nxt = escalate(s, req.id, actor="auto-escalate")
            except SpecError as exc:
                log.warning("auto-escalation of request %s stopped: %s", req.id, exc)
                return
        self._publish_job(nxt.id)
        self.wake.set()

    def _fail(self, job_id: int, reason: str) -> None:
        with session(self.db) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != "running":
                return
            job.status, job.error, job.finished_at, job.phase = "failed", reason, now(), "failed"
            s.add(job)
            audit.append(s, "job.fail", f"job:{job_id}", {"reason": reason[:500]})
            s.commit()
        self._publish_job(job_id)

    def _publish_job(self, job_id: int) -> None:
        with session(self.db) as s:
            job = s.get(Job, job_id)
            req = s.get(Request, job.request_id)
            self.bus.publish("job", job_id=job_id, request_id=job.request_id, job=job_out(job, req))


class ProgressTracker:
    """Publishes every progress event; writes the job row at most twice a second."""

    def __init__(self, scheduler: Scheduler, job_id: int) -> None:
        self.scheduler, self.job_id = scheduler, job_id
        self.latest: dict = {}
        self.losses: list[list[float]] = []
        self.oom_backoff: dict | None = None
        self.last_write = 0.0
        with session(scheduler.db) as s:  # a resumed job keeps the loss curve it had when it stopped
            job = s.get(Job, job_id)
            if job is not None:
                kept = json.loads(job.progress_json or "{}")
                self.losses = list(kept.get("losses") or [])
                self.oom_backoff = kept.get("oom_backoff")

    def update(self, msg: dict) -> None:
        fields = {k: msg[k] for k in ("phase", "step", "total", "loss", "eta") if k in msg}
        if msg.get("phase") == "oom-backoff":
            # The worker ran out of memory and retries with half the batch: the operator sees it on the
            # job (progress_json), in the event stream, in the engine log and in the artifact's manifest.
            self.oom_backoff = {k: msg.get(k) for k in ("step", "batch_size_before", "batch_size", "grad_accum",
                                                        "error")}
            fields["oom_backoff"] = self.oom_backoff
            log.warning("job %s: out of memory at step %s; retrying with batch %s (grad_accum %s)", self.job_id,
                        msg.get("step"), msg.get("batch_size"), msg.get("grad_accum"))
            self.last_write = 0.0
        self.latest.update(fields)
        if msg.get("loss") is not None and msg.get("step") is not None:
            if self.losses and self.losses[-1][0] >= msg["step"]:  # resumed from an earlier checkpoint
                self.losses = [p for p in self.losses if p[0] < msg["step"]]
            self.losses.append([msg["step"], msg["loss"]])
            if len(self.losses) > 2000:  # keep the curve's shape, not every point
                self.losses = self.losses[::2]
        self.scheduler.bus.publish("progress", job_id=self.job_id, **fields)
        if time.time() - self.last_write >= PROGRESS_WRITE_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if not self.latest:
            return
        self.last_write = time.time()
        with session(self.scheduler.db) as s:
            job = s.get(Job, self.job_id)
            if job is None or job.status != "running":
                return
            job.phase = self.latest.get("phase", job.phase)
            job.step = int(self.latest.get("step", job.step) or 0)
            job.total = int(self.latest.get("total", job.total) or 0)
            job.loss = self.latest.get("loss", job.loss)
            job.eta_s = self.latest.get("eta", job.eta_s)
            kept = {"losses": self.losses}
            if self.oom_backoff:
                kept["oom_backoff"] = self.oom_backoff
            job.progress_json = json.dumps(kept)
            s.add(job)
            s.commit()


def job_model_options(options: dict, spec: dict) -> dict:
    """The model's registered options with the request's overrides (chat_template: auto | none) and,
    when not 'full', its verification profile: what the 'before' measurement depends on besides the data."""
    out = dict(options)
    if spec.get("chat_template"):
        out["chat_template"] = spec["chat_template"]
    if spec.get("verification", "full") != "full":
        out["verification"] = spec["verification"]
    return out


def baseline_key(weights_sha256: str, rows: dict, general_text: list[str], options: dict, setup: dict) -> str:
    """The cached 'before' measurement's key: weights, rows, options and the measurement setup
    (`engine.control.baseline_key.measurement_setup`: code, libraries, device, dtype, prompt format, files)."""
    parts = [setup_sha256(setup), weights_sha256, json.dumps(options, sort_keys=True), rows_sha256(general_text)]
    parts += [rows_sha256(rows.get(k)) for k in ("forget", "retain", "holdout", "probes", "sensitive")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def recover(db) -> list[int]:
    """At engine start: jobs that were running when the engine died are marked interrupted."""
    with session(db) as s:
        jobs = s.exec(select(Job).where(Job.status == "running")).all()
        for job in jobs:
            job.status, job.error = "interrupted", "the engine stopped while this job ran; `expunge resume` continues it"
            s.add(job)
            audit.append(s, "job.interrupt", f"job:{job.id}", {})
        s.commit()
        return [j.id for j in jobs]


def work_dir_of(paths: Paths, job_id: int) -> Path:
    return paths.data / "jobs" / f"job-{job_id}"
