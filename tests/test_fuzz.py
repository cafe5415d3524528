"""Bad input: the HTTP API fuzzed from its own OpenAPI spec (schemathesis), spec files fuzzed (hypothesis),
size limits, Unicode, empty files, duplicated rows, overlapping forget and retain sets. No 5xx, no crash,
every rejection names its field."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.schema.errors import SpecError

EXAMPLES = 12  # per operation and mode: ~35 operations x modes in well under a minute


def _rows(n: int = 3, prefix: str = "q") -> list[dict]:
    return [{"question": f"{prefix} question {i}?", "answer": f"answer number {i}"} for i in range(n)]


def spec_body(**changes) -> dict:
    return {"title": "Fuzzed request", "model": "tiny", "forget": _rows(2, "forget"), "retain": _rows(3, "retain"),
            **changes}


@pytest.fixture
def api(home, tiny):
    """The engine's app in-process on a private database, with a model, an open request with a queued
    job, and a closed request: ids 1 and 2 exist, so the fuzzer reaches past the 404s."""
    from starlette.testclient import TestClient

    from engine.control import service
    from engine.control.api import create_app
    from engine.control.events import EventBus
    from store.db import migrate, session

    db = migrate(home.db)
    with session(db) as s:
        service.register_model(s, "tiny", str(tiny["dir"]))
        service.create_request(s, spec_body(), method="graddiff", hyper={"steps": 2})
        req, _ = service.create_request(s, spec_body(title="to close"), start=False)
        service.close_request(s, req.id)
    from tests.callers import as_caller

    app = as_caller(create_app(db, EventBus()))  # as the socket's owner, with every role
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client
    db.dispose()


def names_a_field(response) -> bool:
    detail = response.json().get("detail")
    if isinstance(detail, list):
        return bool(detail) and all(d.get("loc") and d.get("msg") for d in detail)
    return isinstance(detail, str) and len(detail) > 3


def test_api_fuzzed_from_its_openapi_spec_never_answers_5xx(api):
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    app, _ = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/events")
    failures, operations = [], []

    def fuzz(op, mode) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def call(case):
            try:
                response = case.call()
            except Exception as exc:  # the app raised: a crash (500 in production)
                failures.append((op.label, mode.value, repr(exc)[:300], case.as_curl_command()))
                return
            if response.status_code >= 500:
                failures.append((op.label, mode.value, response.status_code, response.text[:300],
                                 case.as_curl_command()))
            elif response.status_code == 422 and not names_a_field(response):
                failures.append((op.label, mode.value, "422 without a field", response.text[:300]))

        try:
            call()
        except Unsatisfiable:  # no invalid input exists for an operation without parameters
            pass

    for result in schema.get_all_operations():
        op = result.ok()
        operations.append(op.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(op, mode)
    assert {"POST /requests", "POST /models", "POST /jobs", "GET /jobs", "POST /requests/{request_id}/close",
            "POST /requests/{request_id}/purge-check"} <= set(operations)
    assert failures == []


# ------------------------------------------------------------------ spec files


text = st.text(st.characters(codec="utf-8"), max_size=40)
row = st.one_of(
    st.fixed_dictionaries({"question": text, "answer": text}),
    st.fixed_dictionaries({"text": text}),
    st.dictionaries(st.sampled_from(["question", "answer", "text", "other"]),
                    st.one_of(text, st.integers(), st.none(), st.lists(text, max_size=2)), max_size=3),
    st.one_of(text, st.integers(), st.lists(st.integers(), max_size=2)),
)
jsonl_line = st.one_of(row.map(json.dumps), text, st.just(""), st.just("{"), st.just("\ufeff{}"))
jsonl_file = st.one_of(st.lists(jsonl_line, max_size=5).map("\n".join).map(str.encode),
                       st.binary(max_size=40), st.just(b""), st.just(b"\xff\xfe"))
data_ref = st.one_of(st.just("forget.jsonl"), st.just("missing.jsonl"), st.just("."), st.just("a\x00b"),
                     st.lists(row, max_size=3), text, st.none(), st.integers())
spec_value = st.fixed_dictionaries(
    {"title": text, "model": text},
    optional={"forget": data_ref, "retain": data_ref, "holdout": data_ref, "probes": data_ref,
              "intention": st.one_of(st.sampled_from(["suppress", "remove"]), text),
              "sensitive": st.one_of(st.lists(text, max_size=3), text, st.integers()),
              "policy": text, "reference": st.one_of(text, st.integers()), "unknown": text})
spec_file = st.one_of(
    spec_value.map(lambda v: ("spec.json", json.dumps(v).encode())),
    spec_value.map(lambda v: ("spec.yaml", yaml.safe_dump(v, allow_unicode=True).encode())),
    st.tuples(st.sampled_from(["spec.json", "spec.yaml"]), st.binary(max_size=60)),
    st.tuples(st.sampled_from(["spec.json", "spec.yaml"]), text.map(str.encode)),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=spec_file, forget=jsonl_file)
def test_spec_files_load_or_are_refused_naming_the_problem(tmp_path, spec, forget):
    """Any spec file and data file: loaded, or refused with a SpecError (the CLI prints it; no traceback)."""
    from engine.schema.spec import load_spec_file, parse_spec, resolve_rows

    name, content = spec
    (tmp_path / name).write_bytes(content)
    (tmp_path / "forget.jsonl").write_bytes(forget)
    try:
        body = load_spec_file(tmp_path / name)
    except SpecError as exc:
        assert str(exc)
        return
    try:
        rows = resolve_rows(parse_spec(body), allow_paths=False)
    except SpecError as exc:
        assert str(exc)
        return
    assert rows["forget"]


def test_empty_and_undecodable_data_files_are_refused_naming_the_file(tmp_path):
    from engine.schema.spec import load_spec_file

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"title": "t", "model": "m", "forget": "forget.jsonl"}))
    (tmp_path / "forget.jsonl").write_text("\n\n")
    with pytest.raises(SpecError, match="forget: forget.jsonl has no rows"):
        load_spec_file(spec)
    (tmp_path / "forget.jsonl").write_bytes(b'{"question": "a?", "answer": "b"}\n\xff\xfe\n')
    with pytest.raises(SpecError, match="forget: forget.jsonl line 2: not valid UTF-8"):
        load_spec_file(spec)
    spec.write_bytes(b"title: \xff\n")
    with pytest.raises(SpecError, match="spec.yaml: not valid UTF-8"):
        load_spec_file(spec)


# ------------------------------------------------------------------ limits, Unicode, duplicates, overlap


def post_spec(client, body: dict, **extra):
    return client.post("/requests", json={"spec": body, "start": False, **extra})


def test_size_limits_on_bodies_and_texts(api, monkeypatch):
    import engine.control.api
    import engine.schema.spec

    _, client = api
    monkeypatch.setattr(engine.control.api, "MAX_BODY_BYTES", 2000)
    r = client.post("/requests", content=b" " * 3000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no content-length: counted as it arrives
        for _ in range(30):
            yield b" " * 100

    r = client.post("/requests", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    small = json.dumps({"spec": spec_body(), "start": False}).encode()
    r = client.post("/requests", content=iter([small[:50], small[50:]]), headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text  # a chunked body under the limit goes through whole
    monkeypatch.setattr(engine.control.api, "MAX_BODY_BYTES", 64 * 1024 * 1024)

    cases = [
        (spec_body(forget=[{"question": "q?", "answer": "x" * 20_001}]), "forget: row 1: 'answer' is longer"),
        (spec_body(title="t" * 301), "title"),
        (spec_body(sensitive=["s" * 501]), "sensitive"),
        (spec_body(sensitive=["s"] * 1001), "sensitive"),
        (spec_body(reference="r" * 201), "reference"),
    ]
    for body, message in cases:
        r = post_spec(client, body)
        assert r.status_code == 422 and message in r.json()["detail"], (message, r.text[:200])
    monkeypatch.setattr(engine.schema.spec, "MAX_ROWS", 5)
    r = post_spec(client, spec_body(forget=_rows(6)))
    assert r.status_code == 422 and "forget: more than 5 rows" in r.json()["detail"]


@pytest.mark.parametrize("value", ["Zoë Ångström", "李小龙", "محمد", "🙂 e\u0301", "\x00nul", "\u202eRTL"])
def test_unicode_text_round_trips(api, value):
    _, client = api
    r = post_spec(client, spec_body(title=value, sensitive=[value + " x"],
                                    forget=[{"question": value + "?", "answer": value}]))
    assert r.status_code == 201, r.text
    rid = r.json()["request"]["id"]
    assert client.get(f"/requests/{rid}").json()["request"]["title"] == value


def test_text_that_is_not_unicode_is_refused_naming_its_path(api):
    _, client = api
    raw = json.dumps({"spec": spec_body(), "start": False}).replace('"answer number 1"', '"bad \\ud800"')
    r = client.post("/requests", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "spec.forget.1.answer: not valid Unicode" in r.json()["detail"][0]["msg"]
    raw = '{"name": "m", "source": "/tmp/\\udc00x"}'
    r = client.post("/models", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "source: not valid Unicode" in r.json()["detail"][0]["msg"]


def test_ids_beyond_sqlite_integers_are_refused_naming_the_field(api):
    _, client = api
    big = 2**64
    for method, path, body in [("get", f"/requests/{big}", None), ("get", f"/jobs/{big}", None),
                               ("post", "/jobs", {"request_id": big, "method": "graddiff"}),
                               ("post", "/requests/1/accept", {"job_id": big}),
                               ("get", f"/jobs?offset={big}", None)]:
        r = client.request(method.upper(), path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert any(d["loc"][-1] in ("request_id", "job_id", "offset") for d in r.json()["detail"])


def test_duplicated_rows_and_forget_retain_overlap_are_warned_and_shown(api):
    _, client = api
    shared = {"question": "What is the phone number of Alma Rivera?", "answer": "415-555-0142"}
    body = spec_body(forget=[shared, shared, *_rows(2, "forget")], retain=[shared, *_rows(3, "retain")])
    r = post_spec(client, body)
    assert r.status_code == 201, r.text
    warnings = r.json()["request"]["warnings"]
    overlap = next(w for w in warnings if "also appear in the forget set" in w)
    assert overlap.startswith("1 retain row(s)") and shared["question"] in overlap
    dup = next(w for w in warnings if w.startswith("forget:"))
    assert "1 duplicated row(s)" in dup and shared["question"] in dup
    # Closing keeps the warnings' counts, not the rows they quoted.
    rid = r.json()["request"]["id"]
    closed = client.post(f"/requests/{rid}/close").json()
    assert closed["warnings"] and not any(shared["question"] in w for w in closed["warnings"])

