"""Jobs: listing, queueing one on a request, its detail, cancelling and resuming."""

from __future__ import annotations

from fastapi import APIRouter, Query

from engine.control import service
from engine.control.routes.bodies import JobIn
from engine.control.routes.deps import MAX_ID, Db, Engine, Id, Operator, Viewer
from engine.control.routes.requests import WHEN, window
from engine.schema.views import JobDetail, JobPage, JobView, TrialView

router = APIRouter()

JOB_SORT = "^(" + "|".join(service.JOB_SORTS) + ")$"


@router.get("/jobs", response_model=JobPage)
def list_jobs(s: Db, _who: Viewer, status: str | None = None, request_id: int | None = Query(default=None, ge=0, le=MAX_ID),
              method: str | None = None, model: str | None = None, verdict: str | None = None,
              q: str | None = Query(default=None, max_length=200),
              limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0, le=MAX_ID),
              order: str = Query(default="desc", pattern="^(asc|desc)$"),
              sort: str = Query(default="id", pattern=JOB_SORT),
              since: str | None = Query(default=None, max_length=40, description=WHEN),
              until: str | None = Query(default=None, max_length=40, description=WHEN)):
    lo, hi = window(since, until)
    return service.list_jobs(s, status, request_id, method, model, verdict, q, limit, offset, order, sort=sort,
                             since=lo, until=hi)


@router.post("/jobs", status_code=201, response_model=JobView)
def create_job(body: JobIn, s: Db, engine: Engine, who: Operator):
    job = service.submit_job(s, body.request_id, body.method, body.hyper, actor=who.name)
    return engine.publish_job(s, job.id)


@router.get("/jobs/{job_id}", response_model=JobDetail)
def job_detail(job_id: Id, s: Db, _who: Viewer, evidence_limit: int = Query(default=200, ge=0, le=10_000)):
    return service.job_detail(s, job_id, evidence_limit)


@router.get("/jobs/{job_id}/trials", response_model=list[TrialView])
def job_trials(job_id: Id, s: Db, _who: Viewer):
    """A tuning job's trials: hyperparameters, the proxy's metrics on the validation split, state, the winner."""
    from engine.control.service.trials import job_trials

    return job_trials(s, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
def cancel(job_id: Id, s: Db, engine: Engine, who: Operator):
    job = service.cancel_job(s, job_id, actor=who.name)
    if engine.scheduler is not None:  # a batch member runs in its leader's worker
        engine.scheduler.cancel((job.batch or {}).get("leader", job_id))
    return engine.publish_job(s, job_id)


@router.post("/jobs/{job_id}/resume", response_model=JobView)
def resume(job_id: Id, s: Db, engine: Engine, who: Operator):
    service.resume_job(s, job_id, actor=who.name)
    return engine.publish_job(s, job_id)
