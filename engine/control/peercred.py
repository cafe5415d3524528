"""The caller of each HTTP request, from the connection it came on.

uvicorn puts no peer credentials in the ASGI scope, so the engine serves with its own HTTP protocol class
(uvicorn.Config(http=PeerCredProtocol): uvicorn's h11 protocol, one instance per connection). When the
connection is made it asks the kernel who is at the other end of a unix socket (SO_PEERCRED: the uid of the
process that connected, fixed at connect time, not something the client sends) and hands every request on
that connection to the app with the peer in its scope. IdentityGate then turns the peer into a Caller: the
socket's user, or over TCP the named token in the Authorization header (401 without a valid one)."""

from __future__ import annotations

import json
import socket
import struct

import anyio.to_thread
from sqlmodel import select
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.control.identity import Access, Caller, Peer, token_sha256
from store.db import session
from store.models import ApiToken

PEER_KEY = "expunge.peer"
CALLER_KEY = "expunge.caller"
UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_of(transport) -> Peer:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return Peer("tcp")
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the kernel's answer is unavailable, so nobody is named
        return Peer("unix")
    pid, uid, _gid = UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    return Peer("unix", uid=uid, pid=pid)


class PeerCredProtocol(H11Protocol):
    """uvicorn's h11 protocol, whose app sees the connection's peer as scope['expunge.peer']."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer, app = peer_of(transport), self.app

        async def app_with_peer(scope, receive, send):
            scope[PEER_KEY] = peer
            await app(scope, receive, send)

        self.app = app_with_peer  # read by the protocol for each request on this connection


class IdentityGate:
    """ASGI wrapper: every HTTP request gets its caller (scope['expunge.caller']) or is answered 401."""

    def __init__(self, app, db, access: Access) -> None:
        self.app, self.db, self.access = app, db, access

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer: Peer | None = scope.get(PEER_KEY)
        caller, why = None, "the engine cannot tell who is calling"
        if peer is not None and peer.kind == "unix":
            caller = self.access.socket_caller(peer.uid)
            why = "the kernel did not name the socket's peer (SO_PEERCRED is Linux-only)"
        elif peer is not None:
            token = bearer(scope)
            why = "a bearer token is required (expunge tokens add NAME --role ROLE)"
            if token:
                caller = await anyio.to_thread.run_sync(self.token_caller, token)
                why = "the bearer token is not known or has been revoked"
        if caller is None:
            body = json.dumps({"detail": why}).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    def token_caller(self, token: str) -> Caller | None:
        with session(self.db) as s:
            row = s.exec(select(ApiToken).where(ApiToken.sha256 == token_sha256(token),
                                                ApiToken.revoked_at.is_(None))).first()
        return Caller(row.name, frozenset(row.roles), "token") if row is not None else None


def bearer(scope) -> str:
    auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
