"""The engine's HTTP API (FastAPI). It alone writes the database; every handler is one transaction."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sse_starlette.sse import EventSourceResponse

from engine.compute.methods.base import list_methods
from engine.control import service
from engine.control.events import EventBus
from engine.schema.datasets import lone_surrogate
from engine.schema.errors import SpecError
from engine.schema.policy import list_policies
from store import audit
from store.db import session

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id is a 422 naming the field, not an overflow
Id = Annotated[int, PathParam(ge=0, le=MAX_ID)]


class BodyIn(BaseModel):
    """A request body: unknown fields refused, and text that is not valid Unicode refused by its path."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        where = lone_surrogate(data, "")
        if where is not None:
            raise ValueError(f"{where}: not valid Unicode (a lone surrogate code point)")
        return data


class ModelIn(BodyIn):
    name: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, max_length=4096)
    options: dict = Field(default_factory=dict)
    retain_path: str | None = None
    holdout_path: str | None = None


class RequestIn(BodyIn):
    spec: dict
    method: str | None = None
    hyper: dict | None = None
    start: bool = True
    auto_escalate: bool = False


class JobIn(BodyIn):
    request_id: int = Field(ge=0, le=MAX_ID)
    method: str
    hyper: dict | None = None


class EscalateIn(BodyIn):
    method: str | None = None
    hyper: dict | None = None


class AcceptIn(BodyIn):
    job_id: int = Field(ge=0, le=MAX_ID)


class PurgeCheckIn(BodyIn):
    """The operator's copy of a request's texts: checked against the kept hashes, then searched for."""

    forget: list[dict] | None = Field(default=None, max_length=100_000)
    sensitive: list[str] | None = Field(default=None, max_length=1000)
    strings: list[str] = Field(default_factory=list, max_length=10_000)


