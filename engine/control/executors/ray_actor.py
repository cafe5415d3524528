"""What runs on a Ray node: one actor per slot (one GPU, or a few CPUs). It runs the same job runner as a
local slot, the worker subprocess `python -m engine.compute.worker`, fed the same JSON lines, and keeps it
(and so the loaded base model) between jobs. The engine polls the worker's events; the actor keeps the job's
files in its node folder and hands the artifact back in chunks. Torch-free and importable without Ray: the
engine wraps the class with ray.remote when it creates the actors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from engine.artifacts import file_sha256
from engine.logs import quiet_worker_env
from engine.model_files import weight_files, weights_sha256
from engine.schema.payload import JobPayload


class SlotActor:
    def __init__(self, node_root: str, slot: int, threads: int) -> None:
        import ray

        self.root = Path(node_root)
        self.slot, self.threads = slot, threads
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.address = ray.util.get_node_ip_address()
        for folder in (self.root, self.root / "jobs", self.root / "models"):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # the request's checkpoints and artifacts: private to the Ray user
        self.proc: subprocess.Popen | None = None
        self.events: deque = deque()
        self.arrived = threading.Condition()
        self.job_id: int | None = None
        self.verified: set[tuple[str, str]] = set()  # (path, sha256) whose weights were hashed here once

    # ------------------------------------------------------------ where it is

    def where(self) -> dict:
        device = f"cuda:{','.join(self.gpu_ids)}" if self.gpu_ids else "cpu"
        return {"node_id": self.node_id, "address": self.address, "host": socket.gethostname(),
                "pid": os.getpid(), "device": device, "gpu_ids": self.gpu_ids,
                "worker_pid": self.proc.pid if self.proc is not None and self.proc.poll() is None else None}

    # ------------------------------------------------------------ the base model on this node

    def model_path(self, source: str, sha256: str, kind: str = "hf") -> dict:
        """Where this node reads the model: its copy in the node cache (shipped earlier), else the registered
        path when this node can read it and its weights hash matches (a GGUF file: the file's hash); a hub
        id is looked up in this node's Hugging Face cache by the worker."""
        cached = self.root / "models" / sha256
        if cached.is_dir():
            return {"path": str(cached), "how": "cache"}
        if kind == "hub":
            return {"path": source, "how": "hub"}
        path = Path(source)
        if (source, sha256) in self.verified:
            return {"path": str(path), "how": "path"}
        if kind == "gguf":
            matches = path.is_file() and file_sha256(path) == sha256
        else:
            matches = path.is_dir() and bool(weight_files(path)) and weights_sha256(weight_files(path)) == sha256
        if matches:
            self.verified.add((source, sha256))
            return {"path": str(path), "how": "path"}
        return {"path": None, "how": "absent" if not path.exists() else "different"}

    def install_model(self, sha256: str, files: dict) -> str:
        """The model's files, shipped through the object store ({relative name: [chunk refs]}), written to the
        node cache under the weights' sha256 once they check out."""
        import ray

        final = self.root / "models" / sha256
        if final.is_dir():
            return str(final)
        tmp = self.root / "models" / f".tmp-{sha256}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for rel, refs in files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as fh:
                    for ref in refs:
                        fh.write(ray.get(ref))
            got = weights_sha256(weight_files(tmp))
            if got != sha256:
                raise ValueError(f"the shipped model's weights hash {got} is not the registered {sha256}")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return str(final)

    # ------------------------------------------------------------ a job

    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / f"job-{job_id}"

    def start_job(self, payload_json: str, model_path: str) -> dict:
        """Hand the job to the worker; its files (checkpoints, the artifact) go to this node's job folder."""
        payload = JobPayload.model_validate_json(payload_json)
        folder = self.job_dir(payload.job_id)
        payload.work_dir = str(folder / "work")
        payload.artifact_dir = str(folder / "artifact")
        payload.resume = (folder / "work" / "checkpoint").exists()  # a checkpoint on this node, not the engine's
        payload.model.source = model_path
        if payload.model.converted:  # a GGUF file's converted copy: this node's own, beside its shipped models
            payload.model.converted = str(self.root / "models" / Path(payload.model.converted).name)
        self._ensure_worker()
        self.job_id = payload.job_id
        self.proc.stdin.write(payload.model_dump_json() + "\n")
        self.proc.stdin.flush()
        return {"resume": payload.resume, "worker_pid": self.proc.pid}

    def poll(self, wait_s: float = 0.25) -> list[dict]:
        """The worker's events since the last poll (waiting up to wait_s for one); an `exit` event when the
        worker process has ended and nothing is left to read."""
        with self.arrived:
            if not self.events:
                self.arrived.wait(timeout=wait_s)
            out = list(self.events)
            self.events.clear()
        return out

    def cancel(self) -> bool:
        """Stop the running job's worker (the current step ends with it, as a local slot's)."""
        return self._kill_worker()

    def artifact_files(self, job_id: int) -> list[dict]:
        folder = self.job_dir(job_id) / "artifact"
        return [{"name": str(f.relative_to(folder)), "size": f.stat().st_size, "sha256": file_sha256(f)}
                for f in sorted(folder.rglob("*")) if f.is_file()]

    def read_chunk(self, job_id: int, name: str, offset: int, size: int) -> bytes:
        folder = (self.job_dir(job_id) / "artifact").resolve()
        path = (folder / name).resolve()
        if folder not in path.parents:
            raise ValueError(f"{name!r} is not in job {job_id}'s artifact")
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def forget_job(self, job_id: int) -> bool:
        """Remove the job's node folder (checkpoints, the artifact's node copy)."""
        folder = self.job_dir(job_id)
        existed = folder.exists()
        shutil.rmtree(folder, ignore_errors=True)
        return existed

    def log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self._log_path().read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------ the worker subprocess

    def _log_path(self) -> Path:
        return self.root / f"worker-{self.slot}.log"

    def _ensure_worker(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        started = threading.Event()
        threading.Thread(target=self._run_worker, args=(started,), daemon=True, name="worker-pipe").start()
        started.wait(timeout=60)
        if self.proc is None:
            raise RuntimeError(f"the worker process did not start; log:\n{self.log_tail()}")

    def _run_worker(self, started: threading.Event) -> None:
        """Start the worker and read its events until it ends. The worker is started from this thread, which
        lives as long as the worker: its parent-death signal (engine.compute.worker) fires with the actor."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "EXPUNGE_THREADS": str(self.threads)}
        if not self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ""
        quiet_worker_env(env)
        log_file = open(self._log_path(), "ab")  # noqa: SIM115 (the child owns it)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "engine.compute.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log_file, env=env, text=True, bufsize=1,
                                    start_new_session=True)
        finally:
            log_file.close()
            started.set()
        self.proc = proc
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self._push(msg)
        code = proc.wait()
        self._push({"type": "exit", "code": code, "job_id": self.job_id})

    def _push(self, msg: dict) -> None:
        with self.arrived:
            self.events.append(msg)
            self.arrived.notify_all()

    def _kill_worker(self) -> bool:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        return True

