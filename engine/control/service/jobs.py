"""Jobs the operator queues, cancels and resumes."""

from __future__ import annotations

from sqlmodel import Session

from engine.compute.methods.base import default_method_for_tier, get_method, validate_hyper
from engine.control.service import clock
from engine.control.service.lookup import get_job, get_request
from engine.schema.datasets import rows_sha256
from engine.schema.errors import SpecError
from engine.schema.status import RESUMABLE, TERMINAL
from store import audit
from store.models import Job, Request


def add_job(s: Session, req: Request, tier: int, method: str, hyper: dict, actor: str,
            tune: dict | None = None) -> Job:
    """Queue a job in the caller's transaction; `hyper` is already validated (validate_hyper), `tune` too
    (engine.schema.tuning.TuneSpec.budget)."""
    # An engine-queued job (auto-escalation) is run for the request's filer.
    job = Job(request_id=req.id, tier=tier, method=method, hyper=dict(sorted(hyper.items())),
              seed=int(hyper.get("seed", 0)), requested_by=req.requested_by if actor == "engine" else actor,
              tune=tune)
    s.add(job)
    req.current_tier = max(req.current_tier, tier)
    s.add(req)
    s.flush()
    detail = {"request": req.id, "tier": tier, "method": method, "hyper": audit_hyper(hyper)}
    if tune is not None:
        detail["tune"] = tune
    audit.append(s, "job.queue", f"job:{job.id}", detail, actor=actor)
    return job


def audit_hyper(hyper: dict) -> dict:
    """Hyperparameters as the immutable audit chain may keep them: strings a method takes from the request
    (the guard's extra_strings) are personal data, so the chain records only their count and hash."""
    return {k: {"count": len(v), "sha256": rows_sha256(v)} if "strings" in k and isinstance(v, list) else v
            for k, v in hyper.items()}


def submit_job(s: Session, request_id: int, method: str, hyper: dict | None, actor: str = "operator",
               tune: dict | None = None) -> Job:
    """Queue a job on an open request. Its hyperparameters are validated here, once: the job row and the
    worker's payload carry the complete, validated values."""
    req = get_request(s, request_id)
    if req.status != "open":
        raise SpecError(f"request {request_id} is closed; its texts are purged and no job can run on it")
    hyper = validate_hyper(method, hyper)
    job = add_job(s, req, get_method(method).tier, method, hyper, actor, tune=tune_budget(tune))
    s.commit()
    return job


def escalate(s: Session, request_id: int, method: str | None = None, hyper: dict | None = None,
             actor: str = "operator", tune: dict | None = None) -> Job:
    """The next tier's default method (or the named one); each tier's job starts from the model version the
    request was filed on (v0: the base)."""
    req = get_request(s, request_id)
    if method is None:
        tier = req.current_tier + 1
        if tier > 3:
            raise SpecError(f"request {request_id} is already at the top tier (3)")
        method = default_method_for_tier(tier)
    return submit_job(s, request_id, method, hyper, actor, tune=tune)


def tune_budget(tune: dict | None) -> dict | None:
    """A tuning request ({"trials", "minutes", "seed"}, each optional) as stored: checked, trials filled in."""
    if tune is None:
        return None
    from pydantic import ValidationError

    from engine.schema.spec import format_validation_error
    from engine.schema.tuning import TuneSpec

    try:
        return TuneSpec.model_validate(tune).budget()
    except ValidationError as exc:
        raise SpecError(f"tune: {format_validation_error(exc)}") from None


def cancel_job(s: Session, job_id: int, actor: str = "operator") -> Job:
    """Mark the job cancelled (the API then stops its worker). An interrupted job can be cancelled too, so
    it is never resumed; a finished one is left as it is."""
    job = get_job(s, job_id)
    if job.status in TERMINAL and job.status != "interrupted":
        return job
    batch = [get_job(s, j) for j in (job.batch or {}).get("jobs", [job_id])]  # a batch is one run: all go
    for member in batch:
        if member.id != job_id and (member.status in TERMINAL and member.status != "interrupted"):
            continue
        member.status, member.finished_at = "cancelled", clock.now()
        member.error = member.error or "cancelled by the operator" + ("" if member.id == job_id else
                                                                      f" (batched with job {job_id})")
        s.add(member)
        audit.append(s, "job.cancel", f"job:{member.id}", {}, actor=actor)
    s.commit()
    return job


def resume_job(s: Session, job_id: int, actor: str = "operator") -> Job:
    """Queue an interrupted (or failed) job again; the worker continues from its last checkpoint if any."""
    job = get_job(s, job_id)
    if job.status not in RESUMABLE:
        raise SpecError(f"job {job_id} is {job.status}; only an interrupted or failed job can be resumed")
    leader = (job.batch or {}).get("leader", job_id)
    if leader != job_id:  # a batch runs in its leader's worker: resuming the leader resumes the batch
        raise SpecError(f"job {job_id} runs in the batch led by job {leader}; resume job {leader}")
    req = get_request(s, job.request_id)
    if req.status != "open":
        raise SpecError(f"request {req.id} is closed; its texts are purged and job {job_id} cannot run again")
    job.status, job.error, job.finished_at = "queued", None, None
    s.add(job)
    audit.append(s, "job.resume", f"job:{job_id}", {}, actor=actor)
    s.commit()
    return job
