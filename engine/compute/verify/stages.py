"""The three stages: measure a model (base once, then each candidate) and judge after against before.

A stage module (unit.py, control.py, reconstruction.py) defines NAME and measure(ev) -> Measurement."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from engine.schema.policy import passes

STAGE_ORDER = ("unit", "control", "reconstruction")
PROFILES = ("full", "quick")
QUICK_GENERAL_TEXTS = 8
# Metrics that need the weights or logits: a suppress request (a decode-time guard) is not judged on them.
WHITE_BOX = {"forget_prob", "mia_auc", "logit_lens_presence", "relearn_recovery", "retain_prob", "retain_kl",
             "general_ppl", "extraction_strength", "exact_memorisation", "retain_relearn_recovery",
             "quant8_forget_rouge_l", "quant8_leak_rate", "quant4_forget_rouge_l", "quant4_leak_rate"}


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


@dataclass
class Measurement:
    metrics: dict[str, float]
    evidence: list[dict] = field(default_factory=list)  # {"attack","prompt","output","leaked","spans"}
    timings: dict[str, float] = field(default_factory=dict)  # seconds per attack or part of the stage


def stage_module(name: str):
    try:
        return importlib.import_module(f"engine.compute.verify.{name}")
    except ModuleNotFoundError:
        return None


def measure_all(ev: EvalInput) -> dict[str, dict]:
    """Run every available stage on one model; plain dicts so the result can be cached as JSON."""
    out = {}
    for name in STAGE_ORDER:
        module = stage_module(name)
        if module is None:
            continue
        if ev.progress:
            ev.progress(phase=f"verify:{name}")
        started = time.perf_counter()
        m = module.measure(ev)
        timings = {**m.timings, "total": round(time.perf_counter() - started, 3)}
        out[name] = {"metrics": m.metrics, "evidence": m.evidence, "timings": timings}
    return out


def judge(before: dict[str, dict], after: dict[str, dict], policy: dict, intention: str) -> list[dict]:
    """Each stage: metrics with before, after, threshold, rule, passed; a stage verdict over the judged ones."""
    stages = []
    for name in STAGE_ORDER:
        if name not in after:
            continue
        rules = policy.get(name, {})
        metrics = []
        judged = []
        for metric, value_after in after[name]["metrics"].items():
            value_before = before.get(name, {}).get("metrics", {}).get(metric)
            rule = rules.get(metric)
            passed = None
            if rule is not None and value_after is not None:
                passed = passes(rule["rule"], rule["threshold"], value_before, value_after)
                counted = not (intention == "suppress" and metric in WHITE_BOX)
                if counted:
                    judged.append(passed)
            metrics.append({"name": metric, "before": value_before, "after": value_after,
                            "threshold": rule["threshold"] if rule else None,
                            "rule": _rule_text(rule, intention, metric), "passed": passed})
        verdict = "pass" if judged and all(judged) else ("fail" if judged else "skipped")
        stages.append({"stage": name, "verdict": verdict, "required": bool(judged), "metrics": metrics})
    return stages


def _rule_text(rule: dict | None, intention: str, metric: str) -> str:
    if rule is None:
        return "reported only"
    text = {"max": "≤ {t}", "min": "≥ {t}", "ratio_max": "≤ {t}×before",
            "ratio_min": "≥ {t}×before"}[rule["rule"]].format(t=rule["threshold"])
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
