"""Neighbours the engine builds for a request that names none: questions of the same shape as the forget
questions about *other* entities, answered by the base model itself (greedy), so the methods can keep what the
base says there and the control stage can check that it still says it (`neighbour_rouge_l`, `neighbour_kl`).

Two sources, both plain question rewrites (no other model is asked):

- the request's retain questions (its retain set is about other entities by construction);
- the forget questions templated with other subjects: the subject is the longest capitalised phrase every
  forget question names ("Alma Rivera" in "What is Alma Rivera's phone number?"), the other subjects are the
  capitalised phrases of the retain questions ("What is the capital of Japan?" gives "Japan").

A candidate is dropped when it is a forget question, names the forget subject, or when the base's answer
leaks a sensitive string or a key span of a forget answer (`engine.leaks.key_spans`, and the attacks' own
`is_leak`): a neighbour never carries what is being erased."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from engine.compute.verify.split import question_key

# Enough to judge on and to train on, few enough to answer in seconds on a CPU.
MAX_NEIGHBOURS = 48
# Other subjects a forget question is templated with.
MAX_SUBJECTS = 4
_PHRASE = re.compile(r"\b[A-Z][\w’'-]*(?:\s+(?:[A-Z][\w’'-]*|de|da|van|von|del|of|the))*")
_TAIL = re.compile(r"(?:\s+(?:de|da|van|von|del|of|the))+$")


def phrases(question: str) -> list[str]:
    """The capitalised phrases of a question, its first word left out (capitalised as the sentence's start)."""
    body = question.strip()
    first = re.match(r"\S+\s*", body)
    offset = first.end() if first else 0
    found = []
    for m in _PHRASE.finditer(body[offset:]):
        text = _TAIL.sub("", re.sub(r"['’]s$", "", m.group().strip()))
        if len(text) >= 2:
            found.append(text)
    return found


def forget_subject(forget: Sequence[dict]) -> str | None:
    """The longest capitalised phrase every forget question names, or None."""
    common: set[str] | None = None
    for row in forget:
        mine = set(phrases(row["question"]))
        common = mine if common is None else common & mine
    return max(sorted(common), key=len) if common else None


def other_subjects(retain: Sequence[dict], subject: str, limit: int = MAX_SUBJECTS) -> list[str]:
    """Capitalised phrases of the retain questions that are not (and do not contain) the forget subject."""
    out: list[str] = []
    low = subject.lower()
    for row in retain:
        for p in phrases(row["question"]):
            if p not in out and low not in p.lower() and p.lower() not in low:
                out.append(p)
    return out[:limit]


def candidates(forget: Sequence[dict], retain: Sequence[dict]) -> list[dict]:
    """Neighbour questions to ask the base, {"question", "source": "template" | "retain"}, deduplicated, capped."""
    forget_keys = {question_key(r["question"]) for r in forget}
    qa_retain = [r for r in retain if not r.get("verbatim")]
    subject = forget_subject([r for r in forget if not r.get("verbatim")])
    retain_keys = {question_key(r["question"]) for r in qa_retain}
    rows: list[dict] = []
    if subject:  # first: the closest shape there is; a template that is a retain question counts as one
        for other in other_subjects(qa_retain, subject):
            for r in forget:
                question = r["question"].replace(subject, other)
                if not r.get("verbatim"):
                    rows.append({"question": question,
                                 "source": "retain" if question_key(question) in retain_keys else "template"})
    rows += [{"question": r["question"], "source": "retain"} for r in qa_retain]
    seen, out = set(forget_keys), []
    for row in rows:
        key = question_key(row["question"])
        if key in seen or (subject and subject.lower() in row["question"].lower()):
            continue
        seen.add(key)
        out.append(row)
    return out[:MAX_NEIGHBOURS]


def build_neighbours(base, tokenizer, forget: Sequence[dict], retain: Sequence[dict], sensitive: Sequence[str],
                     max_new_tokens: int, batch_size: int = 32) -> list[dict]:
    """{"question", "answer" (the base's greedy answer), "source"} rows; computed once per base and rows."""
    from engine.compute.verify import basecache

    key = ("neighbours", basecache.rows_key(forget), basecache.rows_key(retain),
           json.dumps(list(sensitive)), max_new_tokens)
    return basecache.cached(base, key, lambda: _build(base, tokenizer, forget, retain, sensitive, max_new_tokens,
                                                     batch_size))


def carries_erased(forget: Sequence[dict], sensitive: Sequence[str]):
    """A test of a neighbour's answer: does it carry what is being erased (a sensitive string, a key span of a
    forget answer — whether or not the request names strings — or a leak of a forget answer)?"""
    from engine.compute.verify.attacks import is_leak
    from engine.leaks import contains_sensitive, key_spans

    terms = list(sensitive) + key_spans(r["answer"] for r in forget)
    return lambda answer: bool(contains_sensitive(answer, terms)
                               or any(is_leak(answer, f["answer"], sensitive) for f in forget))


def _build(base, tokenizer, forget, retain, sensitive, max_new_tokens, batch_size) -> list[dict]:
    from engine.compute.generation import greedy

    erased = carries_erased(forget, sensitive)
    asked = candidates(forget, retain)
    answers = greedy(base, tokenizer, [r["question"] for r in asked], max_new_tokens=max_new_tokens,
                     batch_size=batch_size)
    out = []
    for row, answer in zip(asked, answers, strict=True):
        answer = answer.strip()
        if answer and not erased(answer):
            out.append({"question": row["question"], "answer": answer, "source": row["source"]})
    return out


def supplied_neighbours(forget: Sequence[dict], neighbours: Sequence[dict], sensitive: Sequence[str]) -> list[dict]:
    """The request's own neighbours ({"question", "answer"} rows, `source` "supplied"), less any that would
    keep what is being erased: a forget question, or an answer naming a sensitive string or a forget answer's
    key span (the same rule as for built ones)."""
    erased = carries_erased(forget, sensitive)
    forget_keys = {question_key(r["question"]) for r in forget}
    return [{"question": r["question"], "answer": r["answer"], "source": "supplied"} for r in neighbours
            if question_key(r["question"]) not in forget_keys and not erased(r["answer"])]


def kept_rows(base, tokenizer, forget: Sequence[dict], retain: Sequence[dict], sensitive: Sequence[str],
              max_new_tokens: int, batch_size: int = 32, supplied: Sequence[dict] = ()) -> tuple[dict, dict, dict]:
    """What a job keeps, split out of sample: (EvalInput's retain_judged / retain_trained / neighbours /
    neighbours_trained, the split plan for the manifest, a summary of the neighbours). The request's own
    neighbours (`supplied`) replace the built ones."""
    from engine.compute.verify.split import pick, split_plan

    qa_supplied = [r for r in supplied if "question" in r]
    if qa_supplied:
        neighbours = supplied_neighbours(forget, qa_supplied, sensitive)
    else:
        neighbours = build_neighbours(base, tokenizer, forget, retain, sensitive, max_new_tokens, batch_size)
    plan = split_plan(retain, neighbours)
    kept = {"retain_judged": pick(retain, plan["retain"]["judged"]),
            "retain_trained": pick(retain, plan["retain"]["trained"]),
            "neighbours": pick(neighbours, plan["neighbours"]["judged"]),
            "neighbours_trained": pick(neighbours, plan["neighbours"]["trained"])}
    built = {"built": len(neighbours), "from_retain": sum(r["source"] == "retain" for r in neighbours),
             "templated": sum(r["source"] == "template" for r in neighbours),
             "supplied": sum(r["source"] == "supplied" for r in neighbours),
             "supplied_dropped": len(qa_supplied) - len(neighbours) if qa_supplied else 0,
             "trained": len(kept["neighbours_trained"]), "judged": len(kept["neighbours"])}
    return kept, plan, built
