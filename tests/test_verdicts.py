"""Verdicts an auditor can trust (issue 12): every judged metric measured and able to fail, or its stage is
incomplete; explicit waivers; two-sided band rules; judging on an interval's bound; a sample too small for
its threshold says so; the policy in words; a stage module that cannot import fails the job."""

from __future__ import annotations

import sys

import pytest

from engine.compute.verify.stages import judge, measure_all, overall_verdict
from engine.schema.errors import SpecError
from engine.schema.policy import band_limits, describe_policy, holds, load_policy


def _stage(metrics: dict, stats: dict | None = None, notes: dict | None = None) -> dict:
    return {"metrics": metrics, "evidence": [], "stats": stats or {}, "notes": notes or {}}


def _metric(stages: list[dict], stage: str, name: str) -> dict:
    st = next(s for s in stages if s["stage"] == stage)
    return next(m for m in st["metrics"] if m["name"] == name)


def _verdict(stages: list[dict], stage: str) -> str:
    return next(s for s in stages if s["stage"] == stage)["verdict"]


BEFORE = {"reconstruction": _stage({"attack_leak_rate": 0.4, "relearn_recovery": 1.0, "mia_auc": 0.95,
                                    "logit_lens_presence": 0.2})}


def _after(**metrics) -> dict:
    base = {"attack_leak_rate": 0.0, "relearn_recovery": 0.05, "mia_auc": 0.5, "logit_lens_presence": 0.01}
    return {"reconstruction": _stage({**base, **metrics}, notes={"relearn_recovery": "1 forget row cannot be split"})}


def _policy(waive: dict | None = None, **reconstruction) -> dict:
    rules = {"attack_leak_rate": {"rule": "max", "threshold": 0.05},
             "relearn_recovery": {"rule": "max", "threshold": 0.25},
             "mia_auc": {"rule": "band", "centre": 0.5, "width": 0.25},
             "logit_lens_presence": {"rule": "ratio_max", "threshold": 0.5}, **reconstruction}
    return {"name": "t", "reconstruction": rules, **({"waive": waive} if waive else {})}


def test_a_candidate_within_every_rule_passes():
    stages = judge(BEFORE, _after(), _policy(), "remove")
    assert _verdict(stages, "reconstruction") == "pass"
    assert overall_verdict(stages) == "pass"


def test_an_unmeasured_judged_metric_makes_the_stage_incomplete_with_the_reason_and_the_fix():
    stages = judge(BEFORE, _after(relearn_recovery=None), _policy(), "remove")
    assert _verdict(stages, "reconstruction") == "incomplete"
    assert overall_verdict(stages) == "fail"
    m = _metric(stages, "reconstruction", "relearn_recovery")
    assert m["passed"] is None
    assert "1 forget row cannot be split" in m["note"] and "add rows or a paraphrase set" in m["note"]
    st = stages[0]
    assert st["note"].startswith("relearn_recovery: not measured")
    # A failing metric elsewhere makes the stage fail: a fail says more than an incomplete.
    assert _verdict(judge(BEFORE, _after(relearn_recovery=None, attack_leak_rate=0.5), _policy(), "remove"),
                    "reconstruction") == "fail"
    # For a suppress request the white-box relearning is not judged, so it is not missed either.
    assert _verdict(judge(BEFORE, _after(relearn_recovery=None), _policy(), "suppress"), "reconstruction") == "pass"


def test_a_judged_metric_the_stage_did_not_report_is_not_measured():
    after = _after()
    del after["reconstruction"]["metrics"]["logit_lens_presence"]
    stages = judge(BEFORE, after, _policy(), "remove")
    m = _metric(stages, "reconstruction", "logit_lens_presence")
    assert m["after"] is None and "not measured: the stage gave no value" in m["note"]
    assert _verdict(stages, "reconstruction") == "incomplete"


def test_a_waiver_takes_the_metric_out_and_is_stored_with_it():
    waive = {"relearn_recovery": "single-fact requests: relearning not meaningful"}
    stages = judge(BEFORE, _after(relearn_recovery=None), _policy(waive=waive), "remove")
    assert _verdict(stages, "reconstruction") == "pass"
    m = _metric(stages, "reconstruction", "relearn_recovery")
    assert m["note"].startswith("waived by the policy: single-fact requests") and "not measured" in m["note"]
    # A waived metric that is measured is shown with its verdict, not counted.
    stages = judge(BEFORE, _after(relearn_recovery=0.9), _policy(waive=waive), "remove")
    assert _metric(stages, "reconstruction", "relearn_recovery")["passed"] is False
    assert _verdict(stages, "reconstruction") == "pass"


