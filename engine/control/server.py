"""The engine daemon's main: one per user, on a private unix socket (optionally TCP with a bearer token)."""

from __future__ import annotations

import argparse
import fcntl
import hmac
import logging
import os
import secrets
import socket
import sys

from engine.control.api import create_app
from engine.control.events import EventBus
from engine.control.executors import ExecutorError, make_executor
from engine.control.scheduler import Scheduler, recover
from engine.logs import configure_engine, verbose
from store.db import migrate
from store.paths import Paths, get_paths

log = logging.getLogger("expunge.engine")


class AlreadyRunning(RuntimeError):
    pass


def acquire_pidfile(paths: Paths) -> int:
    """A lock held for the process's life: a crashed engine's lock is released by the kernel, so a stale
    pid file never blocks a restart, and a second engine is refused while the first lives."""
    fd = os.open(paths.pidfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"an engine is already running (pid {other})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def bind_unix(path) -> socket.socket:
    if path.exists() or path.is_symlink():
        path.unlink()  # a stale socket from a crash: we hold the lock, so nobody serves it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def token_file(paths: Paths):
    path = paths.state / "token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_urlsafe(32).encode())
        os.close(fd)
    return path


class TcpTokenGuard:
    """ASGI wrapper: connections over TCP (scope['server'] is set) need the bearer token; the unix
    socket is already private to its user."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope.get("server") is not None:
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode()
            if not hmac.compare_digest(auth, f"Bearer {self.token}"):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b'{"detail":"a bearer token is required"}'})
                return
        await self.app(scope, receive, send)


def serve(tcp: str | None = None, ray: str | None = None, gpus: int | None = None) -> None:
    import uvicorn

    paths = get_paths().ensure()
    lock_fd = acquire_pidfile(paths)
    configure_engine()
    db = migrate(paths.db)
    recover(db)  # logs each interrupted job
    bus = EventBus()
    executor = make_executor(paths, ray, gpus)  # None: local worker subprocesses
    scheduler = Scheduler(db, paths, bus, executor=executor)
    app = create_app(db, bus, scheduler)
    sockets = [bind_unix(paths.socket)]
    if tcp:
        host, _, port = tcp.rpartition(":")
        sockets.append(bind_tcp(host or "127.0.0.1", int(port)))
        app = TcpTokenGuard(app, token_file(paths).read_text().strip())
        log.info("also listening on TCP %s (bearer token in %s)", tcp, paths.state / "token")
    scheduler.start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="info" if verbose() else "warning", lifespan="off", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=sockets)
    finally:
        scheduler.stop()
        for path in (paths.socket,):
            path.unlink(missing_ok=True)
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.control.server")
    parser.add_argument("--tcp", help="also listen on HOST:PORT (loopback by default; needs the bearer token)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run jobs on the Ray cluster at ADDRESS ('auto': the one "
                                                         "this host joined)")
    parser.add_argument("--gpus", type=int, help="with --ray: how many of the cluster's GPUs to use (default all)")
    args = parser.parse_args(argv)
    try:
        serve(args.tcp, args.ray, args.gpus)
    except AlreadyRunning as exc:
        print(f"expunge engine: {exc}", file=sys.stderr)
        return 3
    except ExecutorError as exc:
        print(f"expunge engine: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
