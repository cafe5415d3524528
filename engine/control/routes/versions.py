"""Model versions (issue 14): a model's line, rolling a version back, retiring the line, and purging a request's
sealed regression data. Accepting a job (which makes a version) is routes.requests' accept."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from engine.control.routes.bodies import BodyIn
from engine.control.routes.deps import Db, Engine, Id
from engine.control.service import versions
from engine.schema.views import ModelLine

router = APIRouter()


class RollbackIn(BodyIn):
    version: int = Field(ge=1, le=1_000_000)
    reason: str = Field(min_length=1, max_length=2000)


@router.get("/models/{name}/versions", response_model=ModelLine)
def model_line(name: str, s: Db):
    return versions.model_line(s, name)


@router.post("/models/{name}/rollback")
def rollback(name: str, body: RollbackIn, s: Db, engine: Engine):
    done = versions.rollback(s, name, body.version, body.reason)
    engine.bus.publish("model", model=name)
    return done


@router.post("/models/{name}/retire")
def retire(name: str, s: Db, engine: Engine):
    done = versions.retire_line(s, name)
    engine.bus.publish("model", model=name)
    return done


@router.post("/requests/{request_id}/regression-data/purge")
def purge_regression_data(request_id: Id, s: Db):
    return {"request_id": request_id, "rows": versions.purge_regression_data(s, request_id)}
