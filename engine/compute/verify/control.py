"""Control stage: is everything else intact?

Judged on rows the method did not train on (engine.compute.verify.split): the held-out retain rows
(`retain_rouge_l`, `retain_prob`, `retain_kl`) and the held-out built neighbours (`neighbour_rouge_l` against
the base's own answers, `neighbour_kl`). The retain rows the method trained on are measured too
(`retain_trained_rouge_l`, `retain_trained_prob`), reported only: a rise there beyond the base is
memorisation (engine.compute.verify.memorisation), not a kept fact."""

from __future__ import annotations

import math

from engine.compute.generation import greedy
from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
from engine.compute.verify.stages import QUICK_GENERAL_TEXTS, EvalInput, Measurement

NAME = "control"


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify.scoring import text_nll

    judged = ev.retain if ev.retain_judged is None else ev.retain_judged
    metrics, notes, evidence = {}, {}, []
    if judged:
        answers = _answers(ev, judged)
        metrics["retain_rouge_l"] = mean_rouge_l_recall(answers, [r["answer"] for r in judged])
        metrics["retain_prob"] = _probability(ev, judged)
        evidence += [{"attack": "retain", "prompt": r["question"], "output": a, "leaked": False, "spans": []}
                     for r, a in list(zip(judged, answers, strict=True))[:20]]
    else:
        for name in ("retain_rouge_l", "retain_prob"):
            metrics[name], notes[name] = None, "no held-out retain rows to judge on"
    general = ev.general_text[:QUICK_GENERAL_TEXTS] if ev.profile == "quick" else ev.general_text
    if general:
        text_nlls = text_nll(ev.model, ev.tokenizer, general, batch_size=ev.batch_size)
        metrics["general_ppl"] = math.exp(sum(text_nlls) / len(text_nlls))
    else:
        metrics["general_ppl"], notes["general_ppl"] = None, "no general text was given to measure perplexity on"
    metrics["retain_kl"] = _kl(ev, judged) if judged else None
    if not judged:
        notes["retain_kl"] = "no held-out retain rows to judge on"
    if ev.neighbours:
        answers = _answers(ev, ev.neighbours)
        metrics["neighbour_rouge_l"] = mean_rouge_l_recall(answers, [r["answer"] for r in ev.neighbours])
        metrics["neighbour_kl"] = _kl(ev, ev.neighbours)
        evidence += [{"attack": "neighbour", "prompt": r["question"], "output": a, "leaked": False, "spans": []}
                     for r, a in list(zip(ev.neighbours, answers, strict=True))[:20]]
    else:
        for name in ("neighbour_rouge_l", "neighbour_kl"):
            metrics[name], notes[name] = None, "no neighbours were built (no retain questions to build them from)"
    if ev.retain_trained:
        answers = _answers(ev, ev.retain_trained)
        metrics["retain_trained_rouge_l"] = mean_rouge_l_recall(answers, [r["answer"] for r in ev.retain_trained])
        metrics["retain_trained_prob"] = _probability(ev, ev.retain_trained)
    return Measurement(metrics=metrics, evidence=evidence, notes=notes)


def _answers(ev: EvalInput, rows: list[dict]) -> list[str]:
    return greedy(ev.model, ev.tokenizer, [r["question"] for r in rows], guard=ev.guard,
                  max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)


def _probability(ev: EvalInput, rows: list[dict]) -> float:
    from engine.compute.verify.scoring import answer_nlls

    nlls = answer_nlls(ev.model, ev.tokenizer, rows, batch_size=ev.batch_size)
    return sum(answer_probability(n) for n in nlls) / len(nlls)


def _kl(ev: EvalInput, rows: list[dict]) -> float:
    from engine.compute.verify.scoring import mean_token_kl

    # KL to the base is zero by definition for the base itself.
    if ev.base_model is None:
        return 0.0
    return mean_token_kl(ev.model, ev.base_model, ev.tokenizer, rows, batch_size=ev.batch_size)