def test_a_base_without_signal_is_not_evidence():
    # The relearning attack recovers nothing on the base itself: it cannot fail afterwards.
    before = {"reconstruction": _stage({**BEFORE["reconstruction"]["metrics"], "relearn_recovery": 0.0})}
    stages = judge(before, _after(), _policy(), "remove")
    assert _verdict(stages, "reconstruction") == "incomplete"
    m = _metric(stages, "reconstruction", "relearn_recovery")
    assert m["passed"] is None and "no signal on the base" in m["note"]
    # A logit-lens presence near zero on the base: under the floor.
    before = {"reconstruction": _stage({**BEFORE["reconstruction"]["metrics"], "logit_lens_presence": 0.007})}
    stages = judge(before, _after(logit_lens_presence=0.0), _policy(), "remove")
    assert "under the floor" in _metric(stages, "reconstruction", "logit_lens_presence")["note"]
    assert _verdict(stages, "reconstruction") == "incomplete"
    # A membership inference that cannot tell members even on the base (inside the band already).
    before = {"reconstruction": _stage({**BEFORE["reconstruction"]["metrics"], "mia_auc": 0.55})}
    assert _verdict(judge(before, _after(), _policy(), "remove"), "reconstruction") == "incomplete"
    # But a metric that fails after is a fail whatever the base showed.
    before = {"reconstruction": _stage({**BEFORE["reconstruction"]["metrics"], "relearn_recovery": 0.0})}
    assert _verdict(judge(before, _after(relearn_recovery=0.6), _policy(), "remove"), "reconstruction") == "fail"
    # The control stage measures what is kept: its 'before' meeting the rule is the point, not a lack of signal.
    before = {"control": _stage({"retain_kl": 0.0})}
    stages = judge(before, {"control": _stage({"retain_kl": 0.1})},
                   {"control": {"retain_kl": {"rule": "max", "threshold": 1.0}}}, "remove")
    assert _verdict(stages, "control") == "pass"


def test_the_band_fails_on_both_sides_and_says_which():
    over = judge(BEFORE, _after(mia_auc=0.05), _policy(), "remove")
    m = _metric(over, "reconstruction", "mia_auc")
    assert m["passed"] is False and _verdict(over, "reconstruction") == "fail"
    assert "less likely than never-seen facts" in m["note"] and m["note"].startswith("below the band")
    under = _metric(judge(BEFORE, _after(mia_auc=0.9), _policy(), "remove"), "reconstruction", "mia_auc")
    assert under["passed"] is False and under["note"].startswith("above the band")
    assert under["rule"] == "within [0.25, 0.75]" and under["threshold"] == pytest.approx(0.25)
    spec = {"rule": "band", "lo": 0.4, "hi": 0.7}
    assert band_limits(spec) == (0.4, 0.7) and holds(spec, None, 0.7) and not holds(spec, None, 0.39)


def test_judging_on_the_upper_bound_and_a_sample_too_small_for_its_threshold():
    upper = {"attack_leak_rate": {"rule": "max", "threshold": 0.05, "judge_on": "upper"}}
    # 0 leaks in 3: the upper bound 0.56 can never be <= 0.05: incomplete, and it says so.
    after = _after()
    after["reconstruction"]["stats"] = {"attack_leak_rate": {"ci_low": 0.0, "ci_high": 0.5615, "n": 3, "k": 0}}
    stages = judge(BEFORE, after, _policy(**upper), "remove")
    m = _metric(stages, "reconstruction", "attack_leak_rate")
    assert _verdict(stages, "reconstruction") == "incomplete"
    assert "sample too small" in m["note"] and "0.56" in m["note"] and "can never be ≤ 0.05" in m["note"]
    assert (m["ci_low"], m["ci_high"], m["n"]) == (0.0, 0.5615, 3)
    assert m["rule"] == "upper 95% ≤ 0.05"
    # 0 in 200: upper bound 0.019: passes.
    after["reconstruction"]["stats"] = {"attack_leak_rate": {"ci_low": 0.0, "ci_high": 0.0188, "n": 200, "k": 0}}
    assert _verdict(judge(BEFORE, after, _policy(**upper), "remove"), "reconstruction") == "pass"
    # 4 in 200 (2%): the value passes, its upper bound 0.05 does not, and a large sample could have: a fail.
    after["reconstruction"]["metrics"]["attack_leak_rate"] = 0.02
    after["reconstruction"]["stats"] = {"attack_leak_rate": {"ci_low": 0.008, "ci_high": 0.0503, "n": 200, "k": 4}}
    stages = judge(BEFORE, after, _policy(**upper), "remove")
    assert _verdict(stages, "reconstruction") == "fail"
    assert "upper bound" in _metric(stages, "reconstruction", "attack_leak_rate")["note"]


