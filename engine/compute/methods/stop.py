"""The methods' early-stop rule: end an unlearning run once the forget answers are gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

STOP_BATCH = 64

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.compute.methods.base import RunContext


def forget_rouge_stop(ctx: RunContext, share: float, every: int) -> Callable:
    """A stop rule on the unit stage's own targets: every `every` steps, stop once the forget answers'
    greedy ROUGE-L recall and their gold-answer probability are each at most `share` of the base
    model's and no greedy answer leaks (Jang et al. 2023 stop GA on memorisation accuracy; a forget
    ROUGE-L already halved can still carry a phone number, or a probability that gives it back)."""
    from engine.compute.generation import greedy
    from engine.compute.prompting import max_answer_tokens
    from engine.compute.verify.attacks import is_leak
    from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
    from engine.compute.verify.scoring import answer_nlls

    questions = [r["question"] for r in ctx.forget]
    golds = [r["answer"] for r in ctx.forget]
    # The unit stage's own budget: an instruct model says the fact at the end of a sentence, past a budget
    # sized to a short gold answer.
    budget = max_answer_tokens(ctx.tokenizer, ctx.forget + ctx.retain)

    def probability(model) -> float:
        nlls = answer_nlls(model, ctx.tokenizer, ctx.forget)
        return sum(answer_probability(n) for n in nlls) / len(nlls)

    # The check runs at every step: the forget questions in one generation batch where they fit in STOP_BATCH
    # (a run's cost on CPU is per generated token and batch, not per row: TOFU forget01's 40 rows took 2 batches).
    batch = min(STOP_BATCH, len(questions))
    rouge_before = mean_rouge_l_recall(greedy(ctx.model, ctx.tokenizer, questions, max_new_tokens=budget,
                                              batch_size=batch), golds)
    prob_before = probability(ctx.model)

    def check(model, step: int, loss: float) -> dict | None:
        if step % every:
            return None
        answers = greedy(model, ctx.tokenizer, questions, max_new_tokens=budget, batch_size=batch)
        rouge = mean_rouge_l_recall(answers, golds)
        if rouge > share * rouge_before or any(is_leak(a, g, ctx.sensitive) for a, g in zip(answers, golds, strict=True)):
            return None
        prob = probability(model)
        if prob > share * prob_before:
            return None
        return {"reason": "the forget answers are gone: ROUGE-L and probability at the target, nothing leaks",
                "forget_rouge": round(rouge, 4), "forget_rouge_before": round(rouge_before, 4),
                "forget_prob": round(prob, 4), "forget_prob_before": round(prob_before, 4)}

    return check
