"""Erasure requests: filing, listing, the ladder's detail, escalating, accepting, closing, the sign-off report
and the purge check."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from engine.control import service
from engine.control.routes.bodies import AcceptIn, EscalateIn, PurgeCheckIn, RequestIn
from engine.control.routes.deps import MAX_ID, Db, Engine, Id
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
def create_request(body: RequestIn, s: Db, engine: Engine):
    req, job = service.create_request(s, body.spec, body.method, body.hyper, body.start, body.auto_escalate,
                                      tune=body.tune.model_dump() if body.tune else None)
    engine.publish_request(req.id)
    return RequestCreated(request=service.request_view(req),
                          job=engine.publish_job(s, job.id) if job is not None else None)


@router.get("/requests", response_model=RequestPage)
def list_requests(s: Db, status: str | None = None, q: str | None = Query(default=None, max_length=200),
                  limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0, le=MAX_ID),
                  sort: str = Query(default="id", pattern=REQUEST_SORT),
                  order: str = Query(default="desc", pattern="^(asc|desc)$"),
                  since: str | None = Query(default=None, max_length=40, description=WHEN),
                  until: str | None = Query(default=None, max_length=40, description=WHEN)):
    lo, hi = window(since, until)
    return service.list_requests(s, status, q, limit, offset, sort=sort, order=order, since=lo, until=hi)


@router.get("/requests/{request_id}", response_model=RequestDetail)
def request_detail(request_id: Id, s: Db):
    return service.request_detail(s, request_id)


@router.post("/requests/{request_id}/escalate", status_code=201, response_model=JobView)
def escalate(request_id: Id, body: EscalateIn, s: Db, engine: Engine):
    job = service.escalate(s, request_id, body.method, body.hyper,
                           tune=body.tune.model_dump() if body.tune else None)
    shown = engine.publish_job(s, job.id)
    engine.publish_request(request_id)
    return shown


@router.post("/requests/{request_id}/close", response_model=ClosedRequest)
def close(request_id: Id, s: Db, engine: Engine,
          check: str = Query(default="database", pattern="^(database|full)$")):
    """Close and purge; the texts are then searched for in the database and its WAL, or (check=full,
    `expunge purge`) in every file under the data, artifacts and state dirs too."""
    purge: dict = {}
    req = service.close_request(s, request_id, report=purge, full_check=check == "full")
    engine.publish_request(request_id)
    return ClosedRequest(**service.request_view(req).model_dump(), purge=purge)


@router.post("/requests/{request_id}/accept", response_model=RequestView)
def accept(request_id: Id, body: AcceptIn, s: Db, engine: Engine):
    req = service.accept_job(s, request_id, body.job_id)
    engine.publish_request(request_id)
    return service.request_view(req)


@router.get("/requests/{request_id}/report")
def report(request_id: Id, s: Db, fmt: str = Query(default="html", alias="format", pattern="^(html|md)$")):
    from engine.control.report import (
        build_report,  # matplotlib and the templates: only when a report is asked for
    )

    body = build_report(s, request_id, fmt)
    media = "text/html; charset=utf-8" if fmt == "html" else "text/markdown; charset=utf-8"
    return Response(content=body, media_type=media)


@router.post("/requests/{request_id}/purge-check")
def purge_check(request_id: Id, body: PurgeCheckIn, s: Db):
    """Scan the database, its WAL and the data dir for a request's texts (engine.control.service.purge_check)."""
    return service.purge_check(s, request_id, body.forget, body.sensitive, body.strings)
