"""What every route may depend on: the engine (database, event bus, scheduler) and one session per request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from sqlmodel import Session

from engine.control import service
from engine.control.events import EventBus
from engine.control.identity import Caller, refusal
from engine.control.peercred import CALLER_KEY
from engine.schema.errors import Forbidden
from store.db import session

MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id is a 422 naming the field, not an overflow
Id = Annotated[int, PathParam(ge=0, le=MAX_ID)]


@dataclass
class EngineState:
    db: object  # the SQLAlchemy engine
    bus: EventBus
    scheduler: object | None = None  # engine.control.scheduler.Scheduler; None: jobs queue but never run
    started: float = field(default_factory=time.time)

    def publish_job(self, s: Session, job_id: int) -> dict:
        """Tell the event stream (and a waiting slot) about a job; returns the job as the API shows it."""
        job = service.job_view(s, job_id)
        self.bus.publish("job", job_id=job_id, job=job)
        if self.scheduler is not None:
            self.scheduler.wake.set()
        return job

    def publish_request(self, request_id: int) -> None:
        self.bus.publish("request", request_id=request_id)


def engine_state(request: Request) -> EngineState:
    return request.app.state.engine


def db_session(request: Request) -> Iterator[Session]:
    """One session per request; closing it rolls back whatever a failed handler left uncommitted."""
    with session(request.app.state.engine.db) as s:
        yield s


Engine = Annotated[EngineState, Depends(engine_state)]
Db = Annotated[Session, Depends(db_session)]


def caller(request: Request) -> Caller:
    """Who is calling (set by engine.control.peercred.IdentityGate from the connection, never from a body)."""
    found = request.scope.get(CALLER_KEY)
    if found is None:
        raise Forbidden("the engine cannot tell who is calling (the app runs without its identity gate)")
    return found


def needs(role: str):
    """A dependency: the caller, when it has `role`; otherwise 403 naming the role."""
    def check(request: Request) -> Caller:
        who = caller(request)
        # Reading is every role's floor: an operator or an approver reads what they act on.
        if role not in who.roles and not (role == "viewer" and who.roles):
            raise Forbidden(refusal(who, role))
        return who
    return check


def owner(request: Request) -> Caller:
    """The socket's owner (the engine's own user): the only one who manages tokens."""
    who = caller(request)
    if not who.owner:
        raise Forbidden(f"only the engine's owner, on its unix socket, manages tokens; {who.name} is not")
    return who


Viewer = Annotated[Caller, Depends(needs("viewer"))]
Operator = Annotated[Caller, Depends(needs("operator"))]
Approver = Annotated[Caller, Depends(needs("approver"))]
Owner = Annotated[Caller, Depends(owner)]
