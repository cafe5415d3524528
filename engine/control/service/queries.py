"""What the API reads: pages of requests and jobs (filtered, sorted, one snapshot each) and their details, as
plain dicts in the shapes of engine.schema.views (the API declares those models as its responses; the report
and the tests read the dicts)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, select

from engine.control.service.deadlines import answered_on_time, days_left, received_and_due
from engine.control.service.lookup import get_job, get_request
from engine.control.service.trials import trial_views
from engine.schema.errors import SpecError
from engine.schema.views import (
    ArtifactView,
    AuditView,
    DataView,
    EvidenceView,
    JobDetail,
    JobPage,
    JobView,
    JobWithStages,
    MetricView,
    RequestDetail,
    RequestPage,
    RequestView,
    StageView,
)
from store.models import Artifact, AuditEvent, Evidence, Job, Metric, Request, RequestData, StageResult

JOB_SORTS = ("id", "created", "updated", "status", "verdict", "model", "method", "title", "tier")
REQUEST_SORTS = ("id", "created", "updated", "status", "verdict", "model", "title", "reference", "intention", "tier",
                 "due")


def request_view(r: Request) -> RequestView:
    received, due = received_and_due(r)
    left = days_left(r) if r.status == "open" else None
    return RequestView(id=r.id, title=r.title, reference=r.reference, intention=r.intention, model=r.model_name,
                       policy=r.policy, status=r.status, current_tier=r.current_tier,
                       accepted_job_id=r.accepted_job_id, verdict=r.verdict,
                       warnings=r.spec.get("warnings", []), created_at=r.created_at, closed_at=r.closed_at,
                       requested_by=r.requested_by, received_at=received, legal_basis=r.legal_basis, due_at=due,
                       days_left=left, overdue=left is not None and left < 0, extension_days=r.extension_days,
                       extension_reason=r.extension_reason, on_time=answered_on_time(r), accepted_by=r.accepted_by,
                       accepted_at=r.accepted_at, accept_comment=r.accept_comment,
                       base_version=r.base_version, landed_version=r.landed_version)


def job_row_view(j: Job, req: Request | None = None) -> JobView:
    """A job row as the API shows it; with its request, that request's title and model too."""
    view = JobView.model_validate(j)
    if req is not None:
        view.request_title, view.model = req.title, req.model_name
    return view


def evidence_view(e: Evidence) -> EvidenceView:
    spans = e.spans or {}
    return EvidenceView(stage=e.stage, attack=e.attack, prompt=e.prompt, output_before=e.output_before,
                        output_after=e.output_after, leaked_before=e.leaked_before, leaked_after=e.leaked_after,
                        spans_before=spans.get("before"), spans_after=spans.get("after"))


def audit_view(e: AuditEvent) -> AuditView:
    return AuditView(id=e.id, ts=e.ts, actor=e.actor, action=e.action, subject=e.subject,
                     detail=json.loads(e.detail_json), hash=e.hash)


def job_view(s: Session, job_id: int) -> dict:
    """One job as the API shows it (a JobView), with its request's title and model."""
    job = get_job(s, job_id)
    return job_row_view(job, s.get(Request, job.request_id)).model_dump()


def parse_when(value: str | None, field: str, end: bool = False) -> datetime | None:
    """A `since`/`until` filter: a date (YYYY-MM-DD, the whole day in UTC: `until` includes it) or an ISO
    datetime (naive means UTC). Returns the bound as an aware datetime; `end` bounds are exclusive."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"{field}: '{value[:40]}' is not a date (YYYY-MM-DD) or an ISO datetime") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment + timedelta(microseconds=1) if end else moment


def _sorted(stmt, key, tiebreak, order: str, nullable: bool = False):
    """ORDER BY key then id, both in `order`; a nullable key's NULLs (no verdict yet) last either way. (Only
    then: the extra term would keep SQLite from walking an index such as created_at's.)"""
    first = [key.is_(None)] if nullable else []
    if order == "asc":
        return stmt.order_by(*first, key.asc(), tiebreak.asc())
    return stmt.order_by(*first, key.desc(), tiebreak.desc())


@contextmanager
def read_snapshot(s: Session):
    """Run the enclosed reads in one SQLite read transaction: a page and its total come from the same
    snapshot, however many writes land in between (the driver otherwise starts no transaction for a
    SELECT, so each statement sees the newest commit)."""
    raw = s.connection().connection.dbapi_connection
    if raw is None or getattr(raw, "in_transaction", True):
        yield
        return
    raw.execute("BEGIN")
    try:
        yield
    finally:
        if raw.in_transaction:
            raw.execute("COMMIT")  # read-only: only ends the snapshot


def _page(s: Session, stmt, key, tiebreak, order: str, nullable: bool, limit: int, offset: int):
    """A page of `stmt` and the total it pages through, from one snapshot."""
    with read_snapshot(s):
        total = s.exec(select(func.count()).select_from(stmt.subquery())).one()
        rows = s.exec(_sorted(stmt, key, tiebreak, order, nullable).offset(offset).limit(limit)).all()
    return total, rows


