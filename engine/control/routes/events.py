"""The engine's health and its event stream (server-sent events, resumable with Last-Event-ID)."""

from __future__ import annotations

import json
import os
import time

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse

from engine.control.routes.deps import Engine, Viewer

router = APIRouter()


@router.get("/health")
def health(engine: Engine):
    return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - engine.started, 1),
            "slots": engine.scheduler.status() if engine.scheduler else [], "last_event_id": engine.bus.last_id}


@router.get("/events")
async def events(request: Request, engine: Engine, _who: Viewer, after: int | None = Query(default=None, ge=0)):
    last = after
    if last is None:
        header = request.headers.get("last-event-id", "")
        last = int(header) if header.isdigit() else engine.bus.last_id

    async def stream():
        async for ev in engine.bus.stream(last):
            if await request.is_disconnected():
                break
            if ev is None:
                yield {"comment": "keep-alive"}
            else:
                yield {"id": str(ev["id"]), "event": ev["type"], "data": json.dumps(ev, default=str)}

    return EventSourceResponse(stream(), ping=None)
