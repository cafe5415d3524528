"""The persistent queue (Job rows in SQLite) mapped onto slots: one worker process per GPU, or one CPU slot.

Each slot has a thread that claims the next queued job, hands it to its worker (an engine.schema.payload
JobPayload) and hands the worker's events to the service (engine.control.service.runs), which writes them,
and to the event bus. The scheduler writes nothing itself. A worker that dies fails its one job; the next job
gets a fresh worker. The engine log gets one line per job phase, when it ends, with its duration and device.

The executor seam: with no executor (the default, `local`) each slot runs the worker subprocess below; an
executor (engine.control.executors, e.g. `ray`: one actor per GPU on a Ray cluster) gives the slots and runs
each claimed job itself, handing its events back through the same methods (_store_result, _fail, ...)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from engine.control import service
from engine.control.events import EventBus
from engine.control.service import runs
from engine.logs import quiet_worker_env
from engine.schema.errors import SpecError
from engine.schema.payload import JobPayload, JobResult
from store.db import session
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
    node: str = ""  # where its jobs run: this host, or the executor's node (a Ray node)


class Scheduler:
    def __init__(self, db, paths: Paths, bus: EventBus, slots: list[dict] | None = None, executor=None) -> None:
        self.db, self.paths, self.bus = db, paths, bus
        self.executor = executor  # None: local worker subprocesses
        self.executor_name = executor.name if executor is not None else "local"
        specs = slots or (executor.slot_specs() if executor is not None else detect_slots())
        self.slots = [Slot(s["slot"], s["device"], s.get("env", {}), node=s.get("node") or socket.gethostname())
                      for s in specs]
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.claim_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.executor is not None:
            self.executor.start(self)
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
        if self.executor is not None:
            self.executor.stop()

    def status(self) -> list[dict]:
        rows = [{"slot": s.index, "device": s.device, "job_id": s.job_id,
                 "worker_pid": s.proc.pid if s.proc and s.proc.poll() is None else None,
                 "executor": self.executor_name, "node": s.node, "state": "busy" if s.job_id else "idle"}
                for s in self.slots]
        if self.executor is not None:
            for row, slot in zip(rows, self.slots, strict=True):
                row.update(self.executor.slot_status(slot))
        return rows

    def cancel(self, job_id: int) -> bool:
        """Kill the worker running this job (the job is already marked cancelled in the store)."""
        for slot in self.slots:
            if slot.job_id == job_id:
                slot.cancelled.add(job_id)
                if self.executor is not None:
                    self.executor.cancel(slot)
                else:
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
                log.exception("job %d engine error while running it", job_id)
                self._fail(job_id, f"engine error while running the job: {type(exc).__name__}: {exc}")
                self._kill_worker(slot)
            finally:
                slot.job_id = None

    def _claim(self, slot: Slot) -> int | None:
        if self.executor is not None and not self.executor.accepting(slot):
            return None  # e.g. its Ray actor is being (re)created
        with self.claim_lock, session(self.db) as s:
            job_id = runs.claim_next(s, slot.index, slot.device, node=slot.node, executor=self.executor_name)
            slot.job_id = job_id  # before the lock goes: a cancel from now on finds this slot
        if job_id is None:
            return None
        log.info("job %d started on slot %d (%s, %s %s)", job_id, slot.index, slot.device, self.executor_name,
                 slot.node)
        self._publish_job(job_id)
        return job_id

    def _ensure_worker(self, slot: Slot) -> subprocess.Popen:
        if slot.proc is not None and slot.proc.poll() is None:
            return slot.proc
        env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
        quiet_worker_env(env)  # weight-loading progress bars fill the worker log with nothing an operator reads
        log_file = open(self.paths.state / f"worker-{slot.index}.log", "ab")  # noqa: SIM115 (the child owns it)
        slot.proc = subprocess.Popen([sys.executable, "-m", "engine.compute.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log_file, env=env, text=True, bufsize=1,
                                     start_new_session=True)
        log_file.close()
        return slot.proc

    def _kill_worker(self, slot: Slot) -> None:
        if self.executor is not None:
            self.executor.reset(slot)
            return
        proc = slot.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    def _run_one(self, slot: Slot, job_id: int) -> None:
        if self.executor is not None:
            self.executor.run(self, slot, job_id)
            return
        payload = self._payload(job_id, slot.device, slot)
        proc = self._ensure_worker(slot)
        proc.stdin.write(payload.model_dump_json() + "\n")
        proc.stdin.flush()
        tracker = ProgressTracker(self, job_id, slot.device)
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
            elif kind == "trial":  # a tuning trial started, ended, or won
                self._store_trial(job_id, msg["trial"])
            elif kind == "result":
                tracker.finish()
                self._store_result(job_id, msg)
                return
            elif kind == "error":
                tracker.finish()
                self._fail(job_id, msg["message"])
                return
        # The worker died in the middle of the job.
        tracker.finish()
        code = proc.wait(timeout=30)
        slot.proc = None
        if job_id in slot.cancelled:
            slot.cancelled.discard(job_id)
            log.info("job %d cancelled: its worker was stopped", job_id)
            self._close_trials(job_id, "cancelled", "the job was cancelled during this trial")
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

    def _payload(self, job_id: int, device: str = "cpu", slot: Slot | None = None) -> JobPayload:
        with session(self.db) as s:
            payload = runs.job_payload(s, job_id, self.paths, device)
        if slot is not None:  # recorded in the artifact's manifest
            payload.placement = {"executor": self.executor_name, "node": slot.node, "slot": slot.index}
        return payload

    def _store_baseline(self, key: str, payload: dict) -> None:
        with session(self.db) as s:
            runs.store_baseline(s, key, payload)

    def _store_result(self, job_id: int, msg: dict) -> None:
        """The worker's result message (its `type` and `job_id` aside, a JobResult) handed to the service."""
        result = JobResult.model_validate({k: v for k, v in msg.items() if k not in ("type", "job_id")})
        with session(self.db) as s:
            stored = runs.store_result(s, job_id, result)
            for member in result.members if stored else []:  # a batch: each member's own verdicts
                member_id = member["job_id"]
                runs.store_result(s, member_id, JobResult.model_validate(
                    {k: v for k, v in member.items() if k != "job_id"}))
        for member in result.members if stored else []:
            self._publish_job(member["job_id"])
        if not stored:  # cancelled while finishing: the operator's decision stands
            return
        log.info("job %d succeeded: verdict %s", job_id, result.verdict)
        shutil.rmtree(self.paths.job_work_dir(job_id), ignore_errors=True)
        self._publish_job(job_id)
        self._auto_escalate(job_id)

    def _auto_escalate(self, job_id: int) -> None:
        with session(self.db) as s:
            try:
                next_id = runs.auto_escalate(s, job_id)
            except SpecError as exc:
                log.warning("job %d auto-escalation stopped: %s", job_id, exc)
                return
        if next_id is None:
            return
        log.info("job %d failed its verdict: auto-escalation queued job %d", job_id, next_id)
        self._publish_job(next_id)
        self.wake.set()

    def _store_trial(self, job_id: int, trial: dict) -> None:
        from engine.control.service import trials

        with session(self.db) as s:
            trials.store_trial(s, job_id, trial)
        self.bus.publish("trial", job_id=job_id, trial=trial)

    def _close_trials(self, job_id: int, state: str, reason: str) -> None:
        from engine.control.service import trials

        with session(self.db) as s:
            trials.close_running(s, job_id, state, reason)

    def _fail(self, job_id: int, reason: str) -> None:
        self._close_trials(job_id, "failed", "the job failed during this trial")
        with session(self.db) as s:
            failed = runs.fail_job(s, job_id, reason)
        if failed:
            log.error("job %d failed: %s", job_id, reason.splitlines()[0] if reason else "")
            self._publish_job(job_id)

    def _publish_job(self, job_id: int) -> None:
        with session(self.db) as s:
            job = service.job_view(s, job_id)
        self.bus.publish("job", job_id=job_id, request_id=job["request_id"], job=job)


