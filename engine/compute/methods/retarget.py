"""Leak retargeting: a forget term that acts where the answer stands is routed around. UNDIAL lowers the
answer token after the base's own lead-in ("The language spoken in France is" -> "French"); on SmolLM2 the
trained model then said "The language spoken in France is a blend of French" and "L'Allemagne, also known as
French": the direct answer gone from its place, the fact still said (`bench/tune_trace.py --method undial
--answers` prints them).

So every few steps the training run asks the forget questions (greedy, as the unit stage asks them, and SAMPLES
times at temperature 1, as an attacker samples), and where an answer names a sensitive string (the leak check's
own spans), the text before it becomes a new forget row: the question, that text as the row's lead-in, the
string as its answer. The next steps lower the string where the
model now says it. Only the direct questions are asked: the attack prompts stay out of training, so the attacks
the reconstruction stage runs are still out of sample. The rows found are not checkpointed: a resumed run finds
them again."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_ROWS = 64  # retargeted rows per run: each is another forget row in every pass over the batches
SAMPLES = 4  # sampled answers per forget question at each check, beside the greedy one


def leak_rows(model, tokenizer, forget: list[dict], sensitive: list[str], max_new_tokens: int, samples: int = 0,
              seed: int = 0) -> list[dict]:
    """One forget row per answer that leaks, greedy and (`samples` per question, temperature 1, `seed`) sampled:
    {"question", "lead_in": the answer before its first leak span, "answer": the span's text} (lead-in empty where
    the answer starts with it: the row is then the bare question with that answer)."""
    from engine.compute.generation import generate, greedy
    from engine.compute.verify.attacks import leak_evidence

    questions = [r["question"] for r in forget]
    answers = [[a] for a in greedy(model, tokenizer, questions, max_new_tokens=max_new_tokens)]
    if samples:
        drawn = generate(model, tokenizer, questions, sample=True, num_samples=samples, temperature=1.0,
                         max_new_tokens=max_new_tokens, seed=seed)
        answers = [g + d for g, d in zip(answers, drawn, strict=True)]
    rows = []
    for row, said_all in zip(forget, answers, strict=True):
        for said in said_all:
            leaked, spans = leak_evidence(said, row["answer"], sensitive)
            if not leaked or not spans:
                continue
            start, end = min(spans)
            lead, answer = said[:start].rstrip(), said[start:end].strip()
            if answer:
                rows.append({"question": row["question"], "answer": answer, **({"lead_in": lead} if lead else {})})
    return rows


class LeakRetarget:
    """A hook for the training loop's stop slot (it never stops the run itself): every `every` steps, the forget
    rows' leaking answers join the forget batches (`extend(rows)`)."""

    def __init__(self, tokenizer, forget: list[dict], sensitive: list[str], max_new_tokens: int, every: int,
                 extend: Callable[[list[dict]], None]) -> None:
        self.tokenizer, self.forget, self.sensitive = tokenizer, forget, sensitive
        self.max_new_tokens, self.every, self.extend = max_new_tokens, max(1, int(every)), extend
        self.seen: set[tuple] = set()
        self.added: list[dict] = []

    def __call__(self, model, step: int, loss: float) -> None:
        if step % self.every or len(self.added) >= MAX_ROWS:
            return
        new = []
        for row in leak_rows(model, self.tokenizer, self.forget, self.sensitive, self.max_new_tokens,
                             samples=SAMPLES, seed=step):
            key = (row["question"], row.get("lead_in", ""), row["answer"])
            if key not in self.seen:
                self.seen.add(key)
                new.append(row)
        new = new[: MAX_ROWS - len(self.added)]
        if new:
            self.added += new
            self.extend(new)

    def summary(self) -> dict:
        """For the run's info: how many rows were added (no texts: they are the request's personal data)."""
        return {"retargeted_rows": len(self.added)}


def chained(first: Callable, then: Callable | None) -> Callable:
    """A stop slot that runs `first` (a hook) and then `then` (the run's stop rule, if any)."""

    def both(model, step: int, loss: float):
        first(model, step, loss)
        return then(model, step, loss) if then is not None else None

    return both
