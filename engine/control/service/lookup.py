"""One row by its id (NotFound otherwise), and a request's texts."""

from __future__ import annotations

from sqlmodel import Session, select

from engine.schema.errors import NotFound
from store.models import Job, Request, RequestData


def get_request(s: Session, request_id: int) -> Request:
    req = s.get(Request, request_id)
    if req is None:
        raise NotFound(f"request {request_id} not found")
    return req


def get_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def request_rows(s: Session, request_id: int) -> dict[str, list | None]:
    """The request's texts by kind (forget, retain, holdout, probes, sensitive); None once purged."""
    out: dict[str, list | None] = {}
    for data in s.exec(select(RequestData).where(RequestData.request_id == request_id)):
        out[data.kind] = data.rows
    return out