def test_policy_validation(home):
    folder = home.policies
    folder.mkdir(parents=True, exist_ok=True)
    cases = {
        "band_no_limits": '[reconstruction]\nmia_auc = { rule = "band" }\n',
        "band_upside_down": '[reconstruction]\nmia_auc = { rule = "band", lo = 0.7, hi = 0.3 }\n',
        "band_on_bound": '[reconstruction]\nmia_auc = { rule = "band", lo = 0.3, hi = 0.7, judge_on = "upper" }\n',
        "bound_without_interval": '[reconstruction]\nlogit_lens_presence = { rule = "max", threshold = 0.1, '
                                  'judge_on = "upper" }\n',
        "waive_unknown": 'waive = { mia_acu = "typo" }\n[reconstruction]\nmia_auc = { rule = "band", lo = 0.3, '
                         'hi = 0.7 }\n',
        "waive_no_reason": 'waive = { mia_auc = "" }\n[reconstruction]\nmia_auc = { rule = "band", lo = 0.3, '
                           'hi = 0.7 }\n',
    }
    for name, text in cases.items():
        (folder / f"{name}.toml").write_text(text)
        with pytest.raises(SpecError, match=name):
            load_policy(name)
    (folder / "single.toml").write_text(
        'description = "one-row requests"\nwaive = { relearn_recovery = "single-fact requests: relearning not '
        'meaningful" }\n[reconstruction]\nrelearn_recovery = { rule = "max", threshold = 0.25 }\n')
    assert load_policy("single")["waive"]["relearn_recovery"].startswith("single-fact")


def test_every_rule_in_words(home):
    for name in ("default", "strict"):
        policy = load_policy(name)
        lines = describe_policy(policy)
        assert lines[0].startswith(f"{name}: ")
        for stage in ("unit", "control", "reconstruction"):
            for metric in policy[stage]:
                assert any(f"{stage} · {metric} " in line for line in lines), metric
        assert any("within [" in line and "both sides" in line for line in lines)
    strict = describe_policy(load_policy("strict"))
    assert any("leak_rate" in line and "upper end of its 95% interval must be at most 0.05" in line
               for line in strict)
    # The descriptions are true to the thresholds: default no longer says nothing may leak.
    assert "nothing may leak" not in load_policy("default")["description"]
    assert "5%" in load_policy("default")["description"]
    waived = describe_policy({"name": "w", "reconstruction": {"relearn_recovery": {"rule": "max", "threshold": 0.2}},
                              "waive": {"relearn_recovery": "why not"}})
    assert any("WAIVED: why not" in line for line in waived)


def test_a_stage_module_that_cannot_import_fails_the_measurement(monkeypatch):
    """It used to be dropped as 'no such stage'; now the import error propagates (the worker fails the job)."""
    from engine.compute.verify.stages import EvalInput

    monkeypatch.setitem(sys.modules, "engine.compute.verify.unit", None)  # any import of it now raises
    with pytest.raises(ImportError, match="engine.compute.verify.unit"):
        measure_all(EvalInput(model=None, tokenizer=None, forget=[], retain=[], sensitive=[]))


# ------------------------------------------------------------------ on the tiny model