def create_app(db, bus: EventBus, scheduler=None) -> FastAPI:
    app = FastAPI(title="expunge engine", version="0.1.0")
    started = time.time()

    def run(fn, *args, **kwargs):
        with session(db) as s:
            try:
                return fn(s, *args, **kwargs)
            except SpecError as exc:
                s.rollback()
                raise HTTPException(status_code=422, detail=str(exc)) from None
            except service.NotFound as exc:
                s.rollback()
                raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        if not length and request.method in ("POST", "PUT", "PATCH"):  # chunked: counted as it arrives
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"},
                                        status_code=413)
                chunks.append(chunk)
            request._body = b"".join(chunks)  # handed on to the route (starlette's _CachedRequest)
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - started, 1),
                "slots": scheduler.status() if scheduler else [], "last_event_id": bus.last_id}

    @app.get("/models")
    def models():
        return run(lambda s: [service.model_out(m) for m in service.list_models(s)])

    @app.post("/models", status_code=201)
    def add_model(body: ModelIn):
        found: dict = {}
        entry = run(service.register_model, body.name, body.source, body.options, body.retain_path,
                    body.holdout_path, report=found)
        return {**service.model_out(entry), "checked": found}

    @app.get("/methods")
    def methods():
        return list_methods()

    @app.get("/policies")
    def policies():
        try:
            return list_policies()
        except SpecError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    @app.post("/requests", status_code=201)
    def create_request(body: RequestIn):
        req, job = run(service.create_request, body.spec, body.method, body.hyper, body.start,
                       body.auto_escalate)
        _publish_request(req.id)
        if job is not None:
            _publish_job(job.id)
        return {"request": service.request_out(req), "job": service.job_out(job, req) if job else None}

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

    REQUEST_SORT = "^(" + "|".join(service.REQUEST_SORTS) + ")$"
    JOB_SORT = "^(" + "|".join(service.JOB_SORTS) + ")$"
    WHEN = "a date YYYY-MM-DD (UTC; until includes that day) or an ISO datetime"

    @app.get("/requests")
    def list_requests(status: str | None = None, q: str | None = Query(default=None, max_length=200),
                      limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0, le=MAX_ID),
                      sort: str = Query(default="id", pattern=REQUEST_SORT),
                      order: str = Query(default="desc", pattern="^(asc|desc)$"),
                      since: str | None = Query(default=None, max_length=40, description=WHEN),
                      until: str | None = Query(default=None, max_length=40, description=WHEN)):
        lo, hi = window(since, until)
        return run(service.list_requests, status, q, limit, offset, sort=sort, order=order, since=lo, until=hi)

    @app.get("/requests/{request_id}")
    def request_detail(request_id: Id):
        return run(service.request_detail, request_id)

    @app.post("/requests/{request_id}/escalate", status_code=201)
    def escalate(request_id: Id, body: EscalateIn):
        job = run(service.escalate, request_id, body.method, body.hyper)
        _publish_job(job.id)
        _publish_request(request_id)
        return _job(job.id)

    @app.post("/requests/{request_id}/close")
    def close(request_id: Id, check: str = Query(default="database", pattern="^(database|full)$")):
        """Close and purge; the texts are then searched for in the database and its WAL, or (check=full,
        `expunge purge`) in every file under the data, artifacts and state dirs too."""
        purge: dict = {}
        req = run(service.close_request, request_id, report=purge, full_check=check == "full")
        _publish_request(request_id)
        return {**service.request_out(req), "purge": purge}

    @app.post("/requests/{request_id}/accept")
    def accept(request_id: Id, body: AcceptIn):
        req = run(service.accept_job, request_id, body.job_id)
        _publish_request(request_id)
        return service.request_out(req)

    @app.get("/jobs")
    def list_jobs(status: str | None = None, request_id: int | None = Query(default=None, ge=0, le=MAX_ID), method: str | None = None,
                  model: str | None = None, verdict: str | None = None,
                  q: str | None = Query(default=None, max_length=200),
                  limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0, le=MAX_ID),
                  order: str = Query(default="desc", pattern="^(asc|desc)$"),
                  sort: str = Query(default="id", pattern=JOB_SORT),
                  since: str | None = Query(default=None, max_length=40, description=WHEN),
                  until: str | None = Query(default=None, max_length=40, description=WHEN)):
        lo, hi = window(since, until)
        return run(service.list_jobs, status, request_id, method, model, verdict, q, limit, offset, order, sort=sort,
                   since=lo, until=hi)

    @app.post("/jobs", status_code=201)
    def create_job(body: JobIn):
        job = run(service.submit_job, body.request_id, body.method, body.hyper)
        _publish_job(job.id)
        return _job(job.id)

    @app.get("/jobs/{job_id}")
    def job_detail(job_id: Id, evidence_limit: int = Query(default=200, ge=0, le=10_000)):
        return run(service.job_detail, job_id, evidence_limit)

    @app.post("/jobs/{job_id}/cancel")
    def cancel(job_id: Id):
        job = run(service.cancel_job, job_id)
        if scheduler is not None:
            scheduler.cancel(job_id)
        _publish_job(job_id)
        return _job(job.id)

    @app.post("/jobs/{job_id}/resume")
    def resume(job_id: Id):
        run(service.resume_job, job_id)
        _publish_job(job_id)
        return _job(job_id)

    @app.get("/audit/verify")
    def audit_verify():
        with session(db) as s:
            check = audit.verify(s)
        return {"ok": check.ok, "rows": check.rows, "head": check.head, "bad_id": check.bad_id, "reason": check.reason}

    @app.get("/events")
    async def events(request: Request, after: int | None = Query(default=None, ge=0)):
        last = after
        if last is None:
            header = request.headers.get("last-event-id", "")
            last = int(header) if header.isdigit() else bus.last_id

        async def gen():
            async for ev in bus.stream(last):
                if await request.is_disconnected():
                    break
                if ev is None:
                    yield {"comment": "keep-alive"}
                else:
                    yield {"id": str(ev["id"]), "event": ev["type"], "data": json.dumps(ev, default=str)}

        return EventSourceResponse(gen(), ping=None)

    def _job(job_id: int) -> dict:
        return run(service.job_view, job_id)

    def _publish_job(job_id: int) -> None:
        bus.publish("job", job_id=job_id, job=_job(job_id))
        if scheduler is not None:
            scheduler.wake.set()

    def _publish_request(request_id: int) -> None:
        bus.publish("request", request_id=request_id)

    @app.get("/requests/{request_id}/report")
    def report(request_id: Id, fmt: str = Query(default="html", alias="format", pattern="^(html|md)$")):
        from fastapi.responses import Response

        from engine.report import build_report

        body = run(build_report, request_id, fmt)
        media = "text/html; charset=utf-8" if fmt == "html" else "text/markdown; charset=utf-8"
        return Response(content=body, media_type=media)

    @app.post("/requests/{request_id}/purge-check")
    def purge_check(request_id: Id, body: PurgeCheckIn):
        """Scan the database, its WAL and the data dir for a request's texts. An open request is checked
        against the texts the engine holds; a closed one against the operator's copy (body), whose
        forget and sensitive sets are compared with the SHA-256 hashes kept at close."""
        return run(service.purge_check, request_id, body.forget, body.sensitive, body.strings)

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        """422 naming each field (loc) and what is wrong; the offending input is not echoed (it may be
        megabytes, or text that cannot be encoded)."""
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return Response(json.dumps({"detail": errors}, ensure_ascii=True, default=str), status_code=422,
                        media_type="application/json")

    return app
