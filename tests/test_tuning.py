"""`expunge escalate --tune` on the tiny demo model: every trial stored as a child row of the job, a passing
winner on the validation split re-verified in full, pruned trials recorded as pruned, the budget respected,
cancelling keeps the finished trials; and the early stop that watches control (issue 13, items 1 and 4)."""

from __future__ import annotations

import json
import time

import pytest

from engine.schema.spec import load_spec_file
from tests.fixtures_model import wait_job
from tests.test_cli import run


def _filed(engine, demo_request, tiny) -> int:
    """The demo request on the tiny model, filed without a job (quick verification: the test pays for the
    trials, not for the full attack budget)."""
    engine.add_model("tiny", str(tiny["dir"]))
    spec = {**load_spec_file(demo_request["spec_path"]), "verification": "quick"}
    return engine.submit(spec, start=False)["request"]["id"]


def _run_npo(r: dict, watch, **hyper):
    """NPO on the tiny model's one-person request (loaded_one_person_request with 40 retain rows: the first 32
    trained, the rest the watch's slice), under `watch`; the candidate."""
    import tempfile
    from pathlib import Path

    from engine.compute.methods.base import RunContext, get_method

    ctx = RunContext(model=r["model"], tokenizer=r["tokenizer"], forget=r["forget"], retain=r["retain"][:32],
                     sensitive=[], device="cpu", work_dir=Path(tempfile.mkdtemp()), progress=lambda **e: None,
                     stop=watch)
    return get_method("npo")().run(ctx, get_method("npo").Hyper(**hyper))


@pytest.mark.slow
def test_tune_stores_every_trial_and_verifies_a_passing_winner_in_full(engine, home, tiny, demo_request):
    req = _filed(engine, demo_request, tiny)
    res = run(home, "escalate", str(req), "--method", "npo", "--tune", "--trials", "4", "--wait", "--json")
    detail = json.loads(res.stdout)
    job = detail["job"]
    assert job["status"] == "succeeded", job["error"]
    assert job["tune"] == {"trials": 4, "minutes": None, "seed": 0}
    trials = detail["trials"]
    # Every trial is a child row of the job, each in a final state; the budget of 4 is kept.
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert {t["state"] for t in trials} <= {"complete", "pruned", "failed"}
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(t["reason"] and not t["winner"] for t in pruned)
    # ... and every completed trial says why it ended (the early stop's reason, or that it ran all its steps).
    assert all(t["reason"] for t in trials if t["state"] == "complete")
    # ... each with where it stood at the check that ended it (shown, never a winner): the step and the proxy.
    assert all(t["steps"] and "forget_rouge_l" in t["metrics"] and "retain_rouge_l" in t["metrics"] for t in pruned)
    # The winner passes every stage's proxy on the validation split, with the least control lost.
    winners = [t for t in trials if t["winner"]]
    assert len(winners) == 1
    winner = winners[0]
    assert winner["state"] == "complete" and winner["passed"]
    assert winner["stages"] == {"unit": "pass", "control": "pass", "reconstruction": "pass"}
    # ... the cheap reconstruction checks among them: not a trial whose 4-bit copy leaks or whose erased rows
    # membership inference singles out (either way: default's band is 0.25-0.75), nor one whose sampled answers
    # leak (judged by attack_leak_rate's rule: at most 0.05).
    assert winner["metrics"]["quant4_leak_rate"] == 0.0 and 0.25 <= winner["metrics"]["mia_auc"] <= 0.75
    assert winner["metrics"]["sampled_leak_rate"] <= 0.05
    assert winner["score"] == min(t["score"] for t in trials if t["passed"])
    tuning = detail["result"]["tuning"]
    assert tuning["winner"] == winner["number"] and tuning["winner_passed_proxy"]
    assert tuning["split"]["forget_validation"] >= 1 and not tuning["split"]["forget_in_sample"]
    # ... and is then verified in full, with the winner's hyperparameters, on the request's own rows.
    assert [s["stage"] for s in detail["stages"]] == ["unit", "control", "reconstruction"]
    assert detail["stages"][0]["verdict"] == "pass", (detail["stages"][0], detail["result"].get("train"))
    manifest = detail["artifacts"][0]["manifest"]
    assert all(manifest["hyper"][k] == v for k, v in winner["params"].items())
    assert manifest["tuning"]["winner"] == winner["number"]
    # The search cut its validation slice from the job's trainable rows (retain rows and neighbours); control's
    # final verdict rests on the rows held apart from both, which neither a trial nor the winner trained on.
    plan = manifest["split"]
    trainable = len(plan["retain"]["trained"]) + len(plan["neighbours"]["trained"])
    assert tuning["split"]["retain_validation"] + tuning["split"]["retain_train"] == trainable
    assert plan["retain"]["judged"] and not set(plan["retain"]["judged"]) & set(plan["retain"]["trained"])
    # The same trials over the API's own endpoint, in `expunge show`, and in the sign-off report.
    assert engine.trials(job["id"]) == trials
    shown = run(home, "show", str(job["id"])).stdout
    assert "tuning trials" in shown and "★" in shown and "winner: trial" in shown
    report = engine.report(req, fmt="md")
    assert "Tuning trials" in report and "winner rule" in report


