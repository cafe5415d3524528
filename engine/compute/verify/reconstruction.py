"""Reconstruction stage: can an attacker bring the forgotten data back?

Metrics (the black-box ones need only the deployed model's outputs, guard included; the others need
the weights and are judged only for intention remove, see stages.WHITE_BOX):

- attack_leak_rate (black-box): share of attacked generations that leak (prompts:
  `engine.compute.verify.attacks`; each decoded greedily and ATTACK_SAMPLES times at temperature 1;
  leak rules: attacks.is_leak).
- incontext_leak_rate (black-box): share of forget rows that leak when asked with the other half of the
  forget set as context (`engine.compute.verify.incontext`); None for a single forget row.
- relearn_recovery: share of the base's knowledge of forget half B that a small LoRA fine-tune on
  half A brings back (best of three checkpoints of a 30-step budget), beyond what the same attack
  teaches about never-seen holdout facts (a control matched in rows, tokens and steps; scored on the
  answers' key tokens: `engine.compute.verify.relearn`); None when undefined (fewer than two forget
  rows, or the base did not know half B better than the control).
- retain_relearn_recovery: the same share after a fine-tune on retain rows only
  (`engine.compute.verify.retain_relearn`).
- quant8_/quant4_forget_rouge_l, quant8_/quant4_leak_rate: the unit stage's direct questions asked of
  the weights quantized to 8 and 4 bits (`engine.compute.verify.quantization`).
- extraction_strength, exact_memorisation: how much of each forget answer the weights reproduce top-1
  under teacher forcing, and how few of its leading tokens an attacker must supply to extract the rest
  (open-unlearning's definitions: `engine.compute.verify.verbatim`).
- mia_auc: Min-K%++ (k = 20%) membership-inference ROC AUC, forget rows (members) vs holdout rows
  (non-members); 0.5 = indistinguishable, 0 as telling as 1 (the policies judge it as a band around 0.5).
  None without a holdout set.
- logit_lens_presence: the probability of the gold answer tokens decoded from the intermediate layers
  (logit lens: every block's output but the last, through the final norm and unembedding), at the layer
  where it is highest; with a holdout set, minus the same layer's figure on the holdout answers (what
  the layers give for facts never learnt: templates, names in the prompt), floored at 0. The evidence
  names the layer.

attack_leak_rate carries a Wilson 95% interval over its generations (the samples of one prompt are counted as
independent draws, so the interval is if anything narrow), incontext_leak_rate and quant8_/quant4_leak_rate one
over the rows asked, mia_auc a seeded bootstrap one, relearn_recovery and retain_relearn_recovery a seeded
paired bootstrap over the rows asked (relearn.recovery_interval) (`Measurement.stats`);
a metric without a value says why in `Measurement.notes`. Each attack's wall time is in the measurement's
timings (seconds).
"""

from __future__ import annotations

import math
import time

from engine.compute.generation import generate
from engine.compute.verify.attacks import attack_prompts, leak_evidence
from engine.compute.verify.stages import EvalInput, Measurement

NAME = "reconstruction"
# What measure() reports, in order; the policies name these (tests keep them in sync).
METRICS = ("attack_leak_rate", "incontext_leak_rate", "relearn_recovery", "retain_relearn_recovery",
           "quant8_forget_rouge_l", "quant8_leak_rate", "quant4_forget_rouge_l", "quant4_leak_rate",
           "extraction_strength", "exact_memorisation", "mia_auc", "logit_lens_presence")
# Leak rates over one row's answer each: metric -> the evidence's attack name (their Wilson interval's counts).
RATE_ATTACKS = {"incontext_leak_rate": "incontext", "quant8_leak_rate": "quant8", "quant4_leak_rate": "quant4"}
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


def _intermediate_probs(model, tokenizer, rows, batch_size: int) -> list[float]:
    """Per intermediate layer (neither the embeddings nor the model's real output), the lens probability."""
    from engine.compute.verify.scoring import logit_lens

    return [r["prob"] for r in logit_lens(model, tokenizer, rows, batch_size=batch_size)[1:-1]]


def logit_lens_presence(ev: EvalInput) -> tuple[float | None, int | None]:
    """(presence, the block whose output gives it: 1 = the first block), or (None, None) without
    intermediate layers."""
    forget = _intermediate_probs(ev.model, ev.tokenizer, ev.forget, ev.batch_size)
    if not forget:
        return None, None
    holdout = _intermediate_probs(ev.model, ev.tokenizer, ev.holdout[:MAX_HOLDOUT], ev.batch_size) \
        if ev.holdout else [0.0] * len(forget)
    above = [f - h for f, h in zip(forget, holdout, strict=True)]
    best = max(range(len(above)), key=above.__getitem__)
    return max(0.0, above[best]), best + 1


def _relearn_evidence(ev: EvalInput, attack: str, result: dict) -> list[dict]:
    out = []
    for e in result["evidence"]:
        leaked, spans = leak_evidence(e["output"], e["row"]["answer"], ev.sensitive, e["row"]["question"])
        out.append({"attack": attack, "prompt": e["row"]["question"], "output": e["output"], "leaked": leaked,
                    "spans": spans})
    return out


