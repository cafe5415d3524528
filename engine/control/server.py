"""The engine daemon's main: one per user, on a private unix socket (optionally TCP with a bearer token)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import socket
import sys

from engine.control.api import create_app
from engine.control.events import EventBus
from engine.control.executors import ExecutorError, make_executor
from engine.control.identity import load_access
from engine.control.peercred import IdentityGate, PeerCredProtocol
from engine.control.scheduler import Scheduler, recover
from engine.logs import configure_engine, verbose
from engine.schema.errors import SpecError
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


def serve(tcp: str | None = None, ray: str | None = None, gpus: int | None = None) -> None:
    import uvicorn

    paths = get_paths().ensure()
    access = load_access(paths.config)  # a malformed access.toml stops the start, naming the problem
    lock_fd = acquire_pidfile(paths)
    configure_engine()
    db = migrate(paths.db)
    recover(db)  # logs each interrupted job
    bus = EventBus()
    executor = make_executor(paths, ray, gpus)  # None: local worker subprocesses
    scheduler = Scheduler(db, paths, bus, executor=executor)
    # Every request names its caller: the unix socket's peer (SO_PEERCRED) or a named TCP token.
    app = IdentityGate(create_app(db, bus, scheduler), db, access)
    sockets = [bind_unix(paths.socket)]
    if tcp:
        host, _, port = tcp.rpartition(":")
        sockets.append(bind_tcp(host or "127.0.0.1", int(port)))
        log.info("also listening on TCP %s (named bearer tokens: expunge tokens add NAME --role ROLE)", tcp)
    scheduler.start()
    # Keep-alive longer than the clients' (httpx: 5 s idle): with equal timeouts a client can reuse a connection
    # in the instant the server closes it ("Server disconnected without sending a response").
    server = uvicorn.Server(uvicorn.Config(app, http=PeerCredProtocol, log_level="info" if verbose() else "warning",
                                           lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=30))
    try:
        server.run(sockets=sockets)
    finally:
        scheduler.stop()
        for path in (paths.socket,):
            path.unlink(missing_ok=True)
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.control.server")
    parser.add_argument("--tcp", help="also listen on HOST:PORT (loopback by default; needs a named bearer token)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run jobs on the Ray cluster at ADDRESS ('auto': the one "
                                                         "this host joined)")
    parser.add_argument("--gpus", type=int, help="with --ray: how many of the cluster's GPUs to use (default all)")
    args = parser.parse_args(argv)
    try:
        serve(args.tcp, args.ray, args.gpus)
    except AlreadyRunning as exc:
        print(f"expunge engine: {exc}", file=sys.stderr)
        return 3
    except SpecError as exc:
        print(f"expunge engine: {exc}", file=sys.stderr)
        return 2
    except ExecutorError as exc:
        print(f"expunge engine: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
