"""Control stage: is everything else intact?"""

from __future__ import annotations

import math

from engine.compute.generation import greedy
from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
from engine.compute.verify.stages import QUICK_GENERAL_TEXTS, EvalInput, Measurement

NAME = "control"


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify.scoring import answer_nlls, mean_token_kl, text_nll

    questions = [r["question"] for r in ev.retain]
    answers = greedy(ev.model, ev.tokenizer, questions, guard=ev.guard, max_new_tokens=ev.max_new_tokens,
                     batch_size=ev.batch_size)
    nlls = answer_nlls(ev.model, ev.tokenizer, ev.retain, batch_size=ev.batch_size)
    metrics = {
        "retain_rouge_l": mean_rouge_l_recall(answers, [r["answer"] for r in ev.retain]),
        "retain_prob": sum(answer_probability(n) for n in nlls) / len(nlls),
    }
    general = ev.general_text[:QUICK_GENERAL_TEXTS] if ev.profile == "quick" else ev.general_text
    notes = {}
    if general:
        text_nlls = text_nll(ev.model, ev.tokenizer, general, batch_size=ev.batch_size)
        metrics["general_ppl"] = math.exp(sum(text_nlls) / len(text_nlls))
    else:
        metrics["general_ppl"], notes["general_ppl"] = None, "no general text was given to measure perplexity on"
    # KL to the base is zero by definition for the base itself.
    metrics["retain_kl"] = (mean_token_kl(ev.model, ev.base_model, ev.tokenizer, ev.retain, batch_size=ev.batch_size)
                            if ev.base_model is not None else 0.0)
    evidence = [{"attack": "retain", "prompt": q, "output": a, "leaked": False, "spans": []}
                for q, a in list(zip(questions, answers, strict=True))[:20]]
    return Measurement(metrics=metrics, evidence=evidence, notes=notes)