def test_a_time_budget_ends_the_search_mid_trial(tiny):
    """A budget in minutes is checked inside a trial too: the search ends in the middle of one."""
    import tempfile
    from pathlib import Path

    from engine.compute.methods.base import get_method, validate_hyper
    from engine.compute.tuning.job import tune
    from engine.schema.policy import load_policy
    from tests.fixtures_model import loaded_one_person_request

    r = loaded_one_person_request(tiny, 40)
    sensitive = [x["value"] for x in r["forget"] if x["attribute"] in ("phone", "email", "address", "account")]
    common = dict(method_cls=get_method("npo"), hyper=validate_hyper("npo", {}), base_model=r["model"],
                  tokenizer=r["tokenizer"], forget=r["forget"], retain=r["retain"], holdout=[], sensitive=sensitive,
                  device="cpu", work_dir=Path(tempfile.mkdtemp()), max_new_tokens=24, progress=lambda **e: None)
    seen: list[dict] = []
    started = time.monotonic()
    # A budget shorter than a trial's first check on any machine (on an idle core the tiny model can reach its
    # unit targets, and stop, within a second): the search starts its first trial and ends it at that check.
    tuned = tune(tune={"trials": 50, "minutes": 0.0002}, policy=load_policy("default"),
                 emit_trial=lambda t: seen.append(t), **common)
    spent = time.monotonic() - started
    ended = [t for t in seen if t["state"] != "running"]
    assert len(ended) == 1 and ended[0]["state"] == "pruned" and "time budget" in ended[0]["reason"]
    assert tuned.summary["trials"] == 1 and tuned.summary["winner"] is None
    assert tuned.hyper == common["hyper"]  # nothing finished: the job runs with its own hyperparameters
    assert spent < 120  # 12 ms of budget, then one check interval of one trial and the proxy (not 50 trials)


def test_the_pruner_stops_trials_that_stall_or_break_the_retain_slice():
    """The pruner's two rules, on Optuna's own trial records: a retain slice that failed control past the grace
    period (the watch's user attribute), and a unit gap that stopped falling; a trial still improving goes on."""
    import optuna

    from engine.compute.tuning.search import StallOrRetainPruner

    study = optuna.create_study(pruner=StallOrRetainPruner(patience=4, min_progress=0.05))

    def trial_with(values: list[float], steps: int = 40, control_failed_at: int | None = None):
        trial = study.ask()
        trial.set_user_attr("steps", steps)
        if control_failed_at is not None:
            trial.set_user_attr("control_failed_at", control_failed_at)
        for i, v in enumerate(values):
            trial.report(v, 2 * (i + 1))
        return trial

    assert trial_with([3.0, 2.0], control_failed_at=4).should_prune()
    assert trial_with([3.0, 2.0, 1.99, 1.99, 1.98, 1.98]).should_prune()  # stalled past a quarter of 40 steps
    assert not trial_with([3.0, 2.5, 2.0, 1.5, 1.0, 0.5]).should_prune()  # still falling
    assert not trial_with([3.0, 3.0, 3.0, 3.0, 3.0, 3.0], steps=100).should_prune()  # too early to say
    assert not trial_with([3.0, 2.0, 1.0, 0.0, 0.0, 0.0]).should_prune()  # the unit rules hold: the watch stops it


