"""What the scheduler reports about the jobs it runs, written here: a claim, the worker's progress, its
result or failure, the 'before' measurement it made, and the jobs a stopped engine left running. The
scheduler itself writes nothing."""

from __future__ import annotations

from sqlalchemy import func, or_, update
from sqlmodel import Session, select

from engine.control.baseline import GENERAL_TEXT, baseline_key, job_model_options, measurement_setup
from engine.control.service import clock, versions
from engine.control.service.batch import members
from engine.control.service.jobs import escalate
from engine.control.service.lookup import request_rows
from engine.control.service.models import get_model
from engine.model_files import converted_dir
from engine.schema.payload import JobPayload, JobResult, ModelSpec
from engine.schema.policy import load_policy
from engine.schema.spec import DATA_KINDS
from store import audit
from store.models import Artifact, BaselineCache, Evidence, Job, Metric, Request, StageResult
from store.paths import Paths


def claim_next(s: Session, slot: int, device: str, node: str | None = None, executor: str = "local") -> int | None:
    """Mark the next queued job (highest priority, then oldest) running on this slot; its id, or None when
    nothing is queued or another slot took it first. `node` and `executor`: where it runs (the audit row
    records them when it runs off the engine's host, e.g. on a Ray node)."""
    # A batch member other than its leader runs in its leader's worker (engine.control.service.batch).
    leads = or_(Job.__table__.c.batch_json.is_(None), func.json_extract(Job.__table__.c.batch_json, "$.leader") == Job.id)
    job = s.exec(select(Job).where(Job.status == "queued", leads)
                 .order_by(Job.priority.desc(), Job.id.asc()).limit(1)).first()
    if job is None:
        return None
    res = s.exec(update(Job).where(Job.id == job.id, Job.status == "queued").values(
        status="running", started_at=clock.now(), slot=slot, device=device, error=None, phase="start",
        executor=executor, node=node))
    if res.rowcount != 1:
        return None
    where = {"executor": executor, "node": node} if executor != "local" else {}  # local: the engine's host
    audit.append(s, "job.start", f"job:{job.id}", {"slot": slot, "device": device, "requester": job.requested_by,
                                                   **where})
    for member in members(s, job)[1:]:
        if member.status in ("queued", "interrupted", "failed"):
            member.status, member.started_at, member.slot, member.device = "running", clock.now(), slot, device
            member.executor, member.node = executor, node
            member.error, member.phase = None, f"batched with job {job.id}"
            s.add(member)
            audit.append(s, "job.start", f"job:{member.id}", {"slot": slot, "device": device, "batch": job.id,
                                                             "requester": member.requested_by, **where})
    s.commit()
    return job.id


def job_payload(s: Session, job_id: int, paths: Paths, device: str = "cpu") -> JobPayload:
    """Everything the worker needs for one job; the cached 'before' measurement when there is one (`device`:
    the slot's, part of that measurement's key)."""
    job = s.get(Job, job_id)
    req = s.get(Request, job.request_id)
    model = get_model(s, req.model_name)
    rows = request_rows(s, req.id)
    if rows.get("forget") is None:
        raise RuntimeError(f"request {req.id} has been closed and its texts purged")
    options = job_model_options(model.options, req.spec)
    converted = str(converted_dir(paths.converted, model.weights_sha256)) if model.kind == "gguf" else None
    # A request filed on a later version of the model starts from that version's folder (issue 14).
    version = versions.version_source(s, model, req.base_version) or {
        "source": model.source, "kind": model.kind, "weights_sha256": model.weights_sha256, "version": 0}
    if version["version"]:
        converted = None
    setup = measurement_setup(version["source"], version["kind"], options, device)
    key = baseline_key(version["weights_sha256"], rows, GENERAL_TEXT, options, setup)
    cached = s.exec(select(BaselineCache).where(BaselineCache.key == key)).first()
    work_dir = paths.job_work_dir(job_id)
    batch = [_member_payload(s, m, device, options, version) for m in members(s, job)[1:]]
    return JobPayload(
        job_id=job_id, method=job.method, hyper=job.hyper, intention=req.intention,
        policy=load_policy(req.policy),
        model=ModelSpec(name=model.name, source=version["source"], kind=version["kind"],
                        weights_sha256=version["weights_sha256"], options=options, converted=converted,
                        version=version["version"]),
        rows={k: rows.get(k) for k in DATA_KINDS},
        sensitive=rows.get("sensitive") or [], general_text=GENERAL_TEXT, baseline_key=key,
        baseline=cached.payload if cached else None, work_dir=str(work_dir),
        resume=(work_dir / "checkpoint").exists(), artifact_dir=str(paths.job_artifacts(job_id)), batch=batch,
        tune=job.tune, line=versions.carried_prompts(s, model, version["version"]))


