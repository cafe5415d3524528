"""The engine's HTTP API (FastAPI). It alone writes the database; every handler is one transaction."""

from __future__ import annotations

import json
import os
import time

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from engine import service
from engine.errors import SpecError
from engine.events import EventBus
from engine.methods.base import list_methods
from engine.verify.policy import list_policies
from store import audit
from store.db import session

MAX_BODY_BYTES = 64 * 1024 * 1024


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, max_length=4096)
    options: dict = Field(default_factory=dict)
    retain_path: str | None = None
    holdout_path: str | None = None


class RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict
    method: str | None = None
    hyper: dict | None = None
    start: bool = True
    auto_escalate: bool = False


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: int
    method: str
    hyper: dict | None = None


class EscalateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str | None = None
    hyper: dict | None = None


class AcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: int


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
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - started, 1),
                "slots": scheduler.status() if scheduler else [], "last_event_id": bus.last_id}

    @app.get("/models")
    def models():
        from sqlmodel import select

        from store.models import ModelEntry

        with session(db) as s:
            return [service.model_out(m) for m in s.exec(select(ModelEntry).order_by(ModelEntry.name))]

    @app.post("/models", status_code=201)
    def add_model(body: ModelIn):
        entry = run(service.register_model, body.name, body.source, body.options, body.retain_path, body.holdout_path)
        return service.model_out(entry)

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

    @app.get("/requests")
    def list_requests(status: str | None = None, q: str | None = Query(default=None, max_length=200),
                      limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0)):
        return run(service.list_requests, status, q, limit, offset)

    @app.get("/requests/{request_id}")
    def request_detail(request_id: int):
        return run(service.request_detail, request_id)

    @app.post("/requests/{request_id}/escalate", status_code=201)
    def escalate(request_id: int, body: EscalateIn):
        job = run(service.escalate, request_id, body.method, body.hyper)
        _publish_job(job.id)
        _publish_request(request_id)
        return _job(job.id)

    @app.post("/requests/{request_id}/close")
    def close(request_id: int):
        req = run(service.close_request, request_id)
        _publish_request(request_id)
        return service.request_out(req)

    @app.post("/requests/{request_id}/accept")
    def accept(request_id: int, body: AcceptIn):
        req = run(service.accept_job, request_id, body.job_id)
        _publish_request(request_id)
        return service.request_out(req)

    @app.get("/jobs")
    def list_jobs(status: str | None = None, request_id: int | None = None, method: str | None = None,
                  model: str | None = None, verdict: str | None = None,
                  q: str | None = Query(default=None, max_length=200),
                  limit: int = Query(default=100, ge=1, le=1000), offset: int = Query(default=0, ge=0),
                  order: str = Query(default="desc", pattern="^(asc|desc)$")):
        return run(service.list_jobs, status, request_id, method, model, verdict, q, limit, offset, order)

    @app.post("/jobs", status_code=201)
    def create_job(body: JobIn):
        job = run(service.submit_job, body.request_id, body.method, body.hyper)
        _publish_job(job.id)
        return _job(job.id)

    @app.get("/jobs/{job_id}")
    def job_detail(job_id: int, evidence_limit: int = Query(default=200, ge=0, le=10_000)):
        return run(service.job_detail, job_id, evidence_limit)

    @app.post("/jobs/{job_id}/cancel")
    def cancel(job_id: int):
        job = run(service.cancel_job, job_id)
        if scheduler is not None:
            scheduler.cancel(job_id)
        _publish_job(job_id)
        return _job(job.id)

    @app.post("/jobs/{job_id}/resume")
    def resume(job_id: int):
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
        return run(lambda s: service.job_out(service.get_job(s, job_id), service.get_request(
            s, service.get_job(s, job_id).request_id)))

    def _publish_job(job_id: int) -> None:
        bus.publish("job", job_id=job_id, job=_job(job_id))
        if scheduler is not None:
            scheduler.wake.set()

    def _publish_request(request_id: int) -> None:
        bus.publish("request", request_id=request_id)

    return app
