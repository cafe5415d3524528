"""Locate: at which layers do the forget answers become decodable? A logit-lens pass over the forget
prompts (engine.compute.verify.scoring.logit_lens) picks the layers tier 2 edits, and the console charts it.

Layer numbering: the lens rows count hidden states (row 0 = embeddings, row i = output of decoder
block i-1, the last row = the model's real output). `pick_layer` answers in decoder-block indices
(0-based), the numbering the RMU hyperparameter `layer` uses."""

from __future__ import annotations

from collections.abc import Sequence


def locate(model, tokenizer, forget: Sequence[dict], batch_size: int = 32) -> list[dict]:
    """Per hidden state {"layer","prob","rank","top1"} of the gold forget answers under the logit lens."""
    from engine.compute.verify.scoring import logit_lens

    return logit_lens(model, tokenizer, list(forget), batch_size=batch_size)


def pick_layer(rows: Sequence[dict], share: float = 0.5) -> int:
    """The decoder block at whose output the gold answer first reaches `share` of its final probability.

    Clamped to >= 2 so that the blocks l-2..l that RMU updates exist; a model with fewer than three
    blocks gets its last block (and RMU then updates the blocks it has)."""
    if len(rows) < 2:
        raise ValueError("pick_layer needs the lens rows of at least one decoder block")
    rows = sorted(rows, key=lambda r: r["layer"])
    n_blocks = len(rows) - 1
    final = rows[-1]["prob"]
    lens_layer = next((r["layer"] for r in rows if r["prob"] >= share * final), rows[-1]["layer"])
    block = max(0, lens_layer - 1)
    return min(max(block, 2), n_blocks - 1)
