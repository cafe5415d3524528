"""The cheap proxy a tuning trial is judged by: the unit and control stages' direct measurements (greedy answers,
answer NLL, the leak check, token KL to the base) on the validation split's rows, judged by the request's policy.
Seconds on a small slice, where the full verification runs the attack suite for minutes."""

from __future__ import annotations

from dataclasses import dataclass

from engine.schema.policy import holds

# The policy metrics the proxy measures, per stage; the others (perplexity, the attacks) wait for the full run.
PROXY_METRICS = {"unit": ("forget_rouge_l", "forget_prob", "leak_rate"),
                 "control": ("retain_rouge_l", "retain_prob", "retain_kl")}


@dataclass
class ProxyRows:
    tokenizer: object
    forget: list[dict]
    retain: list[dict]
    sensitive: list[str]
    max_new_tokens: int


def measure_forget(model, rows: ProxyRows) -> dict[str, float]:
    from engine.compute.generation import greedy
    from engine.compute.verify.attacks import is_leak
    from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
    from engine.compute.verify.scoring import answer_nlls

    golds = [r["answer"] for r in rows.forget]
    answers = greedy(model, rows.tokenizer, [r["question"] for r in rows.forget], max_new_tokens=rows.max_new_tokens)
    nlls = answer_nlls(model, rows.tokenizer, rows.forget)
    leaks = sum(is_leak(a, g, rows.sensitive) for a, g in zip(answers, golds, strict=True))
    return {"forget_rouge_l": mean_rouge_l_recall(answers, golds),
            "forget_prob": sum(answer_probability(n) for n in nlls) / len(nlls),
            "leak_rate": leaks / len(golds)}


def measure_retain(model, base, rows: ProxyRows) -> dict[str, float]:
    from engine.compute.generation import greedy
    from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
    from engine.compute.verify.scoring import answer_nlls, mean_token_kl

    if not rows.retain:
        return {}
    answers = greedy(model, rows.tokenizer, [r["question"] for r in rows.retain], max_new_tokens=rows.max_new_tokens)
    nlls = answer_nlls(model, rows.tokenizer, rows.retain)
    return {"retain_rouge_l": mean_rouge_l_recall(answers, [r["answer"] for r in rows.retain]),
            "retain_prob": sum(answer_probability(n) for n in nlls) / len(nlls),
            "retain_kl": 0.0 if model is base else mean_token_kl(model, base, rows.tokenizer, rows.retain)}


def judge_stage(stage: str, before: dict, after: dict, policy: dict) -> dict:
    """{"verdict": pass|fail, "failed": [metric, ...]} over the proxy metrics the policy judges in `stage`
    (a waived one is left out, as the full verdict leaves it out)."""
    rules = policy.get(stage, {})
    waived = policy.get("waive", {})
    failed = [m for m in PROXY_METRICS[stage] if m in rules and m not in waived and m in after
              and not holds(rules[m], before.get(m), after[m])]
    return {"verdict": "fail" if failed else "pass", "failed": failed}


def judge(before: dict, after: dict, policy: dict) -> dict[str, dict]:
    return {stage: judge_stage(stage, before, after, policy) for stage in PROXY_METRICS}


def control_score(before: dict, after: dict) -> float:
    """How much the control slice lost (lower is better): the retain ROUGE-L and probability given up, as shares
    of the base's, plus the KL to the base. The winner is the passing trial with the lowest."""
    lost = 0.0
    for metric in ("retain_rouge_l", "retain_prob"):
        if after.get(metric) is not None and before.get(metric):
            lost += max(0.0, 1.0 - after[metric] / before[metric])
    return lost + float(after.get("retain_kl") or 0.0)


def unit_gap(before: dict, after: dict, policy: dict) -> float:
    """How far the forget slice is from the unit rules (0 once every one holds): what a trial's search minimises
    first. Each rule's shortfall as a share of its limit."""
    gap = 0.0
    for metric, spec in policy.get("unit", {}).items():
        value = after.get(metric)
        if value is None or metric in policy.get("waive", {}) or holds(spec, before.get(metric), value):
            continue
        if spec["rule"] == "ratio_max" and before.get(metric):
            limit = spec["threshold"] * before[metric]
        elif spec["rule"] == "max":
            limit = spec["threshold"]
        else:
            gap += 1.0
            continue
        gap += (value - limit) / max(limit, 1e-3)
    return gap
