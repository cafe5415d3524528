"""The engine's client over its unix socket (sync for the CLI, async for the console)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx

from console.unix_backend import unix_transport
from store.paths import Paths, get_paths

BASE = "http://expunge"


class EngineError(RuntimeError):
    """The engine refused (4xx: the message names the problem) or is not reachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _check(r: httpx.Response):
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
        raise EngineError(str(detail), r.status_code)
    return r.json()


ADD_MODEL_TIMEOUT_S = 1900.0  # the engine's own check gives up after 1800 s


class EngineClient:
    def __init__(self, paths: Paths | None = None, timeout: float = 30.0) -> None:
        self.paths = paths or get_paths()
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.paths.socket)), base_url=BASE,
                                  timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get(self, path: str, **params):
        try:
            return _check(self._http.get(path, params={k: v for k, v in params.items() if v is not None}))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable at {self.paths.socket}: {exc}") from None

    def _post(self, path: str, body: dict | None = None, timeout: float | None = None):
        try:
            extra = {"timeout": timeout} if timeout is not None else {}
            return _check(self._http.post(path, json=body or {}, **extra))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable at {self.paths.socket}: {exc}") from None

    def health(self):
        return self._get("/health")

    def models(self):
        return self._get("/models")

    def add_model(self, name: str, source: str, options: dict | None = None, retain_path: str | None = None,
                  holdout_path: str | None = None):
        # The engine loads the config and tokenizer in a subprocess, and converts a GGUF file once (a
        # minute on a small CPU): longer than any other call.
        return self._post("/models", {"name": name, "source": source, "options": options or {},
                                      "retain_path": retain_path, "holdout_path": holdout_path},
                          timeout=ADD_MODEL_TIMEOUT_S)

    def methods(self):
        return self._get("/methods")

    def policies(self):
        return self._get("/policies")

    def submit(self, spec: dict, method: str | None = None, hyper: dict | None = None, start: bool = True,
               auto_escalate: bool = False):
        return self._post("/requests", {"spec": spec, "method": method, "hyper": hyper, "start": start,
                                        "auto_escalate": auto_escalate})

    def requests(self, **filters):
        return self._get("/requests", **filters)

    def request(self, request_id: int):
        return self._get(f"/requests/{request_id}")

    def escalate(self, request_id: int, method: str | None = None, hyper: dict | None = None):
        return self._post(f"/requests/{request_id}/escalate", {"method": method, "hyper": hyper})

    def close_request(self, request_id: int):
        return self._post(f"/requests/{request_id}/close")

    def accept(self, request_id: int, job_id: int):
        return self._post(f"/requests/{request_id}/accept", {"job_id": job_id})

    def jobs(self, **filters):
        return self._get("/jobs", **filters)

    def job(self, job_id: int):
        return self._get(f"/jobs/{job_id}")

    def submit_job(self, request_id: int, method: str, hyper: dict | None = None):
        return self._post("/jobs", {"request_id": request_id, "method": method, "hyper": hyper})

    def cancel(self, job_id: int):
        return self._post(f"/jobs/{job_id}/cancel")

    def resume(self, job_id: int):
        return self._post(f"/jobs/{job_id}/resume")

    def audit_verify(self):
        return self._get("/audit/verify")

    def purge(self, request_id: int):
        """Close a request and search the whole data dir for its texts while the engine still has them."""
        try:
            return _check(self._http.post(f"/requests/{request_id}/close", params={"check": "full"},
                                          timeout=httpx.Timeout(600.0)))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable at {self.paths.socket}: {exc}") from None

    def purge_check(self, request_id: int, forget: list[dict] | None = None, sensitive: list[str] | None = None,
                    strings: list[str] | None = None):
        """Scan the engine's database and data dir for a request's texts (see engine.control.privacy)."""
        try:
            return _check(self._http.post(f"/requests/{request_id}/purge-check",
                                          json={"forget": forget, "sensitive": sensitive, "strings": strings or []},
                                          timeout=httpx.Timeout(600.0)))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable at {self.paths.socket}: {exc}") from None

    def events(self, after: int | None = None, timeout: float | None = None) -> Iterator[dict]:
        """Server-sent events from the engine, parsed; blocks while nothing happens."""
        from httpx_sse import connect_sse

        params = {"after": after} if after is not None else {}
        with connect_sse(self._http, "GET", "/events", params=params,
                         timeout=httpx.Timeout(timeout or 30.0, read=None)) as source:
            for sse in source.iter_sse():
                if sse.data:
                    yield json.loads(sse.data)

    def report(self, request_id: int, fmt: str = "html") -> str:
        """The sign-off report of a request: a self-contained HTML page or Markdown, as text."""
        try:
            r = self._http.get(f"/requests/{request_id}/report", params={"format": fmt},
                               timeout=httpx.Timeout(120.0))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable at {self.paths.socket}: {exc}") from None
        if r.status_code >= 400:
            _check(r)
        return r.text


class AsyncEngineClient:
    """The console's client: the same calls, awaited, so the UI never blocks on the engine."""

    def __init__(self, paths: Paths | None = None, timeout: float = 30.0) -> None:
        self.paths = paths or get_paths()
        self._http = httpx.AsyncClient(transport=unix_transport(str(self.paths.socket)), base_url=BASE,
                                       timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, **params):
        try:
            return _check(await self._http.get(path, params={k: v for k, v in params.items() if v is not None}))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable: {exc}") from None

    async def post(self, path: str, body: dict | None = None):
        try:
            return _check(await self._http.post(path, json=body or {}))
        except httpx.TransportError as exc:
            raise EngineError(f"the engine is not reachable: {exc}") from None

    async def events(self, after: int | None = None) -> AsyncIterator[dict]:
        from httpx_sse import aconnect_sse

        params = {"after": after} if after is not None else {}
        async with aconnect_sse(self._http, "GET", "/events", params=params,
                                timeout=httpx.Timeout(30.0, read=None)) as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    yield json.loads(sse.data)
