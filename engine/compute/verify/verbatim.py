"""Verbatim-memorisation metrics (definitions as in MUSE and open-unlearning; our code): VerbMem for the unit
stage, extraction strength and exact memorisation for the reconstruction stage.

- verbmem_rouge_l, MUSE's VerbMem (Shi et al. 2024; muse_bench metrics/verbmem.py): for text rows
  (`{"text"}`, split into a prefix and its continuation by `engine.schema.datasets.as_qa`), the ROUGE-L
  F1 (no stemming, as MUSE's RougeEvalLogger) of the greedy continuation of the raw prefix against the
  true continuation cut to the generation budget in tokens; mean over text rows. Only reported when the
  forget set has text rows.
- exact_memorisation, open-unlearning's exact_memorization (Tirumala et al. 2022): per forget row, the
  share of answer tokens that are the model's top-1 prediction given the prompt and the gold tokens
  before them (teacher forcing); mean over rows.
- extraction_strength, open-unlearning's extraction_strength (Carlini et al. 2021): per row, 1 - k/n for
  n answer tokens and k the fewest leading gold tokens the model must be given before its top-1
  predictions reproduce all the rest; mean over rows. k = n (not even the last token) gives 0, where
  open-unlearning's loop stops at k = n - 1 and reports 1/n.

Answer tokens are the answer's content: the token that closes it (EOS, end of turn) is left out, as
open-unlearning leaves out the EOS prediction. Question rows are encoded as training encodes them
(`engine.compute.tokens.encode_qa`), text rows as the raw text. Both teacher-forced metrics read the
weights' logits: white-box (a guard does not change them)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.compute.verify.metrics import rouge_l_f1
from engine.compute.verify.stages import EvalInput


def verbmem(outputs: Sequence[str], rows: Sequence[dict], tokenizer, max_new_tokens: int) -> float | None:
    """Mean VerbMem ROUGE-L F1 over the text rows (`outputs`: each row's greedy continuation); None
    without text rows."""
    scores = []
    for output, row in zip(outputs, rows, strict=True):
        if not row.get("verbatim"):
            continue
        ids = tokenizer(row["answer"], add_special_tokens=False)["input_ids"][:max_new_tokens]
        truth = tokenizer.decode(ids, skip_special_tokens=True)
        scores.append(rouge_l_f1(output, truth))
    return sum(scores) / len(scores) if scores else None


def _encode(tokenizer, rows: list[dict], max_length: int):
    """Right-padded input_ids, attention_mask and labels on the answer content only."""
    from engine.compute.tokens import encode_qa, encode_texts, without_answer_ends

    if not rows[0].get("verbatim"):
        ids, att, labels = encode_qa(tokenizer, rows, max_length)
        return ids, att, without_answer_ends(labels, tokenizer)
    # A text row: the whole text as a text is encoded (special tokens included), labels on the continuation.
    ids, att, labels = encode_texts(tokenizer, [r["question"] + " " + r["answer"] for r in rows], max_length)
    for i, row in enumerate(rows):
        labels[i, : len(tokenizer(row["question"], add_special_tokens=True)["input_ids"])] = -100
    return ids, att, labels


def top1_hits(model, tokenizer, rows: Sequence[dict], batch_size: int = 32, max_length: int = 256) -> list[list[bool]]:
    """Per row, for each answer token in order: whether it is the model's top-1 next-token prediction."""
    from engine.compute.verify.scoring import _eval, _forward

    out: list[list[bool]] = [[] for _ in rows]
    groups = [[i for i, r in enumerate(rows) if bool(r.get("verbatim")) == text] for text in (False, True)]
    with _eval(model):
        for group in groups:
            for start in range(0, len(group), batch_size):
                idx = group[start : start + batch_size]
                ids, att, labels = _encode(tokenizer, [rows[i] for i in idx], max_length)
                predicted = _forward(model, ids, att).logits[:, :-1].argmax(-1).cpu()
                target = labels[:, 1:]
                for row, i in enumerate(idx):
                    scored = target[row] != -100
                    out[i] = (predicted[row][scored] == target[row][scored]).tolist()
    return out


def exact_memorisation(hits: list[bool]) -> float | None:
    """Share of answer tokens predicted top-1; None for an answer without tokens."""
    return sum(hits) / len(hits) if hits else None


def extraction_strength(hits: list[bool]) -> float | None:
    """1 - k/n, k the fewest leading tokens after which every prediction is right; None without tokens."""
    if not hits:
        return None
    k = len(hits)
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1.0 - k / len(hits)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def memorisation(ev: EvalInput) -> dict[str, float | None]:
    """extraction_strength and exact_memorisation of ev.model on every forget row (the reconstruction stage's)."""
    hits = top1_hits(ev.model, ev.tokenizer, ev.forget, batch_size=ev.batch_size)
    return {"extraction_strength": _mean([extraction_strength(h) for h in hits]),
            "exact_memorisation": _mean([exact_memorisation(h) for h in hits])}