def list_requests(s: Session, status: str | None = None, q: str | None = None, limit: int = 100,
                  offset: int = 0, sort: str = "id", order: str = "desc", since: datetime | None = None,
                  until: datetime | None = None, due_before: datetime | None = None) -> dict:
    """Requests, paged; `since` (inclusive) and `until` (exclusive) bound the filing time; `due_before`
    keeps the open requests due by then (the overdue ones too). Sort keys: REQUEST_SORTS (updated: closing
    time, else the newest activity of its jobs, else filing time; due: the due date)."""
    stmt = select(Request)
    if due_before is not None:
        stmt = stmt.where(Request.status == "open", Request.due_at <= due_before)
    if status:
        stmt = stmt.where(Request.status.in_(status.split(",")))
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Request.title.like(like), Request.reference.like(like)))
    if since is not None:
        stmt = stmt.where(Request.created_at >= since)
    if until is not None:
        stmt = stmt.where(Request.created_at < until)
    if sort == "updated":
        latest = (select(func.max(func.coalesce(Job.finished_at, Job.started_at, Job.created_at)))
                  .where(Job.request_id == Request.id).correlate(Request).scalar_subquery())
        key = func.coalesce(Request.closed_at, latest, Request.created_at)
    else:
        key = {"id": Request.id, "created": Request.created_at, "status": Request.status,
               "verdict": Request.verdict, "model": Request.model_name, "title": Request.title,
               "reference": Request.reference, "intention": Request.intention,
               "tier": Request.current_tier, "due": Request.due_at}[sort]
    total, rows = _page(s, stmt, key, Request.id, order, sort == "verdict", limit, offset)
    return RequestPage(total=total, items=[request_view(r) for r in rows]).model_dump()


def list_jobs(s: Session, status: str | None = None, request_id: int | None = None, method: str | None = None,
              model: str | None = None, verdict: str | None = None, q: str | None = None,
              limit: int = 100, offset: int = 0, order: str = "desc", sort: str = "id",
              since: datetime | None = None, until: datetime | None = None) -> dict:
    """Jobs, paged; `since` (inclusive) and `until` (exclusive) bound the creation time. Sort keys:
    JOB_SORTS (updated: finished, else started, else created; model and title are the request's)."""
    stmt = select(Job, Request).join(Request, Request.id == Job.request_id)
    if status:
        stmt = stmt.where(Job.status.in_(status.split(",")))
    if request_id is not None:
        stmt = stmt.where(Job.request_id == request_id)
    if method:
        stmt = stmt.where(Job.method == method)
    if model:
        stmt = stmt.where(Request.model_name == model)
    if verdict:
        stmt = stmt.where(Job.verdict == verdict)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Request.title.like(like), Request.reference.like(like)))
    if since is not None:
        stmt = stmt.where(Job.created_at >= since)
    if until is not None:
        stmt = stmt.where(Job.created_at < until)
    key = {"id": Job.id, "created": Job.created_at,
           "updated": func.coalesce(Job.finished_at, Job.started_at, Job.created_at), "status": Job.status,
           "verdict": Job.verdict, "model": Request.model_name, "method": Job.method, "title": Request.title,
           "tier": Job.tier}[sort]
    total, rows = _page(s, stmt, key, Job.id, order, sort == "verdict", limit, offset)
    return JobPage(total=total, items=[job_row_view(j, r) for j, r in rows]).model_dump()


def request_detail(s: Session, request_id: int) -> dict:
    req = get_request(s, request_id)
    jobs = s.exec(select(Job).where(Job.request_id == request_id).order_by(Job.id)).all()
    data = s.exec(select(RequestData).where(RequestData.request_id == request_id)).all()
    events = s.exec(select(AuditEvent).where(or_(AuditEvent.subject == f"request:{request_id}",
                                                 AuditEvent.subject.in_([f"job:{j.id}" for j in jobs])))
                    .order_by(AuditEvent.id)).all()
    return RequestDetail(
        request=request_view(req),
        jobs=[JobWithStages(**job_row_view(j, req).model_dump(), stages=stage_views(s, j.id), kept=kept_counts(j))
              for j in jobs],
        data=[DataView(kind=d.kind, count=d.count, sha256=d.sha256, purged=d.rows is None) for d in data],
        audit=[audit_view(e) for e in events],
    ).model_dump()


def kept_counts(job: Job) -> dict | None:
    """The job's out-of-sample split in row counts (its result holds the row indices), or None."""
    result = job.result or {}
    if "neighbours" not in result or "split" not in result:
        return None
    retain = result["split"].get("retain", {})
    return {"retain": {"trained": len(retain.get("trained", [])), "judged": len(retain.get("judged", []))},
            "neighbours": result["neighbours"], **({"line": result["line"]} if result.get("line") else {})}


def stage_views(s: Session, job_id: int) -> list[StageView]:
    out = []
    for st in s.exec(select(StageResult).where(StageResult.job_id == job_id).order_by(StageResult.id)):
        metrics = s.exec(select(Metric).where(Metric.stage_result_id == st.id).order_by(Metric.id)).all()
        out.append(StageView(stage=st.stage, verdict=st.verdict, required=st.required, policy=st.policy_name,
                             policy_content=st.policy, note=st.note,
                             metrics=[metric_view(m) for m in metrics]))
    return out


def metric_view(m: Metric) -> MetricView:
    delta = m.after - m.before if m.after is not None and m.before is not None else None
    return MetricView(name=m.name, before=m.before, after=m.after, delta=delta, threshold=m.threshold,
                      rule=m.rule, passed=m.passed, ci_low=m.ci_low, ci_high=m.ci_high, n=m.n, note=m.note)


def job_detail(s: Session, job_id: int, evidence_limit: int = 200) -> dict:
    job = get_job(s, job_id)
    req = s.get(Request, job.request_id)
    evidence = s.exec(select(Evidence).where(Evidence.job_id == job_id).order_by(Evidence.id).limit(evidence_limit))
    artifacts = s.exec(select(Artifact).where(Artifact.job_id == job_id))
    return JobDetail(job=job_row_view(job, req), stages=stage_views(s, job_id), progress=job.progress,
                     result=job.result, evidence=[evidence_view(e) for e in evidence],
                     artifacts=[ArtifactView.model_validate(a) for a in artifacts],
                     trials=trial_views(s, job_id)).model_dump()
