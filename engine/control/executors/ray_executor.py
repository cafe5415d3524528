"""The Ray executor, on the engine's side: one named actor per slot (num_gpus=1 each, or cpus_per_slot CPUs
on a CPU-only cluster), spread over the cluster's nodes, each running the worker subprocess a local slot
runs (engine.control.executors.ray_actor). The SQLite database and the API stay on this host: the job's
payload travels to the actor, its events are polled back as they happen (the same ProgressTracker as a local
slot, so the console's live screen does not tell the difference), and its artifact comes back in chunks
through the object store, each file checked by sha256 and the folder written atomically.

An actor (or its node) that dies fails its one job with Ray's reason and is created again. The actors are
named in a namespace of this engine (its host and state folder): whatever a previous engine left there is
killed at start, never reused."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.artifacts import replace_dir, tree_sha256
from engine.control.executors import ExecutorError, require_ray
from engine.control.executors.ray_actor import SlotActor
from engine.control.scheduler import ProgressTracker, signal_name
from engine.schema.payload import ModelSpec
from store.paths import Paths

CHUNK_BYTES = 8 << 20  # artifact and model files travel through the object store in pieces this big
READY_TIMEOUT_S = float(os.environ.get("EXPUNGE_RAY_READY_TIMEOUT", 300))
IDLE_CHECK_S = 5.0
UNAVAILABLE_GRACE_S = 60.0
log = logging.getLogger("expunge.ray")


def engine_namespace(paths: Paths) -> str:
    """One namespace per engine (its host and state folder): two engines on one cluster never share actors."""
    key = f"{socket.gethostname()}:{paths.state.resolve()}"
    return "expunge-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class ActorSlot:
    name: str
    generation: int = 0  # actors of a slot are named slot-N.G: a dead actor's name is not free at once
    actor: object = None
    info: dict = field(default_factory=dict)  # where(): node id, address, device, pid
    state: str = "starting"  # starting | ready | busy | dead
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    checked: float = 0.0  # when an idle actor last answered
    orphans: list = field(default_factory=list)  # (node id, job id): folders a dead actor left on its node


class RayExecutor:
    name = "ray"

    def __init__(self, paths: Paths, address: str = "auto", gpus: int | None = None, cpus_per_slot: int = 1,
                 ship_models: str = "auto", node_dir: str = "/tmp/expunge-ray") -> None:
        self.ray = ray = require_ray()
        self.paths, self.ship_models, self.cpus_per_slot = paths, ship_models, cpus_per_slot
        self.namespace = engine_namespace(paths)
        self.node_root = str(Path(node_dir) / self.namespace)
        # The actors (and their workers) import this engine's code and stay offline as it does.
        env = {k: os.environ[k] for k in ("PYTHONPATH", "HF_HUB_OFFLINE") if k in os.environ}
        try:
            # Only the given address: "auto" is the cluster this host joined, never a new one started here.
            ray.init(address=address, namespace=self.namespace, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        self.address = address
        self._kill_stale()
        resources = ray.cluster_resources()
        have_gpus = int(resources.get("GPU", 0))
        if have_gpus:
            count = int(gpus or have_gpus)
            if count > have_gpus:
                raise ExecutorError(f"asked for {count} GPUs; the Ray cluster at {address} has {have_gpus}")
            self.options = {"num_gpus": 1, "num_cpus": cpus_per_slot}
        else:  # CPU only: one slot per node unless told, each with cpus_per_slot CPUs
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            count = int(gpus or len(nodes) or 1)
            self.options = {"num_cpus": cpus_per_slot}
        self.kind = "gpu" if have_gpus else "cpu"
        self.remote_class = ray.remote(SlotActor)
        self.slots = [ActorSlot(name=f"slot-{i}") for i in range(count)]
        self.shipped: dict[str, dict] = {}  # weights sha256 -> the model's files in the object store
        self.ship_lock = threading.Lock()
        log.info("ray executor: cluster %s, namespace %s, %d %s slot(s) %s", address, self.namespace, count,
                 self.kind, self.options)

    # ------------------------------------------------------------ the scheduler's seam

    def slot_specs(self) -> list[dict]:
        return [{"slot": i, "device": self.kind, "node": "(placing)"} for i in range(len(self.slots))]

    def start(self, scheduler) -> None:
        self.scheduler = scheduler
        for slot in scheduler.slots:
            self._create(slot)

    def stop(self) -> None:
        for rs in self.slots:
            if rs.actor is not None:
                try:
                    self.ray.kill(rs.actor)
                except Exception:  # noqa: BLE001 (already gone)
                    pass
        self.ray.shutdown()

    def slot_status(self, slot) -> dict:
        rs = self.slots[slot.index]
        return {"state": rs.state if not slot.job_id else "busy",
                "actor": f"{self.namespace}/{rs.name}.{rs.generation}",
                "actor_pid": rs.info.get("pid"), "node_id": rs.info.get("node_id"),
                "address": rs.info.get("address"), "worker_pid": None, "error": rs.error}

    def accepting(self, slot) -> bool:
        """Whether the slot may claim a job: its actor is placed and (checked every few seconds while idle)
        alive. A dead one is created again; until it is placed, queued jobs wait for another slot."""
        rs = self.slots[slot.index]
        if rs.state == "dead":
            self._create(slot)
        if rs.state != "ready":
            return False
        if time.monotonic() - rs.checked > IDLE_CHECK_S:
            try:
                rs.info = self.ray.get(rs.actor.where.remote(), timeout=30)
                rs.checked = time.monotonic()
            except Exception as exc:  # noqa: BLE001 (died while idle: no job is lost)
                log.warning("ray executor: %s died while idle (%s: %s); creating it again", rs.name,
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self._create(slot)
                return False
        return True

    def cancel(self, slot) -> None:
        """Stop the job's worker on its node (fire and forget: the slot's poll loop sees it end)."""
        rs = self.slots[slot.index]
        if rs.actor is not None:
            rs.actor.cancel.remote()

    def reset(self, slot) -> None:
        self.cancel(slot)

    # ------------------------------------------------------------ actors

    def _kill_stale(self) -> None:
        """Actors a previous engine left in this engine's namespace are killed, never reused."""
        for entry in self.ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] != self.namespace:
                continue
            try:
                self.ray.kill(self.ray.get_actor(entry["name"], namespace=self.namespace))
                log.warning("ray executor: killed a stale actor %s/%s", self.namespace, entry["name"])
            except ValueError:
                pass

    def _create(self, slot) -> None:
        """A new actor for the slot (asynchronously placed; a thread waits for it to say where it is)."""
        rs = self.slots[slot.index]
        rs.state, rs.error, rs.info = "starting", None, {}
        rs.ready.clear()
        rs.generation += 1
        try:
            rs.actor = self.remote_class.options(
                name=f"{rs.name}.{rs.generation}", namespace=self.namespace, max_restarts=0,
                scheduling_strategy="SPREAD", **self.options).remote(self.node_root, slot.index, self.cpus_per_slot)
        except Exception as exc:  # noqa: BLE001 (the slot shows why; the next job tries again)
            rs.actor, rs.state, rs.error = None, "dead", f"{type(exc).__name__}: {exc}"
            log.error("ray executor: %s could not be created: %s", rs.name, rs.error)
            rs.ready.set()
            return
        threading.Thread(target=self._await_placement, args=(slot, rs), daemon=True,
                         name=f"place-{rs.name}").start()

    def _await_placement(self, slot, rs: ActorSlot) -> None:
        try:
            info = self.ray.get(rs.actor.where.remote(), timeout=READY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 (placement failed or timed out: the slot says why)
            rs.state, rs.error = "dead", f"{type(exc).__name__}: {exc}"
            log.error("ray executor: %s could not be placed: %s", rs.name, rs.error)
            rs.ready.set()
            return
        for node_id, job_id in [o for o in rs.orphans if o[0] == info["node_id"]]:
            try:  # the dead actor's job folder, when the new one landed on that node (a dead node keeps it)
                self.ray.get(rs.actor.forget_job.remote(job_id), timeout=60)
                rs.orphans.remove((node_id, job_id))
            except Exception:  # noqa: BLE001 (best effort: the README says what a node may keep)
                pass
        rs.info, rs.state, rs.checked = info, "ready", time.monotonic()
        slot.node = f"{info['host']} ({info['address']}, node {info['node_id'][:12]})"
        slot.device = info["device"]  # the actor's GPU (cuda:N as Ray assigned it) or cpu: keys 'before' too
        log.info("ray executor: %s on %s, %s, actor pid %s", rs.name, slot.node, info["device"], info["pid"])
        rs.ready.set()

    def _ready(self, slot) -> ActorSlot:
        rs = self.slots[slot.index]
        if rs.state == "dead":
            self._create(slot)
        if not rs.ready.wait(READY_TIMEOUT_S) or rs.state != "ready":
            raise ExecutorError(f"the Ray actor for slot {slot.index} is not running: {rs.error or 'not placed'}")
        return rs

    # ------------------------------------------------------------ one job

    def run(self, scheduler, slot, job_id: int) -> None:
        ray = self.ray
        rs = self._ready(slot)
        rs.state = "busy"
        tracker = None
        try:
            transfer: dict = {}
            t = time.monotonic()
            payload = scheduler._payload(job_id, slot.device, slot)
            model_path = self._model_on_node(rs, payload.model, transfer)
            ray.get(rs.actor.start_job.remote(payload.model_dump_json(), model_path))
            transfer["dispatch_s"] = round(time.monotonic() - t, 3)
            tracker = ProgressTracker(scheduler, job_id, slot.device)
            self._follow(scheduler, slot, rs, job_id, tracker, transfer)
        except ray.exceptions.RayActorError as exc:
            if tracker is not None:
                tracker.finish()
            node = rs.info.get("node_id") or "?"
            scheduler._fail(job_id, f"the Ray actor of slot {slot.index} died during the job (node {node}, "
                                    f"{rs.info.get('address')}): {type(exc).__name__}: {exc}")
            rs.state = "dead"
            rs.orphans.append((rs.info.get("node_id"), job_id))
            self._create(slot)  # the slot is recreated; the other slots go on
            return
        finally:
            if rs.state == "busy":
                rs.state = "ready"

    def _poll(self, rs: ActorSlot) -> list[dict]:
        """The actor's new events. An actor Ray calls unavailable (its node stopped answering) is asked again
        for up to UNAVAILABLE_GRACE_S: a blip passes, a dead node turns into ActorDiedError with its reason."""
        deadline = time.monotonic() + UNAVAILABLE_GRACE_S
        while True:
            try:
                return self.ray.get(rs.actor.poll.remote(0.25))
            except self.ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _follow(self, scheduler, slot, rs: ActorSlot, job_id: int, tracker, transfer: dict) -> None:
        while True:
            for msg in self._poll(rs):
                kind = msg.get("type")
                if kind == "progress":
                    tracker.update(msg)
                elif kind == "baseline":
                    scheduler._store_baseline(msg["key"], msg["payload"])
                elif kind == "result":
                    tracker.finish()
                    self._bring_back(scheduler, rs, job_id, msg, transfer)
                    self.ray.get(rs.actor.forget_job.remote(job_id))  # before the job is shown finished
                    scheduler._store_result(job_id, msg)
                    return
                elif kind == "error":
                    tracker.finish()
                    self.ray.get(rs.actor.forget_job.remote(job_id))
                    scheduler._fail(job_id, msg["message"])
                    return
                elif kind == "exit":
                    tracker.finish()
                    self.ray.get(rs.actor.forget_job.remote(job_id))
                    self._worker_ended(scheduler, slot, rs, job_id, msg["code"])
                    return

    def _worker_ended(self, scheduler, slot, rs: ActorSlot, job_id: int, code: int) -> None:
        if job_id in slot.cancelled:
            slot.cancelled.discard(job_id)
            log.info("job %d cancelled: its worker on %s was stopped", job_id, slot.node)
            scheduler._publish_job(job_id)
            return
        why = f"killed by {signal_name(code)}" if code < 0 else f"exited with status {code}"
        tail = self.ray.get(rs.actor.log_tail.remote())
        scheduler._fail(job_id, f"the worker process on Ray node {rs.info.get('node_id')} ({rs.info.get('address')})"
                                f" {why} during the job; last log lines:\n{tail}")

    # ------------------------------------------------------------ data in, results out

    def _model_on_node(self, rs: ActorSlot, spec: ModelSpec, transfer: dict) -> str:
        """The path the node loads the base model from: its own (a shared folder, the same path), or its
        cached copy, shipped once through the object store keyed by the weights' sha256."""
        t = time.monotonic()
        found = self.ray.get(rs.actor.model_path.remote(spec.source, spec.weights_sha256, spec.kind))
        if found["path"] and not (self.ship_models == "always" and found["how"] == "path" and spec.kind == "hf"):
            transfer["model"] = found["how"]
            transfer["model_s"] = round(time.monotonic() - t, 3)
            return found["path"]
        if self.ship_models == "never" or spec.kind != "hf":
            raise ExecutorError(f"model {spec.name}: {spec.source} is not readable on Ray node {rs.info.get('address')}"
                                + (" (ship_models = never)" if spec.kind == "hf" else
                                   f" ({spec.kind} models are not shipped: put it on a path the nodes can read)"))
        files = self._put_model(spec)
        path = self.ray.get(rs.actor.install_model.remote(spec.weights_sha256, files["refs"]))
        transfer.update(model="shipped", model_bytes=files["bytes"], model_s=round(time.monotonic() - t, 3))
        log.info("model %s shipped to %s (%d bytes, %.1f s)", spec.name, rs.info.get("address"), files["bytes"],
                 transfer["model_s"])
        return path

    def _put_model(self, spec: ModelSpec) -> dict:
        """The model folder's files in the object store, once per weights hash (every node fetches the same
        objects)."""
        with self.ship_lock:
            if spec.weights_sha256 not in self.shipped:
                root = Path(spec.source)
                refs, total = {}, 0
                for f in sorted(p for p in root.rglob("*") if p.is_file()):
                    chunks = []
                    with f.open("rb") as fh:
                        for block in iter(lambda fh=fh: fh.read(CHUNK_BYTES), b""):
                            chunks.append(self.ray.put(block))
                            total += len(block)
                    refs[str(f.relative_to(root))] = chunks
                self.shipped[spec.weights_sha256] = {"refs": refs, "bytes": total}
            return self.shipped[spec.weights_sha256]

    def _bring_back(self, scheduler, rs: ActorSlot, job_id: int, msg: dict, transfer: dict) -> None:
        """The artifact from the node's job folder to this host's artifacts folder: each file in chunks
        through the object store, checked against the node's sha256, the folder's hash against the
        manifest's, then renamed into place in one step. `msg` (the result) then names the local path."""
        t = time.monotonic()
        files = self.ray.get(rs.actor.artifact_files.remote(job_id))
        final = scheduler.paths.job_artifacts(job_id)
        expected = msg["artifact"]["sha256"]

        def fill(tmp: Path) -> int:
            total = 0
            for f in files:
                target = tmp / f["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with target.open("wb") as fh:
                    for offset in range(0, f["size"], CHUNK_BYTES):
                        block = self.ray.get(rs.actor.read_chunk.remote(job_id, f["name"], offset, CHUNK_BYTES))
                        digest.update(block)
                        fh.write(block)
                        total += len(block)
                    fh.flush()
                    os.fsync(fh.fileno())
                if digest.hexdigest() != f["sha256"]:
                    raise ExecutorError(f"artifact file {f['name']} of job {job_id} arrived with sha256 "
                                        f"{digest.hexdigest()}, the node has {f['sha256']}")
            if tree_sha256(tmp) != expected:
                raise ExecutorError(f"job {job_id}'s artifact arrived with a different hash than its manifest's")
            return total

        transfer["artifact_bytes"] = replace_dir(final, fill)
        transfer["artifact_s"] = round(time.monotonic() - t, 3)
        msg["artifact"]["path"] = str(final)
        msg.setdefault("result", {})["transfer"] = transfer
