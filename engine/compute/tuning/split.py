"""The validation split tuning judges its trials on, held apart from what the job's result is judged on.

- forget: a share of the forget rows (at least one, when there are 3 or more) is held out of every trial's
  training; a trial is judged on whether the facts it was *not* trained on are gone too (does it erase the
  subject, not just the strings?). Every forget row has to be erased, so the winner's own run trains on all of
  them, and the unit stage judges all of them.
- retain: a share of the retain rows is held out of every trial's training *and* of the job's result: trials are
  judged on them, and the winner's run neither trains on them nor is judged on them, so control's final verdict
  is not on the rows that chose the winner.

Plain Python, seeded: the same rows and seed give the same split."""

from __future__ import annotations

import random
from dataclasses import dataclass

FORGET_SHARE = 0.25
RETAIN_SHARE = 0.2
RETAIN_MAX = 16  # rows: the proxy scores them every few steps, so it stays seconds


@dataclass(frozen=True)
class ValidationSplit:
    forget_train: list[dict]  # what each trial unlearns
    forget_validation: list[dict]  # what each trial is judged on (held out of its training, when there are enough)
    retain_train: list[dict]  # the retain term's rows, for trials and for the winner's run
    retain_validation: list[dict]  # judged by trials only; never trained on, never in the final verdict

    @property
    def forget_in_sample(self) -> bool:
        """Too few forget rows to hold any out: the trials are judged on the rows they trained on."""
        return self.forget_train is self.forget_validation

    def record(self) -> dict:
        """What the job's result and the report say about the split (counts only: the rows are personal data)."""
        return {"forget_train": len(self.forget_train), "forget_validation": len(self.forget_validation),
                "forget_in_sample": self.forget_in_sample, "retain_train": len(self.retain_train),
                "retain_validation": len(self.retain_validation)}


def _held(n: int, share: float, cap: int | None = None) -> int:
    k = max(1, round(n * share))
    return min(k, cap) if cap else k


def validation_split(forget: list[dict], retain: list[dict], seed: int = 0) -> ValidationSplit:
    rng = random.Random(f"expunge-tuning-split:{seed}")
    forget_order = rng.sample(range(len(forget)), len(forget))
    if len(forget) >= 3:
        k = _held(len(forget), FORGET_SHARE)
        held = set(forget_order[:k])
        f_train = [r for i, r in enumerate(forget) if i not in held]
        f_val = [r for i, r in enumerate(forget) if i in held]
    else:
        f_train = f_val = list(forget)
    retain_order = rng.sample(range(len(retain)), len(retain))
    if len(retain) >= 2:
        held = set(retain_order[:_held(len(retain), RETAIN_SHARE, RETAIN_MAX)])
        r_train = [r for i, r in enumerate(retain) if i not in held]
        r_val = [r for i, r in enumerate(retain) if i in held]
    else:  # one retain row (or none): nothing to hold out; the proxy judges it in sample
        r_train, r_val = list(retain), list(retain)
    return ValidationSplit(f_train, f_val, r_train, r_val)