def _member_payload(s: Session, job: Job, device: str, options: dict, version: dict) -> dict:
    """What the leader's worker needs to verify one other member of its batch on that member's own data."""
    req = s.get(Request, job.request_id)
    rows = request_rows(s, req.id)
    if rows.get("forget") is None:
        raise RuntimeError(f"request {req.id} of the batch has been closed and its texts purged")
    setup = measurement_setup(version["source"], version["kind"], options, device)
    key = baseline_key(version["weights_sha256"], rows, GENERAL_TEXT, options, setup)
    cached = s.exec(select(BaselineCache).where(BaselineCache.key == key)).first()
    return {"job_id": job.id, "request_id": req.id, "intention": req.intention, "policy": load_policy(req.policy),
            "rows": {k: rows.get(k) for k in DATA_KINDS},
            "sensitive": rows.get("sensitive") or [], "baseline_key": key,
            "baseline": cached.payload if cached else None}


def store_baseline(s: Session, key: str, payload: dict) -> None:
    if s.exec(select(BaselineCache).where(BaselineCache.key == key)).first() is None:
        s.add(BaselineCache(key=key, payload=payload))
        s.commit()


def store_result(s: Session, job_id: int, result: JobResult) -> bool:
    """Store a finished job's verdicts, metrics, evidence and artifact. False (nothing written) when the job
    is no longer running: cancelled while it finished, the operator's decision stands."""
    job = s.get(Job, job_id)
    if job.status != "running":
        return False
    req = s.get(Request, job.request_id)
    # The policy the worker judged against, not a re-read: a profile edited meanwhile changes nothing.
    for st in result.stages:
        sr = StageResult(job_id=job_id, stage=st.stage, verdict=st.verdict, required=st.required,
                         policy_name=req.policy, policy=result.policy, note=st.note)
        s.add(sr)
        s.flush()
        for m in st.metrics:
            s.add(Metric(stage_result_id=sr.id, **m.model_dump()))
    for e in result.evidence:
        s.add(Evidence(job_id=job_id, **e.model_dump(exclude={"spans_before", "spans_after"}),
                       spans={"before": e.spans_before, "after": e.spans_after}))
    art = result.artifact
    s.add(Artifact(job_id=job_id, kind=art.kind, path=art.path, sha256=art.sha256,
                   manifest=art.manifest))
    job.status, job.verdict, job.finished_at = "succeeded", result.verdict, clock.now()
    job.phase, job.eta_s, job.device = "done", 0.0, result.device or job.device
    job.result = result.result
    req.verdict = result.verdict
    s.add(job)
    s.add(req)
    audit.append(s, "job.finish", f"job:{job_id}", {
        "verdict": result.verdict, "stages": {st.stage: st.verdict for st in result.stages},
        "artifact_sha256": art.sha256, "requester": job.requested_by})
    s.commit()
    return True


def fail_job(s: Session, job_id: int, reason: str) -> bool:
    """A running job failed; False when it was no longer running (cancelled meanwhile)."""
    job = s.get(Job, job_id)
    if job is None or job.status != "running":
        return False
    for member in members(s, job):  # a batch fails as one: its members ran in this job's worker
        if member.id != job_id and member.status != "running":
            continue
        member.status, member.error, member.finished_at, member.phase = "failed", reason, clock.now(), "failed"
        s.add(member)
        audit.append(s, "job.fail", f"job:{member.id}", {"reason": reason[:500], "requester": member.requested_by})
    s.commit()
    return True


def auto_escalate(s: Session, job_id: int) -> int | None:
    """An auto-escalating request climbs one tier after a failed verdict, until the top tier: the queued
    job's id, or None when the request does not climb. A SpecError says why it stopped."""
    job = s.get(Job, job_id)
    req = s.get(Request, job.request_id)
    if not req.auto_escalate or job.verdict == "pass" or job.tier >= 3 or req.status != "open":
        return None
    return escalate(s, req.id, actor="engine", tune=req.tune).id  # the engine's decision, run for the request's filer


def kept_progress(s: Session, job_id: int) -> dict:
    """The live series a job kept when it last ran (a resumed job continues its loss curve)."""
    job = s.get(Job, job_id)
    return (job.progress or {}) if job is not None else {}


def save_progress(s: Session, job_id: int, latest: dict, kept: dict) -> None:
    """The newest progress fields (phase, step, total, loss, eta) and the live series of a running job."""
    job = s.get(Job, job_id)
    if job is None or job.status != "running":
        return
    job.phase = latest.get("phase", job.phase)
    job.step = int(latest.get("step", job.step) or 0)
    job.total = int(latest.get("total", job.total) or 0)
    job.loss = latest.get("loss", job.loss)
    job.eta_s = latest.get("eta", job.eta_s)
    job.progress = kept
    s.add(job)
    s.commit()


def interrupt_running(s: Session) -> list[int]:
    """At engine start: jobs that were running when the engine died are marked interrupted."""
    jobs = s.exec(select(Job).where(Job.status == "running")).all()
    for job in jobs:
        job.status, job.error = "interrupted", "the engine stopped while this job ran; `expunge resume` continues it"
        s.add(job)
        audit.append(s, "job.interrupt", f"job:{job.id}", {"requester": job.requested_by})
    s.commit()
    return [j.id for j in jobs]
