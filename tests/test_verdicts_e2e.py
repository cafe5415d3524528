"""Verdicts through the real engine on the tiny model (issue 12): a one-row remove request cannot be judged
on relearning, and says so; its stage is incomplete (not passed) until a policy waives the metric, and the
waiver is stored with the verdict and shown by `expunge show` and in the sign-off report."""

from __future__ import annotations

import io
import json

from engine.schema.spec import load_spec_file
from tests.fixtures_model import wait_job

# A policy that judges what a guard keeps (the retain answers) and relearning, nothing else: the verdict
# turns on relearning alone.
RELEARN_ONLY = """description = "retain answers kept; relearning brings back at most 25%"
[control]
retain_rouge_l = { rule = "ratio_min", threshold = 0.9 }
[reconstruction]
relearn_recovery = { rule = "max", threshold = 0.25 }
"""
WAIVER = 'waive = { relearn_recovery = "single-fact requests: relearning not meaningful" }\n'


def _metric(detail: dict, stage: str, name: str) -> dict:
    st = next(s for s in detail["stages"] if s["stage"] == stage)
    return next(m for m in st["metrics"] if m["name"] == name)


def _stage(detail: dict, name: str) -> dict:
    return next(s for s in detail["stages"] if s["stage"] == name)


def _shown(detail: dict) -> str:
    from rich.console import Console

    from console.render import print_job

    buffer = io.StringIO()
    print_job(Console(file=buffer, width=200, color_system=None), detail)
    return buffer.getvalue()


def test_a_one_row_remove_request_is_incomplete_and_passes_only_with_a_waiver(engine, home, tiny, demo_request):
    home.policies.mkdir(parents=True, exist_ok=True)
    (home.policies / "relearn-only.toml").write_text(RELEARN_ONLY)
    (home.policies / "single-fact.toml").write_text(WAIVER + RELEARN_ONLY)
    engine.add_model("tiny", str(tiny["dir"]))
    spec = load_spec_file(demo_request["spec_path"])
    spec["forget"] = spec["forget"][:1]
    spec["retain"] = spec["retain"][:30]

    def run(policy: str) -> dict:
        res = engine.submit({**spec, "policy": policy}, method="guard")
        detail = wait_job(engine, res["job"]["id"], timeout=1800)
        assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
        return detail

    # Under default: relearning is not measured, and that is never a pass.
    detail = run("default")
    relearn = _metric(detail, "reconstruction", "relearn_recovery")
    assert relearn["after"] is None and relearn["passed"] is None
    assert "1 forget row cannot be split" in relearn["note"] and "add rows or a paraphrase set" in relearn["note"]
    assert detail["job"]["verdict"] == "fail"
    assert _stage(detail, "reconstruction")["verdict"] in ("incomplete", "fail")
    # The intervals travel with the figures: the leak rate over the one direct answer.
    leak = _metric(detail, "unit", "leak_rate")
    assert leak["n"] == 1 and leak["ci_low"] is not None and leak["ci_high"] is not None
    for name in ("quant8_leak_rate", "quant4_leak_rate"):  # each a rate over the one row asked
        quant = _metric(detail, "reconstruction", name)
        assert quant["n"] == 1 and quant["ci_low"] <= quant["after"] <= quant["ci_high"], quant

    # Where relearning is the only thing left to decide, the stage is incomplete and the job fails.
    detail = run("relearn-only")
    assert _stage(detail, "control")["verdict"] == "pass"
    rec = _stage(detail, "reconstruction")
    assert rec["verdict"] == "incomplete" and "relearn_recovery: not measured" in rec["note"]
    assert detail["job"]["verdict"] == "fail"
    assert "INCOMPLETE" in _shown(detail)
    report = engine.report(detail["job"]["request_id"], "md")
    assert "relearn_recovery: not measured" in report and "waived" not in report

    # The same rules with an explicit waiver pass, and the waiver is kept with the verdict and shown.
    detail = run("single-fact")
    assert detail["job"]["verdict"] == "pass"
    relearn = _metric(detail, "reconstruction", "relearn_recovery")
    assert relearn["note"].startswith("waived by the policy: single-fact requests: relearning not meaningful")
    stored = _stage(detail, "reconstruction")["policy_content"]
    assert stored["waive"] == {"relearn_recovery": "single-fact requests: relearning not meaningful"}
    shown = _shown(detail)
    assert "waived by the policy: single-fact requests" in shown
    assert json.dumps(stored)  # the policy stored with the verdict is plain JSON
    # The sign-off report carries the waiver beside the metric, and the policy's waiver among its rules.
    report = engine.report(detail["job"]["request_id"], "md")
    assert "waived by the policy: single-fact requests: relearning not meaningful" in report