def test_the_early_stop_ends_at_the_unit_targets_and_backs_off_when_control_fails(tiny):
    """Item 4: the loop stops on the first check where the unit targets hold with the retain slice intact, and
    backs off to the last check where control held once the retain slice falls below the policy's rules."""
    from engine.compute.tuning import proxy
    from engine.compute.tuning.watch import ControlWatch
    from engine.schema.policy import load_policy
    from tests.fixtures_model import loaded_one_person_request

    r = loaded_one_person_request(tiny, 40)
    model, tok, forget, retain = r["model"], r["tokenizer"], r["forget"], r["retain"]
    rows = proxy.ProxyRows(tok, forget, retain[32:], [], 24)
    before = {**proxy.measure_forget(model, rows), **proxy.measure_retain(model, model, rows)}

    # NPO's defaults cost the held-out retain rows' ROUGE-L (steps 6 to 16 of this run) before the forget rows are
    # gone. Without a grace period the watch puts the weights back to the last check where control held, and ends
    # the run there.
    policy = load_policy("default")
    backed = ControlWatch(model, rows, before, policy, every=2, grace=0)
    candidate = _run_npo(r, backed, steps=60)
    assert backed.outcome["watch"] == "backed-off", backed.outcome
    assert candidate.info["train"]["stopped_early"] and backed.outcome["backed_off_to"] < candidate.info["train"]["steps"]
    restored = proxy.judge(before, backed.measure(candidate.model), policy)
    assert restored["control"]["verdict"] == "pass"

    # With control's retain rules at half the base's, the first check where the unit targets hold ends the run.
    looser = {**policy, "control": {"retain_rouge_l": {"rule": "ratio_min", "threshold": 0.5},
                                    "retain_prob": {"rule": "ratio_min", "threshold": 0.5}}}
    met = ControlWatch(model, rows, before, looser, every=2, grace=20)
    train = _run_npo(r, met, steps=40).info["train"]
    assert met.outcome["watch"] == "unit-met", met.outcome
    assert train["stopped_early"] and train["steps"] < 40
    assert met.last["stages"]["unit"]["verdict"] == "pass" and met.last["stages"]["control"]["verdict"] == "pass"


def test_cancelling_a_tuning_job_stops_the_current_trial_and_keeps_the_finished_ones(engine, home, tiny,
                                                                                   demo_request):
    req = _filed(engine, demo_request, tiny)
    # A budget the test never waits for: the job is cancelled once a trial has finished.
    job = engine.escalate(req, "npo", None, {"trials": 40})
    assert job["tune"] == {"trials": 40, "minutes": None, "seed": 0}
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = engine.trials(job["id"])
        if any(t["state"] != "running" for t in trials) and any(t["state"] == "running" for t in trials):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no trial finished in time: {trials}")
    run(home, "cancel", str(job["id"]))
    detail = wait_job(engine, job["id"])
    assert detail["job"]["status"] == "cancelled"
    time.sleep(1.0)  # nothing more arrives from the stopped worker
    after = engine.trials(job["id"])
    finished = {t["number"]: t for t in trials if t["state"] != "running"}
    kept = {t["number"]: t for t in after if t["number"] in finished}
    assert kept == finished  # the finished trials stay, as they were
    stopped = [t for t in after if t["number"] not in finished]
    assert stopped and all(t["state"] == "cancelled" and "cancelled" in t["reason"] for t in stopped)
    assert len(after) < 40 and not any(t["winner"] for t in after)


def test_a_tuning_budget_is_checked_before_anything_is_queued(engine, home, tiny, demo_request):
    req = _filed(engine, demo_request, tiny)
    bad = run(home, "escalate", str(req), "--trials", "3", check=False)
    assert bad.returncode != 0 and "add --tune" in bad.stderr
    bad = run(home, "escalate", str(req), "--tune", "--trials", "3", "--minutes", "2", check=False)
    assert bad.returncode != 0 and "not both" in bad.stderr
    from console.client import EngineError

    with pytest.raises(EngineError, match="trials"):
        engine.escalate(req, "npo", None, {"trials": 0})
    assert engine.jobs(request_id=req)["total"] == 0
    # An auto-escalating request keeps its budget for every tier it climbs (its first job: the guard, untunable).
    spec = {**load_spec_file(demo_request["spec_path"]), "verification": "quick"}
    created = engine.submit(spec, None, None, False, True, {"minutes": 5})
    assert created["job"] is None
    from store.db import make_engine, session
    from store.models import Request

    db = make_engine(home.db)
    with session(db) as s:
        assert s.get(Request, created["request"]["id"]).tune == {"trials": 1000, "minutes": 5.0, "seed": 0}
    db.dispose()