class ProgressTracker:
    """Publishes every progress event; has the service write the job row at most twice a second; logs each
    phase of the job when it ends, with its duration and the slot's device."""

    def __init__(self, scheduler: Scheduler, job_id: int, device: str = "") -> None:
        self.scheduler, self.job_id, self.device = scheduler, job_id, device
        self.latest: dict = {}
        self.last_write = 0.0
        self.phase, self.phase_started = "start", time.monotonic()
        with session(scheduler.db) as s:  # a resumed job keeps the loss curve it had when it stopped
            kept = runs.kept_progress(s, job_id)
        self.losses: list[list[float]] = list(kept.get("losses") or [])
        self.oom_backoff: dict | None = kept.get("oom_backoff")

    def update(self, msg: dict) -> None:
        fields = {k: msg[k] for k in ("phase", "step", "total", "loss", "eta") if k in msg}
        if fields.get("phase") and fields["phase"] != self.phase:
            self._end_phase(fields["phase"])
        if msg.get("phase") == "oom-backoff":
            # The worker ran out of memory and retries with half the batch: the operator sees it on the
            # job (its progress), in the event stream, in the engine log and in the artifact's manifest.
            self.oom_backoff = {k: msg.get(k) for k in ("step", "batch_size_before", "batch_size", "grad_accum",
                                                        "error")}
            fields["oom_backoff"] = self.oom_backoff
            log.warning("job %d out of memory at step %s; retrying with batch %s (grad_accum %s)", self.job_id,
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

    def _end_phase(self, next_phase: str | None) -> None:
        """One log line for the phase that just ended: `job 7 phase verify:reconstruction 412.3 s cpu`."""
        if self.phase is not None:
            elapsed = time.monotonic() - self.phase_started
            log.info("job %d phase %s %.1f s %s", self.job_id, self.phase, elapsed, self.device or "?")
        self.phase, self.phase_started = next_phase, time.monotonic()

    def finish(self) -> None:
        """The job's worker is done with it (result, error or death): the last phase ends, the row is written."""
        self._end_phase(None)
        self.flush()

    def flush(self) -> None:
        if not self.latest:
            return
        self.last_write = time.time()
        kept = {"losses": self.losses}
        if self.oom_backoff:
            kept["oom_backoff"] = self.oom_backoff
        with session(self.scheduler.db) as s:
            runs.save_progress(s, self.job_id, self.latest, kept)


def recover(db) -> list[int]:
    """At engine start: jobs that were running when the engine died are marked interrupted."""
    from engine.control.service import trials

    with session(db) as s:
        interrupted = runs.interrupt_running(s)
        for job_id in interrupted:  # a tuning job's running trial ended with the engine; its finished ones stay
            trials.close_running(s, job_id, "failed", "the engine stopped during this trial")
    for job_id in interrupted:
        log.warning("job %d interrupted: the engine stopped while it ran; `expunge resume %d` continues it",
                    job_id, job_id)
    return interrupted

