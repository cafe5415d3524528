"""Who am I (the caller the engine sees, with its roles) and the named TCP tokens (the owner's to manage)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from engine.control import service
from engine.control.routes.bodies import TokenIn
from engine.control.routes.deps import Db, Owner, caller

router = APIRouter()


@router.get("/whoami")
def whoami(request: Request) -> dict:
    return caller(request).view()


@router.post("/tokens", status_code=201)
def add_token(body: TokenIn, s: Db, who: Owner) -> dict:
    """A new named token; the response is the only place the token itself ever appears."""
    row, token = service.add_token(s, body.name, body.roles, actor=who.name)
    return {**service.token_view(row), "token": token}


@router.get("/tokens")
def tokens(s: Db, _who: Owner) -> list[dict]:
    return [service.token_view(t) for t in service.list_tokens(s)]


@router.post("/tokens/{name}/revoke")
def revoke(name: str, s: Db, who: Owner) -> dict:
    return service.token_view(service.revoke_token(s, name, actor=who.name))
