"""The engine's API over its real unix socket: privacy of the socket, models, bad input rejected whole."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading

import httpx
import pytest

from console.client import EngineError


def test_socket_and_state_dir_are_private_to_the_user(engine, home):
    assert stat.S_IMODE(home.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.state.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.data.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.db.stat().st_mode) == 0o600
    health = engine.health()
    assert health["status"] == "ok" and health["slots"][0]["device"] == "cpu"


def test_second_engine_is_refused_while_one_runs(engine, home):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "engine.control.server"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "EXPUNGE_HOME": str(home.config.parent)})
    assert res.returncode == 3 and "already running" in res.stderr
    assert engine.health()["status"] == "ok"


def test_register_model_rejects_what_it_cannot_load(engine, tmp_path):
    with pytest.raises(EngineError, match="not a model directory"):
        engine.add_model("ghost", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no config.json"):
        engine.add_model("empty", str(tmp_path / "empty"))
    with pytest.raises(EngineError, match="letters, digits"):
        engine.add_model("bad name!", str(tmp_path / "empty"))


def test_register_model(engine, tiny):
    m = engine.add_model("tiny", str(tiny["dir"]))
    assert m["params"] > 100_000 and len(m["weights_sha256"]) == 64
    assert [x["name"] for x in engine.models()] == ["tiny"]


def _count_requests(home) -> int:
    return sqlite3.connect(home.db).execute("select count(*) from request").fetchone()[0]


@pytest.mark.parametrize(("change", "message"), [
    ({"model": "nosuch"}, "unknown model 'nosuch'"),
    ({"policy": "nosuch"}, "unknown policy 'nosuch'"),
    ({"intention": "delete"}, "intention"),
    ({"forget": [{"question": "q?"}]}, "'answer' must be a non-empty string"),
    ({"forget": []}, "forget: no rows"),
    ({"unexpected": 1}, "unexpected"),
])
def test_bad_spec_is_rejected_naming_the_problem_and_nothing_is_written(engine, home, tiny, demo_request, change,
                                                                        message):
    from engine.schema.spec import load_spec_file

    engine.add_model("tiny", str(tiny["dir"]))
    body = {**load_spec_file(demo_request["spec_path"]), **change}
    with pytest.raises(EngineError, match=message) as err:
        engine.submit(body, method="graddiff")
    assert err.value.status == 422
    assert _count_requests(home) == 0
    assert engine.jobs()["total"] == 0


@pytest.mark.parametrize(("method", "hyper", "message"), [
    ("nosuch", None, "unknown method 'nosuch'"),
    ("graddiff", {"steps": -5}, "steps"),
    ("graddiff", {"lr": 1e9}, "lr"),
    ("graddiff", {"no_such_knob": 1}, "no_such_knob"),
])
def test_bad_method_or_hyperparameters_are_rejected_before_queueing(engine, home, tiny, demo_request, method,
                                                                    hyper, message):
    from engine.schema.spec import load_spec_file

    engine.add_model("tiny", str(tiny["dir"]))
    with pytest.raises(EngineError, match=message):
        engine.submit(load_spec_file(demo_request["spec_path"]), method=method, hyper=hyper)
    assert _count_requests(home) == 0


def test_malformed_jsonl_names_the_line(tmp_path):
    from engine.schema.errors import SpecError
    from engine.schema.spec import load_spec_file

    (tmp_path / "forget.jsonl").write_text('{"question": "a?", "answer": "b"}\n{"question": "c?", "answer": \n')
    (tmp_path / "spec.json").write_text(json.dumps({"title": "t", "model": "m", "forget": "forget.jsonl"}))
    with pytest.raises(SpecError, match="forget.jsonl line 2: not valid JSON"):
        load_spec_file(tmp_path / "spec.json")
    (tmp_path / "spec.json").write_text(json.dumps({"title": "t", "model": "m", "forget": "missing.jsonl"}))
    with pytest.raises(SpecError, match="file not found"):
        load_spec_file(tmp_path / "spec.json")


def test_event_stream_reports_a_queued_job(engine, tiny, demo_request):
    from engine.schema.spec import load_spec_file

    engine.add_model("tiny", str(tiny["dir"]))
    start_id = engine.health()["last_event_id"]
    seen: list[dict] = []

    def follow():
        for ev in engine.events(after=start_id):
            seen.append(ev)
            if ev["type"] == "job":
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    res = engine.submit(load_spec_file(demo_request["spec_path"]), method="graddiff", hyper={"steps": 2})
    t.join(timeout=30)
    assert any(ev["type"] == "job" and ev["job_id"] == res["job"]["id"] for ev in seen)
    engine.cancel(res["job"]["id"])


def test_tcp_mode_needs_a_named_bearer_token(home):
    import socket
    import subprocess
    import sys
    import time

    from console.client import EngineClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "engine.control.server", "--tcp", f"127.0.0.1:{port}"],
                            env={**os.environ, "EXPUNGE_HOME": str(home.config.parent)})
    try:
        url = f"http://127.0.0.1:{port}/health"
        for _ in range(200):
            try:
                r = httpx.get(url)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 401
        with EngineClient(home) as owner:  # on the unix socket: the owner makes a token, shown once
            token = owner.add_token("ci-bot", ["viewer"])["token"]
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert not (home.state / "token").exists()  # no shared, nameless token any more
    finally:
        proc.terminate()
        proc.wait(timeout=30)
