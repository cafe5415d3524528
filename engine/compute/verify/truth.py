"""TOFU's model-level evaluation over its perturbed files (Maini et al. 2024; definitions as in
locuslab/open-unlearning), batched: one scoring pass per answer set, one generation pass per split.

Per split (rows with "question", "answer" and, where the file has them, "paraphrased_answer" and
"perturbed_answer" [a list]):

- prob: mean length-normalised answer probability exp(-mean token NLL). On real authors and world
  facts TOFU normalises it over the answer options: P(a) / (P(a) + sum P(perturbed)).
- rouge_l: mean ROUGE-L recall of greedy answers against the gold answers.
- truth ratios: per row, geometric mean of the perturbed answers' normalised probabilities over the
  paraphrased (or, without one, the gold) answer's (`metrics.truth_ratio`); aggregated as
  mean(min(R, 1/R)) on a forget set and mean(max(0, 1 - R)) elsewhere (`metrics.truth_ratio_score`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.compute.generation import greedy
from engine.compute.verify.metrics import (
    answer_probability,
    answer_probability_with_options,
    mean_rouge_l_recall,
    truth_ratio,
    truth_ratio_score,
)


def _nlls(model, tokenizer, questions: Sequence[str], answers: Sequence[str], batch_size: int) -> list[float]:
    from engine.compute.verify.scoring import answer_nlls

    items = [{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True)]
    return answer_nlls(model, tokenizer, items, batch_size=batch_size) if items else []


def _perturbed_nlls(model, tokenizer, rows: Sequence[dict], batch_size: int) -> list[list[float]]:
    """Per row, the mean token NLL of each perturbed (wrong) answer; [] for a row without any."""
    flat = [(i, w) for i, r in enumerate(rows) for w in (r.get("perturbed_answer") or [])]
    nlls = _nlls(model, tokenizer, [rows[i]["question"] for i, _ in flat], [w for _, w in flat], batch_size)
    per_row: list[list[float]] = [[] for _ in rows]
    for (i, _), nll in zip(flat, nlls, strict=True):
        per_row[i].append(nll)
    return per_row


def truth_ratios(model, tokenizer, rows: Sequence[dict], batch_size: int = 32,
                 gold_nlls: Sequence[float] | None = None, wrong_nlls: Sequence[list[float]] | None = None) -> list[float]:
    """Per row with perturbed answers: TOFU's truth ratio against the paraphrased answer where the row
    has one, else against the gold answer (real authors, world facts). Precomputed NLLs are reused."""
    rows = list(rows)
    wrong = wrong_nlls if wrong_nlls is not None else _perturbed_nlls(model, tokenizer, rows, batch_size)
    para_idx = [i for i, r in enumerate(rows) if r.get("paraphrased_answer")]
    correct: list[float | None] = list(gold_nlls) if gold_nlls is not None else [None] * len(rows)
    para = _nlls(model, tokenizer, [rows[i]["question"] for i in para_idx],
                 [rows[i]["paraphrased_answer"] for i in para_idx], batch_size)
    for i, nll in zip(para_idx, para, strict=True):
        correct[i] = nll
    missing = [i for i, c in enumerate(correct) if c is None]
    for i, nll in zip(missing, _nlls(model, tokenizer, [rows[i]["question"] for i in missing],
                                     [rows[i]["answer"] for i in missing], batch_size), strict=True):
        correct[i] = nll
    return [truth_ratio(c, w) for c, w in zip(correct, wrong, strict=True) if w]


def evaluate_split(model, tokenizer, rows: Sequence[dict], kind: str, *, guard=None, batch_size: int = 32,
                   max_new_tokens: int = 64, options_prob: bool = False) -> dict:
    """{"prob", "rouge_l", "truth_ratio" (aggregate), "truth_ratios" (per row), "outputs"} for one split.

    kind: "forget" (a truth ratio closer to 1 is better) or "retain" (a low ratio, the truth preferred,
    is better). options_prob: normalise the probability over the answer options (real authors, world facts)."""
    rows = list(rows)
    questions = [r["question"] for r in rows]
    gold = [r["answer"] for r in rows]
    outputs = greedy(model, tokenizer, questions, guard=guard, max_new_tokens=max_new_tokens, batch_size=batch_size)
    gold_nll = _nlls(model, tokenizer, questions, gold, batch_size)
    wrong = _perturbed_nlls(model, tokenizer, rows, batch_size)
    if options_prob:
        probs = [answer_probability_with_options(c, w) for c, w in zip(gold_nll, wrong, strict=True)]
    else:
        probs = [answer_probability(n) for n in gold_nll]
    probs = [p for p in probs if not math.isnan(p)]
    ratios = truth_ratios(model, tokenizer, rows, batch_size, gold_nlls=gold_nll, wrong_nlls=wrong)
    return {
        "prob": sum(probs) / len(probs) if probs else math.nan,
        "rouge_l": mean_rouge_l_recall(outputs, gold),
        "truth_ratio": truth_ratio_score(ratios, kind) if ratios else math.nan,
        "truth_ratios": ratios,
        "outputs": outputs,
    }
