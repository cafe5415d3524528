"""What a job on a model version keeps of the line (issue 14): the forget prompts of every request the version
already carries, answered by the version itself.

The method trains on them with its retain rows, so that erasing the next request does not bring an earlier one
back (MUSE's "sustainability": each erasure must hold as others land). Without them the only thing holding an
earlier erasure is chance: on the demo model, request 7 of bench/lineage.py made request 6 leak again and its
accept was refused. The regression check at accept judges the same prompts, through the merged weights.

An answer that leaks its own request's key spans (a request accepted while it still leaked) is not kept, nor
one that carries what the job now erases, nor a prompt that is one of the job's own forget questions. An empty
answer is kept: saying nothing is what the version does there."""

from __future__ import annotations

from collections.abc import Sequence


def line_rows(model, tokenizer, line: Sequence[dict], forget: Sequence[dict], sensitive: Sequence[str],
              max_new_tokens: int, batch_size: int = 32) -> tuple[list[dict], dict]:
    """({"question", "answer" (the version's greedy answer)} rows to keep, a summary for the manifest: the requests,
    their prompts, how many were kept, dropped, and dropped because the answer leaks its request's key spans)."""
    from engine.compute.generation import greedy
    from engine.compute.verify.neighbours import carries_erased
    from engine.compute.verify.split import question_key
    from engine.leaks import leak_spans

    erased = carries_erased(forget, sensitive)
    own = {question_key(r["question"]) for r in forget}
    asked = [(entry, p["question"]) for entry in line for p in entry["prompts"] if question_key(p["question"]) not in own]
    answers = greedy(model, tokenizer, [q for _, q in asked], max_new_tokens=max_new_tokens,
                     batch_size=batch_size) if asked else []
    rows, leaking = [], 0
    for (entry, question), answer in zip(asked, answers, strict=True):
        answer = answer.strip()
        if leak_spans(answer, entry["spans"]):
            leaking += 1
        elif not (answer and erased(answer)):
            rows.append({"question": question, "answer": answer})
    prompts = sum(len(e["prompts"]) for e in line)
    summary = {"requests": [e["request_id"] for e in line], "prompts": prompts, "kept": len(rows),
               "dropped": prompts - len(rows), "dropped_leaking": leaking}
    return rows, summary
