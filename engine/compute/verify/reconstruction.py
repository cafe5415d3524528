"""Reconstruction stage: can an attacker bring the forgotten data back?

Metrics (the first is black-box: it needs only the deployed model's outputs, guard included; the
others need the weights and are judged only for intention remove, see stages.WHITE_BOX):

- attack_leak_rate: share of attacked generations that leak (prompts: `engine.compute.verify.attacks`;
  each decoded greedily and ATTACK_SAMPLES times at temperature 1; leak rules: attacks.is_leak).
- relearn_recovery: share of the base's knowledge of forget half B that a small LoRA fine-tune on
  half A brings back (best of three checkpoints of a 30-step budget), beyond what the same attack
  teaches about never-seen holdout facts (`engine.compute.verify.relearn`); None when undefined (fewer than two forget rows, or the base did not
  know half B better than the control).
- mia_auc: Min-K%++ (k = 20%) membership-inference ROC AUC, forget rows (members) vs holdout rows
  (non-members); 0.5 = indistinguishable, 0 as telling as 1 (the policies judge it as a band around 0.5).
  None without a holdout set.

attack_leak_rate carries a Wilson 95% interval over its generations (the samples of one prompt are counted as
independent draws, so the interval is if anything narrow), mia_auc a seeded bootstrap one (`Measurement.stats`);
a metric without a value says why in `Measurement.notes`.
- logit_lens_presence: mean probability of the gold answer tokens decoded from the intermediate
  layers (logit lens: every block's output but the last, through the final norm and unembedding),
  averaged over those layers; with a holdout set, minus the same quantity on the holdout answers
  (what the layers give for facts never learnt: templates, names in the prompt), floored at 0.
"""

from __future__ import annotations

import math

from engine.compute.generation import generate
from engine.compute.verify.attacks import attack_prompts, leak_evidence
from engine.compute.verify.stages import EvalInput, Measurement

NAME = "reconstruction"
# What measure() reports, in order; the policies name these (tests keep them in sync).
METRICS = ("attack_leak_rate", "relearn_recovery", "mia_auc", "logit_lens_presence")
ATTACK_SAMPLES = 4
TEMPERATURE = 1.0
MIA_K = 0.2
# Holdout rows the white-box metrics score at most (the first ones; every forget row is scored).
MAX_HOLDOUT = 200


def _progress(ev: EvalInput, detail: str) -> None:
    if ev.progress:
        ev.progress(phase=f"verify:{NAME}", detail=detail)


def attack_leaks(ev: EvalInput) -> tuple[float | None, list[dict]]:
    attacks = attack_prompts(ev.forget, ev.sensitive, ev.probes, ev.tokenizer)
    if not attacks:
        return None, []
    prompts = [a.prompt for a in attacks]
    common = dict(guard=ev.guard, max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size, raw_prompts=True,
                  seed=ev.seed)
    greedy_outs = [o[0] for o in generate(ev.model, ev.tokenizer, prompts, **common)]
    samples = 1 if ev.profile == "quick" else ATTACK_SAMPLES
    sampled = generate(ev.model, ev.tokenizer, prompts, sample=True, num_samples=samples,
                       temperature=TEMPERATURE, **common)
    leaked_total = total = 0
    evidence = []
    for a, g, samples in zip(attacks, greedy_outs, sampled, strict=True):
        g_leak, g_spans = leak_evidence(g, a.reference, ev.sensitive, a.known)
        s_judged = [leak_evidence(s, a.reference, ev.sensitive, a.known) for s in samples]
        s_leaks = [leak for leak, _ in s_judged]
        leaked_total += g_leak + sum(s_leaks)
        total += 1 + len(samples)
        evidence.append({"attack": f"{a.kind}", "prompt": a.shown, "output": g, "leaked": g_leak, "spans": g_spans})
        # One row for the samples: the first leaking one if any (the operator wants to see the leak).
        first = next((i for i, leak in enumerate(s_leaks) if leak), 0)
        shown, shown_spans = (samples[first], s_judged[first][1]) if samples else ("", [])
        evidence.append({"attack": f"{a.kind}:sampled", "prompt": a.shown, "output": shown, "leaked": any(s_leaks),
                         "spans": shown_spans, "samples_leaked": sum(s_leaks), "samples": len(samples)})
    return leaked_total / total, _dedupe(evidence)


