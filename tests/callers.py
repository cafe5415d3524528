"""The engine's app in-process (starlette's TestClient) has no connection to take a caller from: this wraps it
as the server's IdentityGate would, with a named caller holding the given roles."""

from __future__ import annotations

from engine.control.identity import ROLES, Caller
from engine.control.peercred import CALLER_KEY


def as_caller(app, name: str = "tester", roles=ROLES):
    who = Caller(name, frozenset(roles), "socket", owner=True)

    async def wrapped(scope, receive, send):
        scope[CALLER_KEY] = who
        await app(scope, receive, send)

    return wrapped
