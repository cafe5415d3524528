"""Model versions (issue 14): a model's line, rolling a version back, retiring the line, purging a request's
sealed regression data, and batched requests (one job over several). Accepting a job (which makes a version)
is routes.requests' accept."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field

from engine.control.routes.bodies import BodyIn
from engine.control.routes.deps import MAX_ID, Approver, Db, Engine, Id, Operator, Viewer
from engine.control.service import batch, versions
from engine.schema.views import JobView, ModelLine

router = APIRouter()


class BatchIn(BodyIn):
    request_ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(min_length=2, max_length=100)
    method: str = Field(min_length=1, max_length=64)
    hyper: dict | None = None


class RollbackIn(BodyIn):
    version: int = Field(ge=1, le=1_000_000)
    reason: str = Field(min_length=1, max_length=2000)


@router.get("/models/{name}/versions", response_model=ModelLine)
def model_line(name: str, s: Db, _who: Viewer):
    return versions.model_line(s, name)


@router.post("/models/{name}/rollback")
def rollback(name: str, body: RollbackIn, s: Db, engine: Engine, who: Approver):
    done = versions.rollback(s, name, body.version, body.reason, actor=who.name)
    engine.bus.publish("model", model=name)
    return done


@router.post("/models/{name}/retire")
def retire(name: str, s: Db, engine: Engine, who: Approver):
    done = versions.retire_line(s, name, actor=who.name)
    engine.bus.publish("model", model=name)
    return done


@router.post("/requests/{request_id}/regression-data/purge")
def purge_regression_data(request_id: Id, s: Db, who: Approver):
    return {"request_id": request_id, "rows": versions.purge_regression_data(s, request_id, actor=who.name)}


@router.post("/batch", status_code=201, response_model=list[JobView])
def submit_batch(body: BatchIn, s: Db, engine: Engine, who: Operator):
    """One job over several open requests on the same model: one unlearning run over the union, each request
    verified on its own (engine.control.service.batch)."""
    jobs = batch.submit_batch(s, body.request_ids, body.method, body.hyper, actor=who.name)
    shown = [engine.publish_job(s, j.id) for j in jobs]
    for rid in body.request_ids:
        engine.publish_request(rid)
    return shown
