"""Unit stage: are the targeted outputs gone?

Each forget row is asked directly (greedy, through the deployed guard if any): a question in the job's
prompt format; a text row (`{"text"}`, split by `engine.schema.datasets.as_qa`) as its raw prefix, whose
continuation is scored (MUSE's VerbMem setting, not the text wrapped as a question).

- forget_rouge_l: mean ROUGE-L recall of the answers against the gold answers (continuations);
- leak_rate: share of answers containing a sensitive string;
- forget_prob: mean length-normalised answer probability (white-box; None for a guard-only candidate,
  whose weights are the base's);
- verbmem_rouge_l (with text rows only): MUSE's VerbMem, `engine.compute.verify.verbatim.verbmem`."""

from __future__ import annotations

import time

from engine.compute.generation import greedy
from engine.compute.prompting import format_prompt
from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall, rate_stats
from engine.compute.verify.stages import EvalInput, Measurement
from engine.leaks import leak_spans

NAME = "unit"


def direct_prompts(rows: list[dict], tokenizer) -> list[str]:
    """The prompt each row is asked with: its question in the job's format, or a text row's raw prefix."""
    return [r["question"] if r.get("verbatim") else format_prompt(r["question"], tokenizer) for r in rows]


def direct_answers(ev: EvalInput, model, guard) -> list[tuple[str, list[tuple[int, int]]]]:
    """Per forget row, the greedy answer of `model` (through `guard`) and where it leaks (empty: it does not)."""
    answers = greedy(model, ev.tokenizer, direct_prompts(ev.forget, ev.tokenizer), guard=guard, raw_prompts=True,
                     max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)
    return [(a, leak_spans(a, ev.sensitive)) for a in answers]


def direct_metrics(ev: EvalInput, answers: list[tuple[str, list]]) -> dict[str, float]:
    """forget_rouge_l and leak_rate of `direct_answers`."""
    leaks = [bool(spans) for _, spans in answers]
    return {
        "forget_rouge_l": mean_rouge_l_recall([a for a, _ in answers], [r["answer"] for r in ev.forget]),
        "leak_rate": sum(leaks) / len(leaks) if leaks else 0.0,
    }


def measure(ev: EvalInput) -> Measurement:
    from engine.compute.verify import verbatim

    started = time.perf_counter()
    answers = direct_answers(ev, ev.model, ev.guard)
    metrics = direct_metrics(ev, answers)
    # A guard leaves the weights as they are: forget_prob is then the base's, which is what a remove request
    # must be judged on (a suppress request is not judged on this white-box figure).
    from engine.compute.verify.scoring import answer_nlls

    nlls = answer_nlls(ev.model, ev.tokenizer, ev.forget, batch_size=ev.batch_size)
    metrics["forget_prob"] = sum(answer_probability(n) for n in nlls) / len(nlls)
    timings = {"direct": round(time.perf_counter() - started, 3)}
    memorised = verbatim.verbmem([a for a, _ in answers], ev.forget, ev.tokenizer, ev.max_new_tokens)
    if memorised is not None:
        metrics["verbmem_rouge_l"] = memorised
    evidence = [{"attack": "direct", "prompt": r["question"], "output": a, "leaked": bool(sp), "spans": sp}
                for r, (a, sp) in zip(ev.forget, answers, strict=True)]
    leaks = [bool(sp) for _, sp in answers]
    return Measurement(metrics=metrics, evidence=evidence, timings=timings,
                       stats={"leak_rate": rate_stats(sum(leaks), len(leaks))})
