"""The three stages: measure a model (base once, then each candidate) and judge after against before.

A stage module (unit.py, control.py, reconstruction.py) defines NAME and measure(ev) -> Measurement."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from engine.compute.verify.metrics import wilson_interval
from engine.schema.policy import (
    ERASURE_STAGES,
    SIGNAL_FLOOR,
    WHITE_BOX,
    band_side,
    holds,
    rule_text,
    threshold_of,
)
from engine.schema.status import STAGES

STAGE_ORDER = STAGES  # the order they run in and are shown
QUICK_GENERAL_TEXTS = 8
# How to make each metric measurable when it is not (the stage's own note says why it was not).
FIXES = {
    "relearn_recovery": "relearning needs at least 2 forget rows, which the base answers better than never-seen "
                        "facts and the attack brings back on the base itself: add rows or a paraphrase set",
    "mia_auc": "membership inference needs never-seen rows to compare with: add a holdout set",
    "logit_lens_presence": "the base shows too little of the answers in its intermediate layers for a drop to "
                           "mean anything: check the rows are facts this model knows, or waive the metric",
    "leak_rate": "the base does not leak these values when asked directly: check the sensitive strings, or waive "
                 "the metric",
    "attack_leak_rate": "no attack made the base leak: check the sensitive strings, or add probes",
    "forget_rouge_l": "the base does not give these answers: check the forget rows are what this model says",
    "forget_prob": "the base does not find these answers likely: check the forget rows are what this model says",
}
RATE_FIX = "add rows (a paraphrase set multiplies the attacked prompts)"

@dataclass
class EvalInput:
    model: Any
    tokenizer: Any
    forget: list[dict]
    retain: list[dict]
    sensitive: list[str]
    guard: Any = None
    holdout: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    base_model: Any = None  # the untouched model, for divergence metrics; None when measuring the base itself
    general_text: list[str] = field(default_factory=list)
    batch_size: int = 32
    max_new_tokens: int = 48
    seed: int = 0
    progress: Any = None
    # 'full', or 'quick': the same metrics on a smaller budget (1 sampled attack per prompt instead of 4,
    # a 10-step relearning attack instead of 30, the first 8 general texts); chosen per request.
    profile: str = "full"
    # The out-of-sample split (engine.compute.verify.split): the retain rows the control stage judges (None: all
    # of `retain`), the ones the method trained on (measured, never credited), and the built neighbours
    # (engine.compute.verify.neighbours: the base's own answers) on each side.
    retain_judged: list[dict] | None = None
    retain_trained: list[dict] = field(default_factory=list)
    neighbours: list[dict] = field(default_factory=list)
    neighbours_trained: list[dict] = field(default_factory=list)


@dataclass
class Measurement:
    metrics: dict[str, float | None]
    evidence: list[dict] = field(default_factory=list)  # {"attack","prompt","output","leaked","spans"}
    # per metric with an interval: {"ci_low", "ci_high", "n"} and, for a rate, "k" (its count of n)
    stats: dict[str, dict] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # per metric measured as None: why
    timings: dict[str, float] = field(default_factory=dict)  # seconds per attack or part of the stage


def stage_module(name: str):
    """A stage's module. An import error propagates: a broken stage fails the job, it never drops out of a verdict."""
    return importlib.import_module(f"engine.compute.verify.{name}")


def measure_all(ev: EvalInput) -> dict[str, dict]:
    """Run every available stage on one model; plain dicts so the result can be cached as JSON."""
    out = {}
    for name in STAGE_ORDER:
        module = stage_module(name)
        if ev.progress:
            ev.progress(phase=f"verify:{name}")
        started = time.perf_counter()
        m = module.measure(ev)
        timings = {**m.timings, "total": round(time.perf_counter() - started, 3)}
        out[name] = {"metrics": m.metrics, "evidence": m.evidence, "stats": m.stats, "notes": m.notes,
                     "timings": timings}
    return out


def judge(before: dict[str, dict], after: dict[str, dict], policy: dict, intention: str) -> list[dict]:
    """Each stage: its metrics (before, after, 95% interval and n where measured, threshold, rule, passed, note)
    and a verdict over the metrics judged for this intention: fail if one fails; else incomplete if one is not
    measured, shows no signal on the base or rests on too small a sample; else pass ('skipped': none judged).
    A metric the policy waives is shown, with the waiver as its note, and not counted."""
    stages = []
    for name in STAGE_ORDER:
        if name not in after:
            continue
        metrics, counted = [], []
        reported = after[name]["metrics"]
        # A metric the policy judges but the stage did not report at all is not measured, never skipped.
        names = list(reported) + [m for m in policy.get(name, {}) if m not in reported]
        for metric in names:
            row, status = _judge_metric(name, metric, reported.get(metric), before.get(name, {}), after[name],
                                        policy, intention)
            metrics.append(row)
            if status is not None:
                counted.append((status, row))
        statuses = {status for status, _ in counted}
        verdict = next((v for v in ("fail", "incomplete", "pass") if v in statuses), "skipped")
        note = "; ".join(f"{row['name']}: {row['note']}" for status, row in counted if status == "incomplete")
        stages.append({"stage": name, "verdict": verdict, "required": bool(counted), "metrics": metrics,
                       "note": (note or None) if verdict == "incomplete" else None})
    return stages


