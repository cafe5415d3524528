"""Batched requests (issue 14): several open requests on the same model run as one job.

`submit_batch` queues one job per request, all with the same method and hyperparameters, and marks them as one
batch: the first is the leader. The scheduler claims only the leader (runs.claim_next skips the other members and
marks them running with it); its worker runs one unlearning run over the union of their forget sets and verifies each member on
its own request's data, so every request keeps its own verdicts, evidence and report. Accepting any member
lands the whole batch in one model version (engine.control.service.versions)."""

from __future__ import annotations

from sqlmodel import Session, select

from engine.compute.methods.base import get_method, validate_hyper
from engine.control.service.jobs import add_job
from engine.control.service.lookup import get_request
from engine.schema.errors import SpecError
from engine.schema.status import ACTIVE
from store import audit
from store.models import Job


def submit_batch(s: Session, request_ids: list[int], method: str, hyper: dict | None,
                 actor: str = "operator") -> list[Job]:
    """Queue one batch over `request_ids` (at least two, open, same model and starting version, none with a job
    queued or running); everything is checked before anything is written."""
    ids = list(dict.fromkeys(request_ids))
    if len(ids) < 2:
        raise SpecError("batch: give at least two different requests")
    reqs = [get_request(s, rid) for rid in ids]
    for r in reqs:
        if r.status != "open":
            raise SpecError(f"batch: request {r.id} is closed; its texts are purged and no job can run on it")
        if r.landed_version is not None:
            raise SpecError(f"batch: request {r.id} already landed in {r.model_name}@v{r.landed_version}")
        busy = s.exec(select(Job).where(Job.request_id == r.id, Job.status.in_(ACTIVE))).first()
        if busy is not None:
            raise SpecError(f"batch: request {r.id} has job {busy.id} {busy.status}; wait for it or cancel it")
    models = {r.model_name for r in reqs}
    if len(models) > 1:
        raise SpecError(f"batch: the requests are on different models ({', '.join(sorted(models))})")
    starts = {r.base_version or 0 for r in reqs}
    if len(starts) > 1:
        raise SpecError(f"batch: the requests start from different versions of {reqs[0].model_name} "
                        f"({', '.join(f'v{v}' for v in sorted(starts))}); one run needs one starting model")
    hyper = validate_hyper(method, hyper)
    tier = get_method(method).tier
    jobs = [add_job(s, r, tier, method, hyper, actor) for r in reqs]
    batch = {"leader": jobs[0].id, "jobs": [j.id for j in jobs], "requests": ids}
    for j in jobs:
        j.batch = batch
        s.add(j)
    audit.append(s, "batch.queue", f"job:{jobs[0].id}", batch, actor=actor)
    s.commit()
    return jobs


def members(s: Session, job: Job) -> list[Job]:
    """Every job of `job`'s batch, the leader first (just `job` when it is not batched)."""
    if not job.batch:
        return [job]
    return [s.get(Job, jid) for jid in job.batch["jobs"]]
