"""Where the base model states an answer: each question row's lead-in.

TOFU and open-unlearning score a gold answer right after the prompt. A model fine-tuned on the rows
(TOFU's, the demo's) answers that way; an instruct model does not: asked "What is the capital of France?",
SmolLM2 says "The capital of France is Paris.", so the probability of a bare "Paris" as the first tokens is
near zero for a fact it knows as for one it never saw, and every white-box figure built on it (answer
probability, Min-K%++, the logit lens, extraction strength) shows no signal, while training on the bare
form pushes on a probability that was never there.

So each answer is scored, and trained on, where the base model would say it: after a lead-in taken from the
base's own greedy answer to the row's question, cut at a space, that makes the gold answer most likely
(mean log-probability of its tokens), where it makes it at least ten times likelier than the bare form; else
the bare form (the demo model's rows, which it answers with the gold sentence itself or one shaped like it). A
lead-in never holds the answer itself or a sensitive string, so nothing erased is given to the model as context. The lead-ins are chosen once, on the untouched base,
and fixed: the 'before' and every candidate are scored in the same context.

`engine.compute.tokens.encode_qa` reads the row's "lead_in": the lead-in joins the prompt (no loss on it)
and the answer follows it after a space. Scores read the answer's tokens alone, and so does unlearning (what is
pushed down is the answer where the model says it, not the words around it); training a model to say the answer
(the retain rows a method keeps, the relearning attack) also has the rest of the base's sentence ("lead_out") and
the closing token, so a model fine-tuned on "Paris" there learns to end the sentence rather than to say
"Paris Paris Paris"."""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.compute.generation import greedy
from engine.compute.prompting import answer_end_ids, format_prompt
from engine.leaks import contains_sensitive

MAX_WORDS = 24  # lead-in candidates: cuts at the first this many spaces of the base's answer
MARGIN = math.log(10)  # a lead-in is taken when it makes the answer's tokens at least 10x likelier (geometric mean)


def candidates(answer_said: str, gold: str, sensitive: Sequence[str]) -> list[str]:
    """The lead-ins a row may get from the base's answer `answer_said`: "" and each prefix ending before a
    space, among the first MAX_WORDS, that holds neither the gold answer nor a sensitive string and is not how
    the gold answer itself begins (a gold sentence, "Alma's phone number is …", has its lead-in in it)."""
    out = [""]
    if answer_said.strip().casefold().startswith(gold.strip().casefold()):
        return out  # said bare (the demo's rows, the built neighbours: the base's own answers)
    banned = [*sensitive, gold]
    for i, ch in enumerate(answer_said):
        if len(out) > MAX_WORDS:
            break
        if ch != " " or not answer_said[:i].strip():
            continue
        lead = answer_said[:i].strip()
        if contains_sensitive(lead, banned):
            break  # every longer prefix holds it too
        if not gold.casefold().startswith(lead.casefold()):  # a gold sentence that opens the same way has its own
            out.append(lead)
    return out


def lead_out(answer_said: str, lead: str, gold: str) -> str:
    """What the base says after the gold answer, to the end of that sentence (at most MAX_WORDS words), when its
    answer goes on from `lead` with the gold answer; "" otherwise. Training targets end the sentence with it."""
    rest = answer_said[len(lead):].lstrip() if answer_said.startswith(lead) else ""
    if not lead or not rest.casefold().startswith(gold.strip().casefold()):
        return ""
    rest = rest[len(gold.strip()):]
    end = next((i + 1 for i, ch in enumerate(rest) if ch in ".!?\n"), len(rest))
    return " ".join(rest[:end].rstrip("\n").split(" ")[: MAX_WORDS + 1])


def find_lead_ins(model, tokenizer, rows: Sequence[dict], sensitive: Sequence[str], max_new_tokens: int,
                  batch_size: int = 32) -> dict[tuple[str, str], tuple[str, str]]:
    """{(question, answer): (lead-in, lead-out)} for the question rows of `rows` (text rows are continuations and
    keep their raw prefix): the candidate under which the base finds the gold answer most likely, and the rest of
    the base's sentence after it (`lead_out`)."""
    from engine.compute.verify.scoring import token_logprobs

    qa = list({(r["question"], r["answer"]): r for r in rows if not r.get("verbatim")}.values())
    if not qa:
        return {}
    said = greedy(model, tokenizer, [format_prompt(r["question"], tokenizer) for r in qa], raw_prompts=True,
                  max_new_tokens=max_new_tokens, batch_size=batch_size)
    said_by = {(r["question"], r["answer"]): s for r, s in zip(qa, said, strict=True)}
    options = {key: candidates(s, key[1], sensitive) for key, s in said_by.items()}
    # A row whose only candidate is the bare form (said bare: the demo model's rows) needs no scoring.
    trials = [(r, lead) for r in qa if len(options[(r["question"], r["answer"])]) > 1
              for lead in options[(r["question"], r["answer"])]]
    scored = [dict(r, lead_in=lead) for r, lead in trials]
    logprobs = token_logprobs(model, tokenizer, scored, batch_size=batch_size) if scored else []
    closing = len(answer_end_ids(tokenizer))
    best: dict[tuple[str, str], tuple[float, str]] = {key: (0.0, "") for key, o in options.items() if len(o) == 1}
    for (row, lead), lps in zip(trials, logprobs, strict=True):
        content = lps if lead else lps[: len(lps) - closing]  # the bare form also scores its closing token
        if not content:
            continue
        # The bare form (tried first) stands unless a lead-in makes the answer clearly likelier: a model that
        # states answers in sentences gains orders of magnitude; a near tie between two poor contexts is noise.
        mean = sum(content) / len(content) - (MARGIN if lead else 0.0)
        key = (row["question"], row["answer"])
        if key not in best or mean > best[key][0]:  # ties keep the shorter lead-in (tried first)
            best[key] = (mean, lead)
    return {key: (lead, lead_out(said_by[key], lead, key[1])) for key, (_, lead) in best.items()}


def with_lead_ins(rows: Sequence[dict], table: dict[tuple[str, str], tuple[str, str]]) -> list[dict]:
    """`rows` with their lead-ins and lead-outs (rows the table does not know, or gives none, and text rows, as
    they are)."""
    out = []
    for r in rows:
        lead, rest = table.get((r.get("question"), r.get("answer")), ("", ""))
        out.append(dict(r, lead_in=lead, lead_out=rest) if lead and not r.get("verbatim") else r)
    return out


def summary(rows_by_kind: dict[str, Sequence[dict]]) -> dict[str, str]:
    """Per kind of row, how many are scored after a lead-in: {"forget": "3 of 3", ...} (no texts: personal data)."""
    return {kind: f"{sum(bool(r.get('lead_in')) for r in rows)} of {len(rows)}"
            for kind, rows in rows_by_kind.items() if rows}