def _dedupe(evidence: list[dict]) -> list[dict]:
    """(attack, prompt) identifies a row for pairing before/after: number repeats instead of dropping them."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for e in evidence:
        key = (e["attack"], e["prompt"])
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n:
            e = {**e, "attack": f"{e['attack']}#{n + 1}"}
        out.append(e)
    return out


def mia_scores(ev: EvalInput) -> tuple[list[float], list[float]]:
    """Min-K%++ scores of the forget rows (members) and of the first MAX_HOLDOUT holdout rows (non-members)."""
    if not ev.holdout or not ev.forget:
        return [], []
    from engine.compute.verify.scoring import min_k_plus_plus

    holdout = ev.holdout[:MAX_HOLDOUT]
    scores = min_k_plus_plus(ev.model, ev.tokenizer, list(ev.forget) + list(holdout), k=MIA_K,
                             batch_size=ev.batch_size)
    pos = [s for s in scores[: len(ev.forget)] if not math.isnan(s)]
    neg = [s for s in scores[len(ev.forget):] if not math.isnan(s)]
    return pos, neg


def mia_auc(ev: EvalInput) -> float | None:
    from engine.compute.verify.metrics import auc

    pos, neg = mia_scores(ev)
    return auc(pos, neg) if pos and neg else None


def _intermediate_prob(model, tokenizer, rows, batch_size: int) -> float | None:
    from engine.compute.verify.scoring import logit_lens

    layers = logit_lens(model, tokenizer, rows, batch_size=batch_size)
    inner = layers[1:-1]  # neither the embeddings nor the model's real output
    if not inner:
        return None
    return sum(r["prob"] for r in inner) / len(inner)


def logit_lens_presence(ev: EvalInput) -> float | None:
    forget = _intermediate_prob(ev.model, ev.tokenizer, ev.forget, ev.batch_size)
    if forget is None or not ev.holdout:
        return forget
    holdout = _intermediate_prob(ev.model, ev.tokenizer, ev.holdout[:MAX_HOLDOUT], ev.batch_size)
    return max(0.0, forget - holdout) if holdout is not None else forget


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify.metrics import auc, auc_interval, rate_stats
    from engine.compute.verify.relearn import QUICK_RELEARN, relearn_recovery

    _progress(ev, "attacks")
    leak, evidence = attack_leaks(ev)
    _progress(ev, "relearn")
    base = ev.base_model if ev.base_model is not None else ev.model
    relearn = relearn_recovery(ev.model, base, ev.tokenizer, ev.forget, ev.holdout,
                               cfg=QUICK_RELEARN if ev.profile == "quick" else None,
                               max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)
    for e in relearn["evidence"]:
        leaked, spans = leak_evidence(e["output"], e["row"]["answer"], ev.sensitive, e["row"]["question"])
        evidence.append({"attack": "relearn", "prompt": e["row"]["question"], "output": e["output"],
                         "leaked": leaked, "spans": spans})
    _progress(ev, "white-box")
    pos, neg = mia_scores(ev)
    metrics = {
        "attack_leak_rate": leak,
        "relearn_recovery": relearn["recovery"],
        "mia_auc": auc(pos, neg) if pos and neg else None,
        "logit_lens_presence": logit_lens_presence(ev),
    }
    stats = {}
    if leak is not None:
        stats["attack_leak_rate"] = rate_stats(*_leak_counts(evidence))
    if metrics["mia_auc"] is not None:
        low, high = auc_interval(pos, neg, seed=ev.seed)
        stats["mia_auc"] = {"ci_low": low, "ci_high": high, "n": len(pos)}  # n: the members scored
    return Measurement(metrics=metrics, evidence=evidence, stats=stats, notes=_unmeasured(ev, metrics, relearn))


def _leak_counts(evidence: list[dict]) -> tuple[int, int]:
    """(leaking generations, generations) of the attacks: a greedy row counts one, a sampled row its samples."""
    rows = [e for e in evidence if e["attack"] != "relearn"]
    leaked = sum(e.get("samples_leaked", int(e["leaked"])) for e in rows)
    return leaked, sum(e.get("samples", 1) for e in rows)


def _unmeasured(ev: EvalInput, metrics: dict, relearn: dict) -> dict[str, str]:
    """Why each metric without a value has none (the verdict shows it with the fix)."""
    from engine.compute.verify.relearn import MIN_MARGIN

    notes = {}
    if metrics["attack_leak_rate"] is None:
        notes["attack_leak_rate"] = "no attack prompt could be built from these rows"
    if metrics["relearn_recovery"] is None:
        if relearn["base"] is None:
            notes["relearn_recovery"] = (f"{len(ev.forget)} forget row cannot be split into a half to relearn "
                                         "and a half to ask")
        elif relearn["base"] - relearn["control"] < MIN_MARGIN:
            notes["relearn_recovery"] = (f"the base answers half B (ROUGE-L {relearn['base']:.2f}) no better than "
                                         f"the same attack teaches about never-seen facts "
                                         f"({relearn['control']:.2f}): nothing to recover")
        else:
            notes["relearn_recovery"] = "the attacked model's answers could not be scored"
    if metrics["mia_auc"] is None:
        notes["mia_auc"] = "no holdout rows to compare the forget rows with" if not ev.holdout else \
            "no forget or holdout row could be scored"
    if metrics["logit_lens_presence"] is None:
        notes["logit_lens_presence"] = "the model has no intermediate layers to decode"
    return notes
