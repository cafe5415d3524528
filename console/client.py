"""The engine's client over its unix socket (sync for the CLI, async for the console).

Both clients offer the same typed calls (`jobs(...)`, `escalate(...)`, `report(...)`), written once in
`EngineCalls`: the one place that maps a call to the engine's URL. Screens and commands never build a URL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx

from console.unix_backend import unix_transport
from store.paths import Paths, get_paths

BASE = "http://expunge"
ADD_MODEL_TIMEOUT_S = 1900.0  # the engine's own check gives up after 1800 s
SCAN_TIMEOUT_S = 600.0  # a purge check reads every file under the data dir
REPORT_TIMEOUT_S = 120.0
# Accepting a job builds the model's next version and re-checks every erasure it carries (the engine's build
# gives up after EXPUNGE_VERSION_BUILD_TIMEOUT, 3600 s by default); a rollback rebuilds several.
VERSION_TIMEOUT_S = 3700.0


class EngineError(RuntimeError):
    """The engine refused (4xx: the message names the problem) or is not reachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _check(r: httpx.Response, text: bool = False):
    """The response's JSON (or its text), or EngineError with the engine's message."""
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
        raise EngineError(str(detail), r.status_code)
    return r.text if text else r.json()


def _unreachable(paths: Paths, exc: Exception) -> EngineError:
    return EngineError(f"the engine is not reachable at {paths.socket}: {exc}")


def _request_args(params: dict | None, body: dict | None, timeout: float | None) -> dict:
    """httpx keyword arguments: unset query parameters left out; a POST always sends a JSON body."""
    args: dict = {"params": {k: v for k, v in (params or {}).items() if v is not None}}
    if body is not None:
        args["json"] = body
    if timeout is not None:
        args["timeout"] = httpx.Timeout(timeout)
    return args


class EngineCalls:
    """The engine's API as typed calls. Each returns what the subclass's `_send(method, path, params, body,
    timeout, text)` returns: the decoded JSON in the sync client, an awaitable of it in the async one."""

    def _get(self, path: str, **params):
        return self._send("GET", path, params)

    def _post(self, path: str, body: dict | None = None, **kwargs):
        return self._send("POST", path, body=body or {}, **kwargs)

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
               auto_escalate: bool = False, tune: dict | None = None):
        body = {"spec": spec, "method": method, "hyper": hyper, "start": start, "auto_escalate": auto_escalate}
        if tune is not None:  # tune the first job (and, with auto_escalate, every tier climbed)
            body["tune"] = tune
        return self._post("/requests", body)

    def requests(self, **filters):
        """A page of requests: {"items", "total"}; filters: status, q, limit, offset, sort, order, since, until."""
        return self._get("/requests", **filters)

    def request(self, request_id: int):
        return self._get(f"/requests/{request_id}")

    def escalate(self, request_id: int, method: str | None = None, hyper: dict | None = None,
                 tune: dict | None = None):
        body = {"method": method, "hyper": hyper}
        if tune is not None:  # {"trials", "minutes", "seed"}: search the method's hyperparameters first
            body["tune"] = tune
        return self._post(f"/requests/{request_id}/escalate", body)

    def trials(self, job_id: int):
        """A tuning job's trials, by number."""
        return self._get(f"/jobs/{job_id}/trials")

    def close_request(self, request_id: int):
        return self._post(f"/requests/{request_id}/close")

    def accept(self, request_id: int, job_id: int, comment: str | None = None):
        return self._post(f"/requests/{request_id}/accept", {"job_id": job_id, "comment": comment},
                          timeout=VERSION_TIMEOUT_S)

    def extend(self, request_id: int, days: int, reason: str):
        """Move a request's due date later by `days`, with the reason (audited; at most 60 days in all)."""
        return self._post(f"/requests/{request_id}/extend", {"days": days, "reason": reason})

    def whoami(self):
        """The caller as the engine sees it: {"name", "roles", "via", "owner"}."""
        return self._get("/whoami")

    def add_token(self, name: str, roles: list[str]):
        return self._post("/tokens", {"name": name, "roles": roles})

    def tokens(self):
        return self._get("/tokens")

    def revoke_token(self, name: str):
        return self._post(f"/tokens/{name}/revoke")

    def audit_export(self, since: str | None = None):
        """The audit chain from `since` as JSON lines (text): a header, then one row per line."""
        return self._send("GET", "/audit/export", {"since": since}, timeout=REPORT_TIMEOUT_S, text=True)

    def jobs(self, **filters):
        """A page of jobs: {"items", "total"}; filters: status, request_id, verdict, model, method, q, limit,
        offset, sort, order, since, until."""
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
        return self._send("POST", f"/requests/{request_id}/close", {"check": "full"}, {}, timeout=SCAN_TIMEOUT_S)

    def purge_check(self, request_id: int, forget: list[dict] | None = None, sensitive: list[str] | None = None,
                    strings: list[str] | None = None):
        """Scan the engine's database and data dir for a request's texts (see engine.control.privacy)."""
        return self._post(f"/requests/{request_id}/purge-check",
                          {"forget": forget, "sensitive": sensitive, "strings": strings or []},
                          timeout=SCAN_TIMEOUT_S)

    def batch(self, request_ids: list[int], method: str, hyper: dict | None = None):
        """One job over several open requests on one model: [the jobs queued, the leader first]."""
        return self._post("/batch", {"request_ids": request_ids, "method": method, "hyper": hyper})

    def model_versions(self, name: str):
        """A model's line of versions: {"model", "current", "versions": [...]}."""
        return self._get(f"/models/{name}/versions")

    def rollback(self, name: str, version: int, reason: str):
        return self._post(f"/models/{name}/rollback", {"version": version, "reason": reason},
                          timeout=VERSION_TIMEOUT_S * 4)

    def retire(self, name: str):
        return self._post(f"/models/{name}/retire")

    def purge_regression_data(self, request_id: int):
        return self._post(f"/requests/{request_id}/regression-data/purge")

    def report(self, request_id: int, fmt: str = "html"):
        """The sign-off report of a request: a self-contained HTML page or Markdown, as text."""
        return self._send("GET", f"/requests/{request_id}/report", {"format": fmt}, timeout=REPORT_TIMEOUT_S,
                          text=True)


