"""Unit stage: are the targeted outputs gone?"""

from __future__ import annotations

from engine.compute.generation import greedy
from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall, rate_stats
from engine.compute.verify.stages import EvalInput, Measurement
from engine.leaks import leak_spans

NAME = "unit"


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify.scoring import answer_nlls

    questions = [r["question"] for r in ev.forget]
    answers = greedy(ev.model, ev.tokenizer, questions, guard=ev.guard, max_new_tokens=ev.max_new_tokens,
                     batch_size=ev.batch_size)
    spans = [leak_spans(a, ev.sensitive) for a in answers]  # where each answer leaks (empty: it does not)
    leaks = [bool(s) for s in spans]
    # A guard leaves the weights as they are: forget_prob is then the base's, which is what a remove request
    # must be judged on (a suppress request is not judged on this white-box figure).
    nlls = answer_nlls(ev.model, ev.tokenizer, ev.forget, batch_size=ev.batch_size)
    metrics = {
        "forget_rouge_l": mean_rouge_l_recall(answers, [r["answer"] for r in ev.forget]),
        "leak_rate": sum(leaks) / len(leaks),
        "forget_prob": sum(answer_probability(n) for n in nlls) / len(nlls),
    }
    evidence = [{"attack": "direct", "prompt": q, "output": a, "leaked": leak, "spans": sp}
                for q, a, leak, sp in zip(questions, answers, leaks, spans, strict=True)]
    return Measurement(metrics=metrics, evidence=evidence, stats={"leak_rate": rate_stats(sum(leaks), len(leaks))})
