"""Erasure requests: filing, listing, the ladder's detail, escalating, accepting, closing, the sign-off report
and the purge check."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from engine.control import service
from engine.control.routes.bodies import AcceptIn, EscalateIn, ExtendIn, PurgeCheckIn, RequestIn
from engine.control.routes.deps import MAX_ID, Approver, Db, Engine, Id, Operator, Viewer
from engine.schema.errors import SpecError
from engine.schema.views import (
    ClosedRequest,
    JobView,
    RequestCreated,
    RequestDetail,
    RequestPage,
    RequestView,
)

router = APIRouter()

WHEN = "a date YYYY-MM-DD (UTC; until includes that day) or an ISO datetime"
REQUEST_SORT = "^(" + "|".join(service.REQUEST_SORTS) + ")$"
MAX_SPAN_S = 3650 * 86400  # ten years: a longer span is refused as not a span (422), not an overflow
DUE = "open requests due within a span (7d, 48h) or by a date YYYY-MM-DD, overdue ones included"


def due_by(value: str | None):
    """The `due` query parameter as the latest due time to list; a 422 naming it when it is neither a span
    nor a date."""
    if value is None or value == "":
        return None
    text = value.strip().lower()
    units = {"d": 86400, "h": 3600}
    number = text[:-1]
    if number.isascii() and number.isdigit() and text[-1:] in units and int(number) * units[text[-1]] <= MAX_SPAN_S:
        return service.clock.now() + timedelta(seconds=int(number) * units[text[-1]])
    try:
        return service.parse_when(value, "due", end=True)
    except SpecError as exc:
        raise HTTPException(status_code=422, detail=[{"loc": ["query", "due"], "msg": f"{exc}, or a span such as "
                                                      "7d or 48h", "type": "value_error"}]) from None


def window(since: str | None, until: str | None):
    """The since/until query parameters as datetimes; a 422 naming the field when one is not a date."""
    bounds = []
    for name, value, end in (("since", since, False), ("until", until, True)):
        try:
            bounds.append(service.parse_when(value, name, end=end))
        except SpecError as exc:
            raise HTTPException(status_code=422, detail=[{"loc": ["query", name], "msg": str(exc),
                                                          "type": "value_error"}]) from None
    if bounds[0] is not None and bounds[1] is not None and bounds[1] <= bounds[0]:
        raise HTTPException(status_code=422, detail=[{"loc": ["query", "until"], "msg":
                                                      "until: must not be before since", "type": "value_error"}])
    return bounds


@router.post("/requests", status_code=201, response_model=RequestCreated)
def create_request(body: RequestIn, s: Db, engine: Engine, who: Operator):
    req, job = service.create_request(s, body.spec, body.method, body.hyper, body.start, body.auto_escalate,
                                      actor=who.name, tune=body.tune.model_dump() if body.tune else None)
    engine.publish_request(req.id)
    return RequestCreated(request=service.request_view(req),
                          job=engine.publish_job(s, job.id) if job is not None else None)


@router.get("/requests", response_model=RequestPage)
def list_requests(s: Db, _who: Viewer, status: str | None = None, q: str | None = Query(default=None, max_length=200),
                  limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0, le=MAX_ID),
                  sort: str = Query(default="id", pattern=REQUEST_SORT),
                  order: str = Query(default="desc", pattern="^(asc|desc)$"),
                  since: str | None = Query(default=None, max_length=40, description=WHEN),
                  until: str | None = Query(default=None, max_length=40, description=WHEN),
                  due: str | None = Query(default=None, max_length=40, description=DUE)):
    lo, hi = window(since, until)
    return service.list_requests(s, status, q, limit, offset, sort=sort, order=order, since=lo, until=hi,
                                 due_before=due_by(due))


@router.get("/requests/{request_id}", response_model=RequestDetail)
def request_detail(request_id: Id, s: Db, _who: Viewer):
    return service.request_detail(s, request_id)


@router.post("/requests/{request_id}/escalate", status_code=201, response_model=JobView)
def escalate(request_id: Id, body: EscalateIn, s: Db, engine: Engine, who: Operator):
    job = service.escalate(s, request_id, body.method, body.hyper, actor=who.name,
                           tune=body.tune.model_dump() if body.tune else None)
    shown = engine.publish_job(s, job.id)
    engine.publish_request(request_id)
    return shown


@router.post("/requests/{request_id}/close", response_model=ClosedRequest)
def close(request_id: Id, s: Db, engine: Engine, who: Approver,
          check: str = Query(default="database", pattern="^(database|full)$")):
    """Close and purge; the texts are then searched for in the database and its WAL, or (check=full,
    `expunge purge`) in every file under the data, artifacts and state dirs too."""
    purge: dict = {}
    req = service.close_request(s, request_id, actor=who.name, report=purge, full_check=check == "full")
    engine.publish_request(request_id)
    return ClosedRequest(**service.request_view(req).model_dump(), purge=purge)


@router.post("/requests/{request_id}/accept", response_model=RequestView)
def accept(request_id: Id, body: AcceptIn, s: Db, engine: Engine, who: Approver):
    req = service.accept_job(s, request_id, body.job_id, actor=who.name, comment=body.comment)
    engine.publish_request(request_id)
    return service.request_view(req)


@router.get("/requests/{request_id}/report")
def report(request_id: Id, s: Db, _who: Viewer, fmt: str = Query(default="html", alias="format", pattern="^(html|md)$")):
    from engine.control.report import (
        build_report,  # matplotlib and the templates: only when a report is asked for
    )

    body = build_report(s, request_id, fmt)
    media = "text/html; charset=utf-8" if fmt == "html" else "text/markdown; charset=utf-8"
    return Response(content=body, media_type=media)


@router.post("/requests/{request_id}/purge-check")
def purge_check(request_id: Id, body: PurgeCheckIn, s: Db, _who: Approver):
    """Scan the database, its WAL and the data dir for a request's texts (engine.control.service.purge_check)."""
    return service.purge_check(s, request_id, body.forget, body.sensitive, body.strings)


@router.post("/requests/{request_id}/extend", response_model=RequestView)
def extend(request_id: Id, body: ExtendIn, s: Db, engine: Engine, who: Approver):
    """Move the due date later, with the reason (at most 60 days in all); audited."""
    req = service.extend_deadline(s, request_id, body.days, body.reason, actor=who.name)
    engine.publish_request(request_id)
    return service.request_view(req)