class EngineClient(EngineCalls):
    """The sync client: on the unix socket, or with `url` and `token` (EXPUNGE_URL, EXPUNGE_TOKEN) on an
    engine's TCP listener as the token's named identity."""

    def __init__(self, paths: Paths | None = None, timeout: float = 30.0, url: str | None = None,
                 token: str | None = None) -> None:
        self.paths = paths or get_paths()
        self.url = url
        if url:
            self._http = httpx.Client(base_url=url, timeout=timeout,
                                      headers={"Authorization": f"Bearer {token}"} if token else None)
        else:
            self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.paths.socket)), base_url=BASE,
                                      timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, method, path, params=None, body=None, timeout=None, text=False):
        try:
            return _check(self._http.request(method, path, **_request_args(params, body, timeout)), text)
        except httpx.TransportError as exc:
            if self.url:
                raise EngineError(f"the engine is not reachable at {self.url}: {exc}") from None
            raise _unreachable(self.paths, exc) from None

    def events(self, after: int | None = None, timeout: float | None = None) -> Iterator[dict]:
        """Server-sent events from the engine, parsed; blocks while nothing happens."""
        from httpx_sse import connect_sse

        params = {"after": after} if after is not None else {}
        with connect_sse(self._http, "GET", "/events", params=params,
                         timeout=httpx.Timeout(timeout or 30.0, read=None)) as source:
            for sse in source.iter_sse():
                if sse.data:
                    yield json.loads(sse.data)


class AsyncEngineClient(EngineCalls):
    """The console's client: the same calls, awaited, so the UI never blocks on the engine."""

    def __init__(self, paths: Paths | None = None, timeout: float = 30.0) -> None:
        self.paths = paths or get_paths()
        self._http = httpx.AsyncClient(transport=unix_transport(str(self.paths.socket)), base_url=BASE,
                                       timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method, path, params=None, body=None, timeout=None, text=False):
        try:
            return _check(await self._http.request(method, path, **_request_args(params, body, timeout)), text)
        except httpx.TransportError as exc:
            raise _unreachable(self.paths, exc) from None

    async def events(self, after: int | None = None) -> AsyncIterator[dict]:
        from httpx_sse import aconnect_sse

        params = {"after": after} if after is not None else {}
        async with aconnect_sse(self._http, "GET", "/events", params=params,
                                timeout=httpx.Timeout(30.0, read=None)) as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    yield json.loads(sse.data)
