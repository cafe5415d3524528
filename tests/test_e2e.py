"""One erasure request end to end through the real engine and worker on the shared tiny model."""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine.schema.spec import load_spec_file
from tests.fixtures_model import wait_job


def metric(detail, stage, name):
    st = next(s for s in detail["stages"] if s["stage"] == stage)
    return next(m for m in st["metrics"] if m["name"] == name)


def test_graddiff_forgets_the_forget_set_and_keeps_the_retain_set(engine, tiny, demo_request):
    engine.add_model("tiny", str(tiny["dir"]))
    res = engine.submit(load_spec_file(demo_request["spec_path"]), method="graddiff")
    detail = wait_job(engine, res["job"]["id"])
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    forget = metric(detail, "unit", "forget_rouge_l")
    retain = metric(detail, "control", "retain_rouge_l")
    assert forget["before"] >= 0.8, "the tiny model should know the forget set before"
    assert forget["after"] <= 0.5 * forget["before"], forget
    assert retain["after"] >= 0.9 * retain["before"], retain
    assert forget["passed"] and retain["passed"]
    # Evidence pairs each forget prompt's output before and after.
    direct = [e for e in detail["evidence"] if e["attack"] == "direct"]
    assert len(direct) == len(demo_request["forget"])
    assert sum(e["leaked_before"] for e in direct) > sum(e["leaked_after"] for e in direct)
    # The artifact is a LoRA adapter with a manifest; the base model's folder is untouched.
    art = detail["artifacts"][0]
    assert art["manifest"]["base_model_sha256"] and art["manifest"]["method"] == "graddiff"
    assert art["manifest"]["artifact_sha256"] == art["sha256"]
    # Control judged out of sample: the split is in the manifest, and no retain row the method trained on is
    # among the retain prompts the control stage judged; the built neighbours are judged too.
    split = art["manifest"]["split"]
    retain_rows = demo_request["retain"]
    trained = {retain_rows[i]["question"] for i in split["retain"]["trained"]}
    judged = {retain_rows[i]["question"] for i in split["retain"]["judged"]}
    assert trained and judged and not trained & judged
    judged_prompts = {e["prompt"] for e in detail["evidence"] if e["attack"] == "retain"}
    assert judged_prompts and judged_prompts <= judged
    assert detail["result"]["neighbours"]["judged"] > 0 and metric(detail, "control", "neighbour_rouge_l")["before"] > 0.9
    # The sign-off report names the retain rows trained on.
    report = engine.report(res["request"]["id"], "md")
    assert "Retain rows trained on:" in report and retain_rows[min(split["retain"]["trained"])]["question"] in report
    # The second job on the same model and data reuses the cached 'before' metrics.
    res2 = engine.submit_job(res["request"]["id"], "graddiff", {"steps": 2})
    detail2 = wait_job(engine, res2["id"])
    assert "before_s" not in detail2["result"]["timings"] and "before_s" in detail["result"]["timings"]
    assert metric(detail2, "unit", "forget_rouge_l")["before"] == forget["before"]


def test_killed_worker_fails_one_job_and_the_engine_goes_on(engine, tiny, demo_request):
    engine.add_model("tiny", str(tiny["dir"]))
    res = engine.submit(load_spec_file(demo_request["spec_path"]), method="graddiff",
                        hyper={"steps": 20000, "checkpoint_every": 10000})
    job_id = res["job"]["id"]
    deadline = time.time() + 300
    while time.time() < deadline:
        job = engine.job(job_id)["job"]
        if job["phase"] == "train" and job["step"] >= 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"job never started training: {job}")
    pid = engine.health()["slots"][0]["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    detail = wait_job(engine, job_id, timeout=60)
    assert detail["job"]["status"] == "failed"
    assert "SIGKILL" in detail["job"]["error"]
    assert engine.health()["status"] == "ok"
    nxt = engine.submit_job(res["request"]["id"], "graddiff", {"steps": 2})
    assert wait_job(engine, nxt["id"])["job"]["status"] == "succeeded"
    assert engine.audit_verify()["ok"]


@pytest.mark.slow
def test_auto_escalation_climbs_the_ladder_and_stops_at_the_first_passing_tier(engine, tiny, demo_request):
    """Intention remove, auto-escalate: the guard (tier 1) holds against the black-box attacks but fails the
    white-box checks, RMU (tier 2) does not pass either, NPO (tier 3's default) passes unit, keeps the held-out
    retain rows (control judges only rows it did not train on) while its neighbours' answers may fall just under
    the policy's line, and passes every reconstruction check but, at most, the two-sided membership band: it may
    drive mia_auc below default's [0.25, 0.75] (the erased rows then look less familiar than never-seen facts).
    The engine files nothing after tier 3."""
    engine.add_model("tiny", str(tiny["dir"]))
    res = engine.submit(load_spec_file(demo_request["spec_path"]), auto_escalate=True)
    request_id, job_id = res["request"]["id"], res["job"]["id"]
    seen = []
    while True:
        detail = wait_job(engine, job_id)
        assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
        seen.append((detail["job"]["tier"], detail["job"]["method"], detail["job"]["verdict"]))
        if detail["job"]["verdict"] == "pass" or detail["job"]["tier"] == 3:
            break
        deadline = time.time() + 30
        while time.time() < deadline:  # the engine queues the next tier itself
            later = [j for j in engine.request(request_id)["jobs"] if j["id"] > job_id]
            if later:
                job_id = later[0]["id"]
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"no next tier after {seen}")
    assert seen[:2] == [(1, "guard", "fail"), (2, "rmu", "fail")] and seen[2][:2] == (3, "npo"), seen
    npo = {s["stage"]: s for s in engine.job(job_id)["stages"]}
    shown = [(m["name"], m["before"], m["after"]) for st in ("unit", "control") for m in npo[st]["metrics"]
             if m["passed"] is False]
    # Judged on rows it did not train on, NPO keeps the held-out retain answers and at most falls short on the
    # neighbours' (under default's 0.9 x before: 1.0 -> 0.88 on one tiny-model build).
    control_failed = {m["name"] for m in npo["control"]["metrics"] if m["passed"] is False}
    assert npo["unit"]["verdict"] == "pass" and control_failed <= {"neighbour_rouge_l"}, shown
    failed = {m["name"]: m for m in npo["reconstruction"]["metrics"] if m["passed"] is False}
    assert set(failed) <= {"mia_auc"}, failed
    if failed:  # over-unlearning is caught, and the note says on which side
        assert failed["mia_auc"]["after"] < 0.25 and "below the band" in failed["mia_auc"]["note"]
    assert seen[2][2] == ("fail" if failed or control_failed else "pass")
    guard_job = engine.request(request_id)["jobs"][0]
    stages = {s["stage"]: s for s in engine.job(guard_job["id"])["stages"]}
    # The guard's weights are the base's: its unit stage fails on the white-box forget_prob alone.
    assert stages["control"]["verdict"] == "pass" and stages["unit"]["verdict"] == "fail"
    assert {m["name"] for m in stages["unit"]["metrics"] if m["passed"] is False} == {"forget_prob"}
    time.sleep(2)
    assert len(engine.request(request_id)["jobs"]) == 3  # nothing after the passing tier
