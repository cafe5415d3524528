"""Starting, stopping and finding the engine daemon from the command line or the console."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from store.paths import Paths, get_paths


def read_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def ping(paths: Paths, timeout: float = 2.0) -> dict | None:
    import httpx

    if not paths.socket.exists():
        return None
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths.socket)), base_url="http://expunge",
                          timeout=timeout) as c:
            r = c.get("/health")
            return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, OSError):
        return None


def start(paths: Paths | None = None, tcp: str | None = None, wait: float = 60.0, verbose: bool = False,
          ray: str | None = None, gpus: int | None = None) -> dict:
    """Start the engine detached (its own session: it outlives the SSH login) and wait until it answers;
    `verbose` sets EXPUNGE_VERBOSE=1 in its environment (third-party INFO lines in its log); `ray`: run jobs
    on the Ray cluster at that address (`gpus` of its GPUs)."""
    paths = (paths or get_paths()).ensure()
    health = ping(paths)
    if health:
        return {"started": False, **health}
    cmd = [sys.executable, "-m", "engine.control.server"] + (["--tcp", tcp] if tcp else [])
    cmd += (["--ray", ray] if ray else []) + (["--gpus", str(gpus)] if gpus is not None else [])
    with open(paths.log, "ab") as log:
        os.chmod(paths.log, 0o600)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True, env={**os.environ, "EXPUNGE_VERBOSE": "1"} if verbose else None)
    deadline = time.time() + wait
    while time.time() < deadline:
        health = ping(paths, timeout=1.0)
        if health:
            return {"started": True, **health}
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited with status {proc.returncode}; log:\n{tail(paths, 15)}")
        time.sleep(0.1)
    raise RuntimeError(f"the engine did not answer within {wait:.0f} s; log:\n{tail(paths, 15)}")


def stop(paths: Paths | None = None, wait: float = 30.0) -> bool:
    paths = paths or get_paths()
    pid = read_pid(paths)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    try:
        # Reap it if this process started it (a test, the console): a zombie still answers kill(pid, 0).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def tail(paths: Paths, lines: int = 50) -> str:
    try:
        return "\n".join(paths.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
