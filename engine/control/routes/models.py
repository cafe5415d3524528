"""Registered models, the methods a job can run and the verification policies."""

from __future__ import annotations

from fastapi import APIRouter

from engine.compute.methods.base import list_methods
from engine.control import service
from engine.control.routes.bodies import ModelIn
from engine.control.routes.deps import Db, Operator, Viewer
from engine.schema.policy import list_policies
from engine.schema.views import ModelAdded, ModelView

router = APIRouter()


@router.get("/models", response_model=list[ModelView])
def models(s: Db, _who: Viewer):
    return [service.model_view(m) for m in service.list_models(s)]


@router.post("/models", status_code=201, response_model=ModelAdded)
def add_model(body: ModelIn, s: Db, who: Operator):
    found: dict = {}
    entry = service.register_model(s, body.name, body.source, body.options, body.retain_path, body.holdout_path,
                                   report=found, actor=who.name)
    return ModelAdded(**service.model_view(entry).model_dump(), checked=found)


@router.get("/methods")
def methods(_who: Viewer):
    return list_methods()


@router.get("/policies")
def policies(_who: Viewer):
    return list_policies()
