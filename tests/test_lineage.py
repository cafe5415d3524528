"""Model versions (issue 14) through the real engine on the tiny model: requests accepted in turn make a line
v0 → v1 → v2 whose every version is checked against every erasure it carries; a job that brings an earlier
request back is refused naming it; a rollback rebuilds the later versions; the line survives a restart."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_model import wait_job

EXPUNGE = str(Path(sys.executable).parent / "expunge")
SENSITIVE_KINDS = ("phone", "email", "account", "address")


def cli(home, *args, check=True):
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    res = subprocess.run([EXPUNGE, *args], capture_output=True, text=True, env=env, timeout=900)
    if check and res.returncode != 0:
        raise AssertionError(f"expunge {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


# A and B weigh GradDiff's retain term 1x (its default is 5x), and B stops deeper (forget answers at 0.25 of
# before, not 0.45): the rollback at the end re-applies B's adapter, trained on v1, to v0, and that only
# approximates B's change. With A at 5x (B at 5x, at 1x, or stopped at 0.25), or with B at 1x stopped at 0.45 once
# B's job also kept v1's answers to A's prompts, v0 with B's adapter still said one of B's account numbers and the
# rollback rightly refused the rebuild (README: a failed rebuild is named); this line tests the rebuild that holds.
LINE_HYPER = {"alpha": 1.0}
B_HYPER = {**LINE_HYPER, "stop_forget_rouge": 0.25}


def person_spec(tiny, index: int, reference: str, retain_people: list[int] | None = None) -> dict:
    """A quick-verification request forgetting the index-th trained person; retain: everyone but the first three
    (the requests' subjects: an open request's retain rows would hold a closed one's texts), or (for the bad
    job) exactly the rows of `retain_people`."""
    people = list(dict.fromkeys(r["person"] for r in tiny["train"]))
    person = people[index]
    forget = [r for r in tiny["train"] if r["person"] == person]
    if retain_people is None:
        retain = [r for r in tiny["train"] if r["person"] not in people[:3]]
    else:
        keep = {people[i] for i in retain_people}
        # Four copies: the engine also keeps its base's own answers to these questions (the built neighbours),
        # which on a version that forgot these people are not the gold ones; the copies outweigh them.
        retain = [r for r in tiny["train"] if r["person"] in keep] * 4
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in SENSITIVE_KINDS})
    return {"title": f"Erasure request for {person}", "reference": reference, "intention": "remove",
            "model": "tiny", "forget": forget, "retain": retain, "holdout": tiny["holdout"][:10],
            "sensitive": sensitive, "policy": "default", "verification": "quick"}


async def console_shows_the_line(home, request_id: int, carried: list[int]) -> None:
    """From the console alone: the request says where it landed and what of the line its job kept; its model
    screen says which version to deploy, what it carries and that none of it leaks; enter on a version opens the
    request that made it."""
    from console.app import ExpungeApp
    from console.widgets.lineage import ControlChart
    from console.widgets.table import KeyedTable
    from screens.model import ModelScreen
    from tests.console_store import settle

    app = ExpungeApp(paths=home, start_engine=False, open_request=request_id)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        head = str(app.screen.query_one("#request-head").render())
        assert f"landed in tiny@v{len(carried)}" in head and "started from tiny@v1" in head, head
        assert "kept its answers to 5 forget prompts of 1 earlier request)" in head, head
        await pilot.press("m")
        await settle(pilot)
        assert isinstance(app.screen, ModelScreen)
        head = str(app.screen.query_one("#model-head").render())
        assert f"current version v{len(carried)}" in head and "none leaks" in head, head
        assert ", ".join(f"request {r}" for r in carried) in head
        assert list(app.screen.query_one("#versions", KeyedTable)._order) == ["2", "1", "0"]
        from rich.console import Console

        shown = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        shown.print(app.screen.query_one(ControlChart).content)
        chart = shown.export_text()
        assert "general ppl ×v0" in chart and "v2*" in chart, chart
        await pilot.press("enter")
        await settle(pilot)
        assert getattr(app.screen, "request_id", None) == carried[-1]


async def console_batch(home, ids: list[int]) -> list[int]:
    """On the dashboard: mark both requests (space), b, confirm; the jobs the engine queued."""
    from console.app import ExpungeApp
    from console.client import EngineClient
    from console.widgets.table import KeyedTable
    from tests.console_store import settle

    app = ExpungeApp(paths=home, start_engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#requests", KeyedTable)
        for row in range(2):
            table.move_cursor(row=row)
            await pilot.press("space")
        await pilot.press("b")
        await pilot.pause(0.3)
        await pilot.press("y")
        await pilot.pause(1.0)
        assert app.screen.marked == []
    with EngineClient(home) as client:
        queued = client.jobs(sort="id", order="asc")["items"]
    assert sorted(j["request_id"] for j in queued) == sorted(ids)
    return [j["id"] for j in queued]


def finished(engine, job_id: int) -> dict:
    detail = wait_job(engine, job_id)
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    return detail


@pytest.mark.slow
def test_requests_accepted_in_turn_make_a_line_that_forgets_them_all(engine, home, tiny):
    engine.add_model("tiny", str(tiny["dir"]))
    # A: lands in v1.
    a = engine.submit(person_spec(tiny, 0, "DSR-A"), method="graddiff", hyper=LINE_HYPER)
    a_id = a["request"]["id"]
    assert a["request"]["base_version"] == 0
    finished(engine, a["job"]["id"])
    accepted = engine.accept(a_id, a["job"]["id"])
    assert accepted["landed_version"] == 1

    # B starts from v1 (its job's manifest says so), keeping v1's answers to A's forget prompts (none leaks), and
    # lands in v2, which is checked against A and B.
    b = engine.submit(person_spec(tiny, 1, "DSR-B"), method="graddiff", hyper=B_HYPER)
    b_id = b["request"]["id"]
    assert b["request"]["base_version"] == 1
    b_job = finished(engine, b["job"]["id"])
    assert b_job["artifacts"][0]["manifest"]["base_version"] == 1
    kept_line = b_job["artifacts"][0]["manifest"]["line"]
    assert kept_line == {"requests": [a_id], "prompts": 5, "kept": 5, "dropped": 0, "dropped_leaking": 0}
    assert engine.request(b_id)["jobs"][-1]["kept"]["line"] == kept_line
    assert engine.accept(b_id, b["job"]["id"])["landed_version"] == 2
    line = engine.model_versions("tiny")
    assert line["current"] == 2
    v1, v2 = line["versions"][1], line["versions"][2]
    assert v1["request_ids"] == [a_id] and v2["request_ids"] == [a_id, b_id]
    assert v2["parent"] == 1 and v2["manifest"]["job_started_from"] == 1 and v2["verdict"] == "pass"
    regression = v2["regression"]["requests"]
    assert set(regression) == {str(a_id), str(b_id)}
    assert all(r["passed"] and r["n"] == 5 for r in regression.values()), regression
    assert regression[str(a_id)]["leak_rate"] <= 0.05
    assert v2["control"]["v0"]["general_ppl"] > 0 and "general_ppl" in v2["regression"]["cumulative"]
    # The version is a real HF directory whose weights hash is the one recorded (and not v1's or v0's).
    from engine.model_files import weight_files, weights_sha256

    assert weights_sha256(weight_files(Path(v2["path"]))) == v2["sha256"] != v1["sha256"]
    assert (Path(v2["path"]) / "config.json").is_file()
    import asyncio

    asyncio.run(console_shows_the_line(home, b_id, [a_id, b_id]))
    # The sign-off report states the version and the regression results at that accept.
    report = engine.report(b_id, "md")
    assert "landed in **tiny@v2**" in report and "started from `tiny@v1`" in report, report[-3000:]
    assert f"| {a_id} | DSR-A | 0/5 |" in report and "encrypted (Fernet)" in report
    assert f"own answers to 5 of the 5 forget prompts of the requests that version carries ({a_id})" in report

    # A closes: its texts are purged, but its forget prompts and key spans stay sealed for later checks.
    closed = cli(home, "purge", str(a_id), "--json")
    assert json.loads(closed.stdout)["check"]["clean"]
    key = home.config / "lineage.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # A job that brings A back: fine-tune v2 on A's rows (GradDiff with no forget term and A as retain set).
    bad = engine.submit(person_spec(tiny, 2, "DSR-C", retain_people=[0]), method="graddiff",
                        hyper={"gamma": 0.0, "alpha": 1.0, "lr": 3e-3, "steps": 40, "stop_forget_rouge": None})
    c_id = bad["request"]["id"]
    finished(engine, bad["job"]["id"])
    from console.client import EngineError

    with pytest.raises(EngineError) as refused:
        engine.accept(c_id, bad["job"]["id"])
    assert f"request {a_id} (DSR-A) leaks again" in str(refused.value)
    assert engine.model_versions("tiny")["current"] == 2
    assert engine.request(c_id)["request"]["accepted_job_id"] is None

    # The line survives an engine restart, and the audit chain holds.
    from engine.control.daemon import start, stop

    stop(home)
    start(home)
    shown = cli(home, "models", "show", "tiny")
    assert "current v2" in shown.stdout and f"{a_id}, {b_id}" in shown.stdout
    assert cli(home, "audit", "verify").returncode == 0

    # Export the version to deploy: plain transformers loads it.
    out = home.data / "deploy-v2"
    cli(home, "export", "tiny@v2", "--out", str(out))
    assert weights_sha256(weight_files(out)) == v2["sha256"]
    assert "requests [" in (out / "README.txt").read_text()

    # Rollback of v1: v2 is rebuilt on v0 (carrying B only) and checked again; A is no longer landed.
    rolled = json.loads(cli(home, "models", "rollback", "tiny", "v1", "--reason", "test rollback", "--json").stdout)
    assert rolled["withdrawn"] == [1, 2] and rolled["rebuilt"] == {"2": 3} and rolled["current"] == 3
    line = engine.model_versions("tiny")
    v3 = line["versions"][3]
    assert v3["parent"] == 0 and v3["request_ids"] == [b_id] and v3["manifest"]["rebuilt_from"] == 2
    assert v3["regression"]["requests"][str(b_id)]["passed"]
    assert engine.request(a_id)["request"]["landed_version"] is None
    assert engine.request(b_id)["request"]["landed_version"] == 3
    assert engine.audit_verify()["ok"]


def test_regression_data_is_sealed_under_a_private_key_outside_the_database(home):
    from engine.control import sealed

    token = sealed.seal({"prompts": [{"question": "What is Alma Rivera's phone number?"}], "spans": ["415-555-0142"]})
    key = home.config / "lineage.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "415-555-0142" not in token and "Alma" not in token
    assert sealed.unseal(token)["spans"] == ["415-555-0142"]
    os.chmod(key, 0o644)
    with pytest.raises(sealed.SealError, match="readable by others"):
        sealed.unseal(token)
    key.unlink()
    with pytest.raises(sealed.SealError, match="no key"):
        sealed.unseal(token)
    sealed.seal({"x": 1})  # a new key: the old token no longer opens
    with pytest.raises(sealed.SealError, match="does not open"):
        sealed.unseal(token)


def test_the_judgement_names_the_request_that_leaks_again_and_the_metric_that_drifts():
    from engine.control.lineage import judge

    carried = [{"request_id": 1, "reference": "DSR-A", "limit": 0.05, "landed": 0.0, "incoming": False},
               {"request_id": 2, "reference": "DSR-B", "limit": 0.05, "landed": 0.2, "incoming": True}]
    measured = {"1": {"leaked": 3, "n": 5, "leak_rate": 0.6}, "2": {"leaked": 1, "n": 5, "leak_rate": 0.2}}
    v0 = {"retain_rouge_l": 0.9, "general_ppl": 10.0}
    out = judge(carried, measured, {"retain_rouge_l": 0.5, "general_ppl": 11.0}, v0, {"name": "default"})
    assert out["verdict"] == "fail"
    assert out["failures"][0].startswith("request 1 (DSR-A) leaks again: 3/5")
    assert not out["requests"]["1"]["passed"] and out["requests"]["2"]["passed"]  # B is within its own job's 0.2
    assert any(f.startswith("cumulative retain_rouge_l 0.500 against v0's 0.900") for f in out["failures"])
    ok = judge(carried, {"1": {"leaked": 0, "n": 5, "leak_rate": 0.0}, "2": measured["2"]}, v0, v0,
               {"name": "p", "cumulative": {"general_ppl": {"rule": "ratio_max", "threshold": 1.1}}})
    assert ok["verdict"] == "pass" and list(ok["cumulative"]) == ["general_ppl"]


def test_version_commands_refuse_bad_input_before_any_compute(engine, home, tiny):
    engine.add_model("tiny", str(tiny["dir"]))
    shown = json.loads(cli(home, "models", "show", "tiny", "--json").stdout)
    assert shown["current"] == 0 and [v["number"] for v in shown["versions"]] == [0]
    for args, message in ((("export", "tiny@vx", "--out", str(home.data / "x")), "written MODEL@vN"),
                          (("export", "tiny@v3", "--out", str(home.data / "x")), "no version v3"),
                          (("models", "rollback", "tiny", "v0", "--reason", "r"), "version: Input should be"),
                          (("models", "rollback", "tiny", "v1", "--reason", "r"), "no version v1"),
                          (("models", "show", "nope"), "unknown model 'nope'")):
        res = cli(home, *args, check=False)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    spec = person_spec(tiny, 0, "DSR-PIN")
    from console.client import EngineError

    with pytest.raises(EngineError, match="no version v4"):
        engine.submit({**spec, "version": 4}, start=False)
    with pytest.raises(EngineError, match="no version v2"):
        engine.submit({**spec, "model": "tiny@v2"}, start=False)
    assert not (home.data / "x").exists()
    a = engine.submit(spec, start=False)["request"]["id"]
    b = engine.submit(person_spec(tiny, 1, "DSR-B"), start=False)["request"]["id"]
    for args, message in (((str(a), str(a)), "at least two different requests"),
                          ((str(a), "999"), "request 999 not found")):
        res = cli(home, "batch", *args, check=False)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    engine.close_request(b)
    res = cli(home, "batch", str(a), str(b), check=False)
    assert res.returncode != 0 and f"request {b} is closed" in res.stderr
    assert engine.jobs()["total"] == 0


@pytest.mark.slow
def test_a_batch_runs_once_over_two_requests_with_per_request_verdicts_and_lands_together(engine, home, tiny):
    engine.add_model("tiny", str(tiny["dir"]))
    ids = [engine.submit(person_spec(tiny, i, f"DSR-{i}"), start=False)["request"]["id"] for i in (0, 1)]
    import asyncio

    jobs = asyncio.run(console_batch(home, ids))
    details = [wait_job(engine, j) for j in jobs]
    by_request = {d["job"]["request_id"]: d for d in details}
    assert set(by_request) == set(ids)
    for rid, i in zip(ids, (0, 1), strict=True):
        d = by_request[rid]
        assert d["job"]["status"] == "succeeded", d["job"]["error"]
        assert [s["stage"] for s in d["stages"]] == ["unit", "control", "reconstruction"]
        # Each request is verified on its own forget set: its evidence asks its own questions only.
        own = {r["question"] for r in person_spec(tiny, i, "x")["forget"]}
        direct = [e["prompt"] for e in d["evidence"] if e["attack"] == "direct"]
        assert set(direct) == own, (i, direct)
    # One run: one artifact, trained on the union of both forget sets.
    order = details[0]["result"]["batch"]["jobs"]
    leader, member = (next(d for d in details if d["job"]["id"] == jid) for jid in order)
    assert leader["artifacts"][0]["sha256"] == member["artifacts"][0]["sha256"]
    assert leader["artifacts"][0]["manifest"]["batch"]["forget_rows"] == 10
    assert "timings" in member["result"] and member["job"]["phase"] == "done"
    # Accepting one member lands the batch together: one version carrying both.
    accepted = engine.accept(member["job"]["request_id"], member["job"]["id"])
    assert accepted["landed_version"] == 1
    other = engine.request(leader["job"]["request_id"])["request"]
    assert other["landed_version"] == 1 and other["accepted_job_id"] == leader["job"]["id"]
    v1 = engine.model_versions("tiny")["versions"][1]
    assert sorted(v1["request_ids"]) == sorted(ids) and len(v1["regression"]["requests"]) == 2
    assert all(r["passed"] for r in v1["regression"]["requests"].values()), v1["regression"]
    assert engine.audit_verify()["ok"]
