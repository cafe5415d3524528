"""The one writer of the store: every database write of the engine (the API's and the scheduler's) goes
through here, one transaction each. By concern: models (registered base models), requests (filing,
accepting, closing and purging), jobs (queueing, cancelling, resuming), runs (what the scheduler reports
about a running job), queries (what the API reads); lookup and clock are shared by them.

`from engine.control import service` then `service.create_request(...)`: the package exposes them all."""

from engine.control.service import clock
from engine.control.service.deadlines import answered_on_time, days_left, extend_deadline, received_and_due
from engine.control.service.jobs import add_job, audit_hyper, cancel_job, escalate, resume_job, submit_job
from engine.control.service.lookup import get_job, get_request, request_rows
from engine.control.service.models import converted_root, get_model, list_models, model_view, register_model
from engine.control.service.queries import (
    JOB_SORTS,
    REQUEST_SORTS,
    audit_view,
    evidence_view,
    job_detail,
    job_row_view,
    job_view,
    list_jobs,
    list_requests,
    parse_when,
    read_snapshot,
    request_detail,
    request_view,
    stage_views,
)
from engine.control.service.requests import (
    accept_job,
    close_request,
    create_request,
    first_tier,
    job_executor,
    overlap_warnings,
    purge_check,
)
from engine.control.service.tokens import add_token, list_tokens, revoke_token, token_view
from engine.schema.errors import NotFound

__all__ = [
    "JOB_SORTS", "REQUEST_SORTS", "NotFound", "accept_job", "add_job", "audit_hyper", "audit_view", "cancel_job",
    "close_request", "converted_root", "create_request", "escalate", "evidence_view", "first_tier", "get_job",
    "get_model", "get_request", "job_detail", "job_row_view", "job_view", "list_jobs", "list_models",
    "list_requests", "model_view", "overlap_warnings", "parse_when", "purge_check", "read_snapshot",
    "register_model", "request_detail", "request_view", "request_rows", "resume_job", "stage_views", "submit_job",
    "add_token", "answered_on_time", "clock", "days_left", "extend_deadline", "job_executor", "list_tokens",
    "received_and_due", "revoke_token", "token_view",
]
