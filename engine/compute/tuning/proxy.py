"""The cheap proxy a tuning trial is judged by: the unit and control stages' direct measurements (greedy answers,
answer NLL, the leak check, token KL to the base) on the validation split's rows, and the two reconstruction checks
that cost seconds (the membership-inference AUC against the holdout rows, one forward pass; the direct questions
asked of a 4-bit copy of the weights), judged by the request's policy. Seconds on a small slice, where the full
verification runs the attack suite for minutes.

The reconstruction checks are there because the unit targets alone pick the wrong trial: the least change that
stops the direct answers is the one a 4-bit rounding undoes (Zhang et al. 2025), and a run that goes on past it
makes the erased answers *less* likely than never-seen ones, which membership inference reads as surely."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.schema.policy import band_side, holds

# The policy metrics the proxy measures, per stage; the others (perplexity, the attack prompts) wait for the full
# run. sampled_leak_rate is the proxy's own: the direct questions answered at temperature 1, judged by the rule of
# attack_leak_rate (whose sampled generations it stands for: on SmolLM2 UNDIAL stopped at its first unit-met check
# with the greedy answers clean and 14% of the attacked generations still naming the fact).
PROXY_METRICS = {"unit": ("forget_rouge_l", "forget_prob", "leak_rate"),
                 "control": ("retain_rouge_l", "retain_prob", "retain_kl"),
                 "reconstruction": ("mia_auc", "quant4_leak_rate", "sampled_leak_rate")}
RULE_OF = {"sampled_leak_rate": "attack_leak_rate"}  # a proxy metric judged by another metric's rule
SAMPLES = 8  # sampled answers per forget question


@dataclass
class ProxyRows:
    tokenizer: object
    forget: list[dict]
    retain: list[dict]
    sensitive: list[str]
    max_new_tokens: int
    holdout: list[dict] = field(default_factory=list)  # never-seen facts, for the membership-inference AUC
    # The forget rows membership inference is asked about: the ones the run trains on too (None: `forget`). A
    # held-out row says nothing of whether the trained ones were pushed below never-seen facts.
    members: list[dict] | None = None


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


def _as_eval_input(model, rows: ProxyRows, forget: list[dict] | None = None):
    from engine.compute.verify.stages import EvalInput

    return EvalInput(model=model, tokenizer=rows.tokenizer, forget=forget or rows.forget, retain=[],
                     sensitive=rows.sensitive, holdout=rows.holdout, max_new_tokens=rows.max_new_tokens)


def measure_mia(model, rows: ProxyRows) -> dict[str, float]:
    """mia_auc as the reconstruction stage measures it (Min-K%++, the forget rows against the holdout rows), on
    every forget row the run sees (`members`); {} without holdout rows. One forward pass."""
    from engine.compute.verify.reconstruction import mia_auc

    value = mia_auc(_as_eval_input(model, rows, rows.members))
    return {} if value is None else {"mia_auc": value}


def measure_quant4(model, rows: ProxyRows) -> dict[str, float]:
    """quant4_leak_rate as the reconstruction stage measures it (the forget questions asked of a Q4_0 copy of the
    weights, no guard); {} when nothing can be quantized. A copy of the model and a greedy pass."""
    from engine.compute.verify.quantization import quantized_leak_rate

    value = quantized_leak_rate(_as_eval_input(model, rows), model, "quant4")
    return {} if value is None else {"quant4_leak_rate": value}


def measure_sampled(model, rows: ProxyRows) -> dict[str, float]:
    """sampled_leak_rate: the share of SAMPLES answers per forget question, at temperature 1 (seeded), that leak.
    One sampled generation pass."""
    from engine.compute.generation import generate
    from engine.compute.verify.attacks import is_leak
    from engine.compute.verify.reconstruction import TEMPERATURE

    sampled = generate(model, rows.tokenizer, [r["question"] for r in rows.forget], sample=True,
                       num_samples=SAMPLES, temperature=TEMPERATURE, max_new_tokens=rows.max_new_tokens)
    said = [(a, r["answer"]) for r, answers in zip(rows.forget, sampled, strict=True) for a in answers]
    return {"sampled_leak_rate": sum(is_leak(a, g, rows.sensitive) for a, g in said) / len(said)} if said else {}


def measure_reconstruction(model, rows: ProxyRows) -> dict[str, float]:
    return {**measure_mia(model, rows), **measure_quant4(model, rows), **measure_sampled(model, rows)}


def rule(policy: dict, stage: str, metric: str) -> dict | None:
    """The policy's rule for a proxy metric (its own, or the one it stands for); None if absent or waived."""
    name = RULE_OF.get(metric, metric)
    return None if name in policy.get("waive", {}) else policy.get(stage, {}).get(name)


def judges_reconstruction(policy: dict) -> bool:
    """Whether the policy has a rule (not waived) for one of the proxy's reconstruction metrics."""
    return any(rule(policy, "reconstruction", m) for m in PROXY_METRICS["reconstruction"])


def over_unlearned(metrics: dict, policy: dict) -> bool:
    """Whether membership inference reads the erased rows as *less* likely than never-seen ones, below the
    policy's band: more training only lowers their likelihood further, so a run there has gone too far."""
    spec = policy.get("reconstruction", {}).get("mia_auc")
    return (spec is not None and "mia_auc" not in policy.get("waive", {}) and metrics.get("mia_auc") is not None
            and band_side(spec, metrics["mia_auc"]) == "below")


def judge_stage(stage: str, before: dict, after: dict, policy: dict) -> dict:
    """{"verdict": pass|fail, "failed": [metric, ...]} over the proxy metrics the policy judges in `stage`
    (a waived one is left out, as the full verdict leaves it out)."""
    failed = [m for m in PROXY_METRICS[stage] if m in after and rule(policy, stage, m)
              and not holds(rule(policy, stage, m), before.get(m), after[m])]
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
