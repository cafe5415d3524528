"""The engine's HTTP API (FastAPI): the routers of engine.control.routes, a body-size limit, and the engine's
errors mapped to status codes once (SpecError 422, NotFound 404, a malformed request 422 naming each field).
Every write goes through engine.control.service, one transaction each."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from engine.control.events import EventBus
from engine.control.routes import audit, events, identity, jobs, models, requests, versions
from engine.control.routes.deps import EngineState
from engine.schema.errors import Forbidden, NotFound, SpecError

MAX_BODY_BYTES = 64 * 1024 * 1024


def create_app(db, bus: EventBus, scheduler=None) -> FastAPI:
    app = FastAPI(title="expunge engine", version="0.1.0")
    app.state.engine = EngineState(db=db, bus=bus, scheduler=scheduler)
    for area in (models, requests, jobs, events, audit, identity, versions):
        app.include_router(area.router)
    app.middleware("http")(limit_body)
    app.add_exception_handler(SpecError, bad_input)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(RequestValidationError, invalid)
    return app


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


async def bad_input(_request: Request, exc: SpecError):
    """Input the engine refuses (a spec, a method, a state that forbids the action): 422 with the reason."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def not_found(_request: Request, exc: NotFound):
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def forbidden(_request: Request, exc: Forbidden):
    """A role the caller lacks, or an acceptance the policy reserves for a second person: 403 with the reason."""
    return JSONResponse({"detail": str(exc)}, status_code=403)


async def invalid(_request: Request, exc: RequestValidationError):
    """422 naming each field (loc) and what is wrong; the offending input is not echoed (it may be
    megabytes, or text that cannot be encoded)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return Response(json.dumps({"detail": errors}, ensure_ascii=True, default=str), status_code=422,
                    media_type="application/json")
