"""The out-of-sample split of the rows a job keeps: the request's retain rows and the built neighbours each go
either to the part the method trains on or to the part the control stage judges, never both.

Deterministic and seeded: a row's side depends only on its question (normalised), the seed and the share, so
the same rows split the same way in every job of a request (its tiers are judged on the same held-out rows,
and the cached 'before' measurement stays valid), and a retain row and the neighbour built from the same
question land on the same side (a judged neighbour is never a question the method trained on under its gold
answer). Plain Python: the split is recorded in the artifact's manifest and the report reads it back."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

SPLIT_SEED = 0
# Half the rows judged: enough held-out rows to judge on, enough trained ones to keep.
JUDGED_SHARE = 0.5


def question_key(question: str) -> str:
    """The question as the split sees it: case and spacing do not move a row to the other side."""
    return " ".join(question.lower().split())


def _rank(question: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}|{question_key(question)}".encode()).hexdigest()


def judged_questions(questions: Sequence[str], seed: int = SPLIT_SEED, share: float = JUDGED_SHARE) -> set[str]:
    """The question keys judged: the `share` of the distinct questions (at least one) with the lowest seeded
    hash. A single question is judged: an untrained row is worth more to the verdict than a trained one."""
    keys = sorted({question_key(q) for q in questions}, key=lambda k: _rank(k, seed))
    if not keys:
        return set()
    return set(keys[: max(1, math.ceil(share * len(keys)))])


def split_rows(rows: Sequence[dict], judged: set[str]) -> tuple[list[int], list[int]]:
    """(trained indices, judged indices) of `rows` by the judged question keys."""
    trained, held = [], []
    for i, row in enumerate(rows):
        (held if question_key(row["question"]) in judged else trained).append(i)
    return trained, held


def split_plan(retain: Sequence[dict], neighbours: Sequence[dict], seed: int = SPLIT_SEED,
               share: float = JUDGED_SHARE) -> dict:
    """The split of a job's kept rows, as recorded in its manifest: per set, the trained and judged row indices
    (retain: into the request's retain rows; neighbours: into the built neighbours, in build order)."""
    judged = judged_questions([r["question"] for r in [*retain, *neighbours]], seed, share)
    plan = {"seed": seed, "judged_share": share}
    for name, rows in (("retain", retain), ("neighbours", neighbours)):
        trained, held = split_rows(rows, judged)
        plan[name] = {"trained": trained, "judged": held}
    return plan


def pick(rows: Sequence[dict], indices: Sequence[int]) -> list[dict]:
    return [rows[i] for i in indices]