def _over_unlearned(model, tokenizer, forget: list[dict], retain: list[dict], far_enough, max_steps: int = 60,
                    lr: float = 5e-4):
    """A copy of `model` pushed past forgetting: gradient ascent on the forget rows, descent on retain rows
    (GradDiff's objective, far too hard), step by step until `far_enough(copy)` says the forget rows look less
    familiar than never-seen ones. Checked each step rather than run for a fixed count: how many steps that
    takes moves with the tiny model (each CPU's rounding builds a slightly different one)."""
    import copy

    import torch

    from engine.compute.tokens import encode_qa

    clone = copy.deepcopy(model)
    forget_batch = encode_qa(tokenizer, forget, max_length=128)
    retain_batch = encode_qa(tokenizer, retain, max_length=128)
    opt = torch.optim.AdamW(clone.parameters(), lr=lr)
    for _ in range(max_steps):
        clone.requires_grad_(True)
        clone.train()
        (f_ids, f_att, f_lab), (r_ids, r_att, r_lab) = forget_batch, retain_batch
        loss = (-clone(input_ids=f_ids, attention_mask=f_att, labels=f_lab).loss
                + clone(input_ids=r_ids, attention_mask=r_att, labels=r_lab).loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        clone.eval()
        clone.requires_grad_(False)
        if far_enough(clone):
            return clone
    raise AssertionError(f"{max_steps} steps did not over-unlearn the forget rows")


def test_an_over_unlearned_candidate_fails_the_band(tiny):
    """MUSE's point: an AUC near 0 singles the erased rows out as surely as one near 1. The old one-sided rule
    (max 0.75) passed it; the band fails it, and says on which side."""
    import random

    import torch

    from engine.compute.modeling import load_model
    from engine.compute.verify.metrics import auc, auc_interval
    from engine.compute.verify.reconstruction import mia_scores
    from engine.compute.verify.stages import EvalInput

    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    person = tiny["train"][0]["person"]
    forget = [r for r in tiny["train"] if r["person"] == person]
    retain = random.Random(0).sample([r for r in tiny["train"] if r["person"] != person], 30)

    def scores(m):
        return mia_scores(EvalInput(model=m, tokenizer=tokenizer, forget=forget, retain=[], sensitive=[],
                                    holdout=tiny["holdout"]))

    def measured(m) -> dict:
        pos, neg = scores(m)
        low, high = auc_interval(pos, neg)
        return {"reconstruction": _stage({"mia_auc": auc(pos, neg)},
                                         stats={"mia_auc": {"ci_low": low, "ci_high": high, "n": len(pos)}})}

    before = measured(model)
    # Each step asks only for the AUC (its bootstrap interval is computed once, on the copy that is judged).
    after = measured(_over_unlearned(model, tokenizer, forget, retain, lambda m: auc(*scores(m)) <= 0.1))
    assert before["reconstruction"]["metrics"]["mia_auc"] > 0.9
    assert after["reconstruction"]["metrics"]["mia_auc"] <= 0.1
    for name in ("default", "strict"):
        stages = judge(before, after, load_policy(name), "remove")
        m = _metric(stages, "reconstruction", "mia_auc")
        assert m["passed"] is False and _verdict(stages, "reconstruction") == "fail", name
        assert "less likely than never-seen facts: detectable" in m["note"]
        assert m["ci_low"] <= m["after"] <= m["ci_high"] and m["n"] == len(forget)
        # Under the old one-sided rule it would have passed.
        assert holds({"rule": "max", "threshold": 0.75}, None, m["after"])


def test_cli_policies_show_prints_every_rule_in_words(home, monkeypatch):
    from click.testing import CliRunner

    from console import cli
    from console.cli import models as model_commands
    from engine.schema.policy import list_policies

    class Engine:  # the engine's /policies answer, without starting one
        def policies(self):
            return list_policies()

    monkeypatch.setattr(model_commands, "client", lambda *a, **k: Engine())
    res = CliRunner().invoke(cli.cli, ["policies", "--show", "strict"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == describe_policy(load_policy("strict"))
    listing = CliRunner().invoke(cli.cli, ["policies"])
    assert listing.exit_code == 0 and "mia_auc                band within [0.25, 0.75]" in listing.output
    missing = CliRunner().invoke(cli.cli, ["policies", "--show", "nope"])
    assert missing.exit_code != 0 and "no policy 'nope'" in missing.output


def test_a_job_whose_stage_module_cannot_import_fails_with_the_import_error(tiny, tmp_path, monkeypatch):
    """The worker's job runner on the tiny model: the measurement raises the import error, which the worker
    turns into the job's failure message (it used to measure the other stages and pass without this one)."""
    from engine.compute.jobrunner import WarmModel, run_job
    from engine.compute.methods.base import validate_hyper
    from engine.compute.worker import describe_error
    from engine.schema.payload import JobPayload

    person = tiny["train"][0]["person"]
    rows = {"forget": [r for r in tiny["train"] if r["person"] == person],
            "retain": [r for r in tiny["train"] if r["person"] != person][:10], "holdout": tiny["holdout"][:10]}
    payload = {"job_id": 1, "method": "guard", "hyper": validate_hyper("guard", {}), "intention": "remove",
               "policy": load_policy("default"),
               "model": {"name": "tiny", "source": str(tiny["dir"]), "kind": "hf", "weights_sha256": "w",
                         "options": {"dtype": "fp32"}},
               "rows": rows, "sensitive": [], "general_text": [], "baseline_key": "k", "baseline": None,
               "work_dir": str(tmp_path / "work"), "artifact_dir": str(tmp_path / "artifact")}
    monkeypatch.setitem(sys.modules, "engine.compute.verify.unit", None)
    with pytest.raises(ImportError) as caught:
        run_job(JobPayload.model_validate(payload), WarmModel(), lambda message: None)
    message = describe_error(caught.value)
    assert message.startswith("ModuleNotFoundError") and "engine.compute.verify.unit" in message
    assert not (tmp_path / "artifact").exists()  # no candidate was judged without the stage