def _judge_metric(stage: str, metric: str, value_after, before: dict, after: dict, policy: dict,
                  intention: str) -> tuple[dict, str | None]:
    """One metric's row and its status for the stage verdict: pass | fail | incomplete, or None (not counted)."""
    spec = policy.get(stage, {}).get(metric)
    value_before = before.get("metrics", {}).get(metric)
    stats = after.get("stats", {}).get(metric, {})
    row = {"name": metric, "before": value_before, "after": value_after,
           "threshold": threshold_of(spec) if spec else None, "rule": _rule_text(spec, intention, metric),
           "passed": None, "ci_low": stats.get("ci_low"), "ci_high": stats.get("ci_high"), "n": stats.get("n"),
           "note": None}
    if spec is None:
        return row, None
    waiver = policy.get("waive", {}).get(metric)
    counted = not waiver and not (intention == "suppress" and metric in WHITE_BOX)
    status, row["note"] = _status(stage, metric, spec, value_before, value_after, before, after, stats)
    counted = counted and status is not None
    if status in ("pass", "fail"):
        row["passed"] = status == "pass"
    if waiver:
        row["note"] = f"waived by the policy: {waiver}" + (f" ({row['note']})" if row["note"] else "")
    return row, (status if counted else None)


def _status(stage: str, metric: str, spec: dict, value_before, value_after, before: dict, after: dict,
            stats: dict) -> tuple[str | None, str | None]:
    """pass | fail | incomplete with its note, or None: reported, not judged (no signal, if_no_signal = report)."""
    if value_after is None:
        why = after.get("notes", {}).get(metric, "the stage gave no value")
        return "incomplete", f"not measured: {why}; {FIXES.get(metric, 'see the stage log')}"
    if value_before is None and (stage in ERASURE_STAGES or spec["rule"].startswith("ratio")):
        why = before.get("notes", {}).get(metric, "the base model gives no value")
        return "incomplete", f"not measured on the base: {why}; {FIXES.get(metric, 'see the stage log')}"
    judge_on = spec.get("judge_on", "value")
    judged = value_after if judge_on == "value" else stats.get("ci_high" if judge_on == "upper" else "ci_low")
    if judged is None:
        return "incomplete", f"no 95% interval was measured to judge its {judge_on} bound on"
    if not holds(spec, value_before, judged):
        return _failed(metric, spec, value_after, judged, judge_on, stats)
    if stage in ERASURE_STAGES:
        floor = SIGNAL_FLOOR.get(metric)
        if floor is not None and value_before < floor:
            return "incomplete", (f"no signal on the base: {value_before:.3f} is under the floor of {floor:g}; "
                                  f"{FIXES.get(metric, '')}")
        if holds(spec, value_before, value_before):
            why = f"no signal on the base: its own value {value_before:.3f} already meets {rule_text(spec)}"
            if spec.get("if_no_signal") == "report":
                return None, f"{why}: reported, not judged (the policy's if_no_signal)"
            return "incomplete", f"{why}, so a pass shows nothing; {FIXES.get(metric, '')}"
    return "pass", None


def _failed(metric: str, spec: dict, value_after: float, judged: float, judge_on: str,
            stats: dict) -> tuple[str, str | None]:
    side = band_side(spec, value_after)
    if side == "below":
        return "fail", ("below the band: the erased rows are now less likely than never-seen facts: detectable"
                        if metric == "mia_auc" else "below the band")
    if side == "above":
        return "fail", ("above the band: the erased rows are still told apart from never-seen facts"
                        if metric == "mia_auc" else "above the band")
    if judge_on == "upper" and "k" in stats and holds(spec, None, value_after):
        # The value meets the rule; its interval does not. Can this sample ever pass?
        best = wilson_interval(0, stats["n"])[1]
        if not holds(spec, None, best):
            return "incomplete", (f"sample too small: {stats['k']}/{stats['n']}, and even 0/{stats['n']} has a "
                                  f"95% upper bound of {best:.2f}, which can never be ≤ {spec['threshold']:g}; "
                                  + RATE_FIX)
        return "fail", f"the 95% upper bound {judged:.3f} is over {spec['threshold']:g}"
    return "fail", None


def _rule_text(rule: dict | None, intention: str, metric: str) -> str:
    if rule is None:
        return "reported only"
    text = rule_text(rule)
    if intention == "suppress" and metric in WHITE_BOX:
        text += " (white-box: not judged for suppress)"
    return text


def overall_verdict(stages: list[dict]) -> str:
    judged = [s["verdict"] for s in stages if s["required"]]
    return "pass" if judged and all(v == "pass" for v in judged) else "fail"


def pair_evidence(stage: str, before: list[dict], after: list[dict]) -> list[dict]:
    """Before and after outputs of the same attacked prompt, side by side."""
    by_key = {(e["attack"], e["prompt"]): e for e in before}
    rows = []
    for e in after:
        b = by_key.get((e["attack"], e["prompt"]), {})
        rows.append({"stage": stage, "attack": e["attack"], "prompt": e["prompt"],
                     "output_before": b.get("output", ""), "output_after": e["output"],
                     "leaked_before": bool(b.get("leaked", False)), "leaked_after": bool(e["leaked"]),
                     # where each output leaks: [[start, end], ...] character offsets; None where not
                     # recorded (a 'before' cached by an older engine)
                     "spans_before": _spans(b.get("spans")) if b else [], "spans_after": _spans(e.get("spans"))})
    return rows


def _spans(spans) -> list[list[int]] | None:
    return None if spans is None else [[int(a), int(b)] for a, b in spans]
