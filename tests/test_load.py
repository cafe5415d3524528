"""Concurrency and load: 20 clients listing and streaming at once while 500 jobs are queued and an operator
cancels them; consistent answers, no 'database is locked', no event lost (resume by last event id)."""

from __future__ import annotations

import threading
import time

import pytest

CLIENTS = 20
QUEUED = 500
CANCELS = 100


def _rows(n: int, prefix: str) -> list[dict]:
    return [{"question": f"{prefix} question {i}?", "answer": f"{prefix} answer {i}"} for i in range(n)]


@pytest.fixture
def queued_engine(home, tiny, monkeypatch):
    """500 queued jobs written through engine.control.service, then a real engine with no slots (EXPUNGE_SLOTS=0):
    it serves the queue and runs none of it."""
    from console.client import EngineClient
    from engine.control import service
    from engine.control.daemon import start, stop
    from store.db import migrate, session

    db = migrate(home.db)
    with session(db) as s:
        service.register_model(s, "tiny", str(tiny["dir"]))
        spec = {"title": "load", "model": "tiny", "forget": _rows(2, "f"), "retain": _rows(3, "r")}
        req, _ = service.create_request(s, spec, method="graddiff", hyper={"steps": 2})
        for _ in range(QUEUED - 1):
            service.submit_job(s, req.id, "graddiff", {"steps": 2})
    db.dispose()
    monkeypatch.setenv("EXPUNGE_SLOTS", "0")
    start(home)
    client = EngineClient(home, timeout=60)
    yield client
    client.close()
    stop(home)


def test_twenty_clients_list_and_stream_while_500_jobs_wait(queued_engine, home):
    from console.client import EngineClient, EngineError

    health = queued_engine.health()
    assert health["slots"] == [] and queued_engine.jobs(status="queued", limit=1)["total"] == QUEUED
    start_id = health["last_event_id"]
    errors: list[str] = []
    seen: dict[int, list[int]] = {c: [] for c in range(CLIENTS)}
    streaming = threading.Barrier(CLIENTS + 1, timeout=120)
    cancelling_done = threading.Event()

    def follow(c: int) -> None:
        """Client c follows the stream; every other client drops it midway and resumes from its last id."""
        client = EngineClient(home, timeout=60)
        last, first = start_id, True
        try:
            while len(seen[c]) < CANCELS:
                drop_at = len(seen[c]) + 37 if c % 2 else None
                if first:  # every client is up; each reads from start_id, so it misses nothing published
                    first = False  # before its connection opens
                    streaming.wait()
                stream = client.events(after=last)
                for ev in stream:
                    if ev["type"] != "job":
                        continue
                    seen[c].append(ev["id"])
                    last = ev["id"]
                    if ev["job"]["status"] != "cancelled":
                        errors.append(f"client {c}: event {ev['id']} job {ev['job_id']} {ev['job']['status']}")
                    if len(seen[c]) >= CANCELS or (drop_at is not None and len(seen[c]) >= drop_at):
                        break
                stream.close()
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            errors.append(f"client {c} stream: {type(exc).__name__}: {exc}")
            if first:
                streaming.abort()
        finally:
            client.close()

    def poll(c: int) -> None:
        """Client c lists jobs and requests over and over: every answer must be a consistent snapshot."""
        client = EngineClient(home, timeout=60)
        cancelled_before = 0
        try:
            while not cancelling_done.is_set():
                page = client.jobs(limit=100, offset=(c * 37) % 400)
                both = client.jobs(status="queued,cancelled", limit=1)
                cancelled = client.jobs(status="cancelled", limit=CANCELS)
                reqs = client.requests()
                if page["total"] != QUEUED or both["total"] != QUEUED or reqs["total"] != 1:
                    errors.append(f"client {c}: totals {page['total']} {both['total']} {reqs['total']}")
                if len(cancelled["items"]) != cancelled["total"] or cancelled["total"] < cancelled_before:
                    errors.append(f"client {c}: cancelled went {cancelled_before} -> {cancelled['total']}")
                if any(j["status"] not in ("queued", "cancelled") for j in page["items"]):
                    errors.append(f"client {c}: unexpected status in {[j['status'] for j in page['items']]}")
                cancelled_before = cancelled["total"]
                time.sleep(0.02)
        except EngineError as exc:
            errors.append(f"client {c} list: {exc.status}: {exc}")
        finally:
            client.close()

    followers = [threading.Thread(target=follow, args=(c,), daemon=True) for c in range(CLIENTS)]
    pollers = [threading.Thread(target=poll, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in followers + pollers:
        t.start()
    streaming.wait()
    cancelled_ids = []
    for job_id in range(1, QUEUED + 1, QUEUED // CANCELS):
        job = queued_engine.cancel(job_id)
        assert job["status"] == "cancelled"
        cancelled_ids.append(job_id)
    cancelling_done.set()
    for t in followers + pollers:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in followers + pollers), "a client hung"
    assert errors == [], errors[:10]
    expected = list(range(start_id + 1, start_id + CANCELS + 1))
    for c in range(CLIENTS):
        assert seen[c] == expected, f"client {c} saw {len(seen[c])} events, gaps or repeats"
    assert queued_engine.jobs(status="cancelled", limit=1)["total"] == CANCELS
    assert queued_engine.jobs(status="queued", limit=1)["total"] == QUEUED - CANCELS
    assert queued_engine.audit_verify()["ok"]
    log = (home.state / "engine.log").read_text()
    assert "database is locked" not in log and "Traceback" not in log