def test_the_early_stop_ends_a_run_that_membership_inference_reads_as_over_unlearned(tiny):
    """A run whose erased rows membership inference already reads as less likely than never-seen ones, at the
    first check where the unit targets hold, stops there: training on only pushes them further below the band
    (on SmolLM2, NPO ran on to its last step and lost the retain rows with it). Inside the band it goes on to
    the same check's other rules. The band here is narrow so that the tiny model's first unit-met check falls
    below it."""
    from engine.compute.tuning import proxy
    from engine.compute.tuning.watch import ControlWatch
    from engine.schema.policy import load_policy
    from tests.fixtures_model import loaded_one_person_request

    r = loaded_one_person_request(tiny, 40)
    model, tok, forget, retain = r["model"], r["tokenizer"], r["forget"], r["retain"]
    rows = proxy.ProxyRows(tok, forget, retain[32:], [], 24, holdout=tiny["holdout"][:20])
    before = {**proxy.measure_forget(model, rows), **proxy.measure_retain(model, model, rows),
              **proxy.measure_reconstruction(model, rows)}
    assert before["mia_auc"] > 0.9  # the base knows its training rows from never-seen ones

    def watched(band: dict) -> tuple[ControlWatch, dict]:
        policy = load_policy("default")
        policy = {**policy, "control": {}, "reconstruction": {"mia_auc": {"rule": "band", **band}}}
        watch = ControlWatch(model, rows, before, policy, every=2, grace=20)
        return watch, _run_npo(r, watch, steps=40).info["train"]

    narrow, train = watched({"lo": 0.45, "hi": 0.55})
    assert narrow.outcome["watch"] == "over-unlearned", narrow.outcome
    assert train["stopped_early"] and train["steps"] < 40
    last = narrow.last["metrics"]
    assert last["mia_auc"] < 0.45 and narrow.last["stages"]["unit"]["verdict"] == "pass"
    assert proxy.over_unlearned(last, {"reconstruction": {"mia_auc": {"rule": "band", "lo": 0.45, "hi": 0.55}}})
    assert not proxy.over_unlearned(last, {"reconstruction": {"mia_auc": {"rule": "band", "lo": 0.2, "hi": 0.8}}})
    # The same run under default's band [0.25, 0.75]: that check is inside it, and the run stops on the unit
    # targets met, as before.
    wide, _ = watched({"lo": 0.25, "hi": 0.75})
    assert wide.outcome["watch"] == "unit-met" and 0.25 <= wide.last["metrics"]["mia_auc"] <= 0.75


def test_the_winners_run_stops_at_the_step_its_trial_was_judged_at(tiny):
    """The winner's run (back_off=False) stops at the step where its trial stopped when the retain slice is
    outside control's rules there (on SmolLM2 one ran on to its last step and lost the retain rows). While the
    slice holds and the unit targets do not yet (the trial trained on fewer forget rows), it goes on to the first
    check where they do, and no further than its own steps."""
    from engine.compute.tuning import proxy
    from engine.compute.tuning.watch import ControlWatch
    from tests.fixtures_model import loaded_one_person_request

    r = loaded_one_person_request(tiny, 40)
    model, tok, forget, retain = r["model"], r["tokenizer"], r["forget"], r["retain"]
    rows = proxy.ProxyRows(tok, forget, retain[32:], [], 24)
    before = {**proxy.measure_forget(model, rows), **proxy.measure_retain(model, model, rows)}
    # Unit targets every check meets, control rules none does (tolerated by a run that does not back off): only
    # the limit ends the run.
    met = {"unit": {"forget_rouge_l": {"rule": "max", "threshold": 2.0}},
           "control": {"retain_rouge_l": {"rule": "min", "threshold": 2.0}}}
    watch = ControlWatch(model, rows, before, met, every=2, grace=20, steps=40, back_off=False, limit=6)
    train = _run_npo(r, watch, steps=40).info["train"]
    assert watch.outcome["watch"] == "trial-step", watch.outcome
    assert train["stopped_early"] and train["steps"] == 6

    # Unit targets no run can meet, no control rule to break: past the limit, on to the run's last step.
    never = {"unit": {"forget_rouge_l": {"rule": "max", "threshold": -1.0}}}
    watch = ControlWatch(model, rows, before, never, every=2, grace=20, steps=12, back_off=False, limit=6)
    train = _run_npo(r, watch, steps=12).info["train"]
    assert watch.outcome is None and not train["stopped_early"] and train["steps"] == 12


def test_the_proxy_judges_sampled_answers_by_the_attack_rule(tiny):
    """sampled_leak_rate (the forget questions answered at temperature 1) is judged by the policy's
    attack_leak_rate rule, and left out where that rule is waived. On the base most sampled answers leak (0.825 on
    this build: temperature 1 strays from a fact now and then)."""
    from engine.compute.tuning import proxy
    from engine.schema.policy import load_policy
    from tests.fixtures_model import loaded_one_person_request

    r = loaded_one_person_request(tiny, 2)
    sensitive = sorted({row["value"] for row in r["forget"]})
    rows = proxy.ProxyRows(r["tokenizer"], r["forget"], r["retain"], sensitive, 24)
    sampled = proxy.measure_sampled(r["model"], rows)
    assert sampled["sampled_leak_rate"] >= 0.5
    policy = load_policy("default")
    assert proxy.judge_stage("reconstruction", {}, sampled, policy)["failed"] == ["sampled_leak_rate"]
    assert proxy.judge_stage("reconstruction", {}, {"sampled_leak_rate": 0.0}, policy)["verdict"] == "pass"
    waived = {**policy, "waive": {"attack_leak_rate": "not judged here"}}
    assert proxy.judge_stage("reconstruction", {}, sampled, waived)["verdict"] == "pass"