class _Clock:
    """Wall seconds per named part of the stage, reported as the measurement's timings."""

    def __init__(self, ev: EvalInput) -> None:
        self.ev, self.timings, self.started = ev, {}, time.perf_counter()

    def lap(self, done: str, next_part: str | None = None) -> None:
        now = time.perf_counter()
        self.timings[done] = round(now - self.started, 3)
        self.started = now
        if next_part:
            _progress(self.ev, next_part)


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify import incontext, quantization, verbatim
    from engine.compute.verify.metrics import auc, auc_interval, rate_stats
    from engine.compute.verify.relearn import QUICK_RELEARN, relearn_recovery
    from engine.compute.verify.retain_relearn import retain_relearn_recovery

    _progress(ev, "attacks")
    clock = _Clock(ev)
    metrics: dict[str, float | None] = {}
    metrics["attack_leak_rate"], evidence = attack_leaks(ev)
    stats = {}
    if metrics["attack_leak_rate"] is not None:
        stats["attack_leak_rate"] = rate_stats(*_leak_counts(evidence))
    clock.lap("attacks", "in-context")
    metrics["incontext_leak_rate"], context_evidence = incontext.measure(ev)
    evidence += context_evidence
    clock.lap("incontext", "relearn")
    base = ev.base_model if ev.base_model is not None else ev.model
    common = dict(cfg=QUICK_RELEARN if ev.profile == "quick" else None, sensitive=ev.sensitive,
                  max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)
    relearn = relearn_recovery(ev.model, base, ev.tokenizer, ev.forget, ev.holdout, **common)
    metrics["relearn_recovery"] = relearn["recovery"]
    stats.update(_recovery_stats("relearn_recovery", relearn))
    evidence += _relearn_evidence(ev, "relearn", relearn)
    clock.lap("relearn", "relearn on retain data")
    retain = retain_relearn_recovery(ev.model, base, ev.tokenizer, ev.forget, ev.retain, ev.holdout, **common)
    metrics["retain_relearn_recovery"] = retain["recovery"]
    stats.update(_recovery_stats("retain_relearn_recovery", retain))
    evidence += _relearn_evidence(ev, "relearn:retain", retain)
    clock.lap("retain_relearn", "quantization")
    quant_metrics, quant_evidence, quant_timings = quantization.measure(ev)
    metrics.update(quant_metrics)
    evidence += quant_evidence
    for name, attack in RATE_ATTACKS.items():  # the other leak rates: counts of the rows asked
        asked = [e for e in evidence if e["attack"] == attack]
        if metrics.get(name) is not None and asked:
            stats[name] = rate_stats(sum(bool(e["leaked"]) for e in asked), len(asked))
    clock.lap("quantization", "white-box")
    metrics.update(verbatim.memorisation(ev))
    clock.lap("extraction")
    pos, neg = mia_scores(ev)
    metrics["mia_auc"] = auc(pos, neg) if pos and neg else None
    if metrics["mia_auc"] is not None:
        low, high = auc_interval(pos, neg, seed=ev.seed)
        stats["mia_auc"] = {"ci_low": low, "ci_high": high, "n": len(pos)}  # n: the members scored
    clock.lap("mia")
    metrics["logit_lens_presence"], layer = logit_lens_presence(ev)
    if layer is not None:
        above = " above the holdout's" if ev.holdout else ""
        evidence.append({"attack": "logit_lens", "prompt": "forget answers, decoded from every block's output",
                         "output": f"highest at block {layer}: {metrics['logit_lens_presence']:.4f}{above}",
                         "leaked": False, "spans": []})
    clock.lap("logit_lens")
    timings = {**clock.timings, **{f"quantization:{k}": v for k, v in quant_timings.items()}}
    return Measurement(metrics={name: metrics[name] for name in METRICS}, evidence=_dedupe(evidence),
                       timings=timings, stats=stats, notes=_unmeasured(ev, metrics, relearn))


def _recovery_stats(name: str, run: dict) -> dict:
    """A recovery's bootstrap interval over the rows asked (relearn.recovery_interval), when it has one."""
    if run.get("recovery") is None or not run.get("interval"):
        return {}
    low, high = run["interval"]
    return {name: {"ci_low": low, "ci_high": high, "n": run["asked_rows"]}}


def _leak_counts(evidence: list[dict]) -> tuple[int, int]:
    """(leaking generations, generations) of the black-box attacks: a greedy row counts one, a sampled row its
    samples."""
    leaked = sum(e.get("samples_leaked", int(e["leaked"])) for e in evidence)
    return leaked, sum(e.get("samples", 1) for e in evidence)


def _unmeasured(ev: EvalInput, metrics: dict, relearn: dict) -> dict[str, str]:
    """Why each metric without a value has none (the verdict shows it with the fix)."""
    from engine.compute.verify.relearn import MIN_MARGIN

    notes = {}
    if metrics["attack_leak_rate"] is None:
        notes["attack_leak_rate"] = "no attack prompt could be built from these rows"
    if metrics["incontext_leak_rate"] is None:
        notes["incontext_leak_rate"] = "one forget row: no other half of the forget set to give as context"
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
    for name in METRICS:  # the rest: say so rather than leave a blank
        if metrics.get(name) is None and name not in notes:
            notes[name] = "not measurable on these rows or this model"
    return notes
