"""Losses built from answer-token log-probabilities. A batch is a dict of row-aligned tensors,
`{prefix}input_ids`, `{prefix}attention_mask`, `{prefix}labels` (-100 except on the answer)."""

from __future__ import annotations

import torch

from engine.compute.modeling import evaluating


def logits_of(model, batch: dict, prefix: str = ""):
    return model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"]).logits


def answer_logprob(logits, labels):
    """Per row: (sum of log-probs of the labelled tokens, number of labelled tokens)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gold = labels[:, 1:]
    mask = gold != -100
    tok = logp.gather(-1, gold.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(1), mask.sum(1).clamp(min=1)


def nll(model, batch: dict, prefix: str = ""):
    """Mean over rows of the per-row mean answer NLL: the methods' fine-tuning loss."""
    s, n = answer_logprob(logits_of(model, batch, prefix), batch[f"{prefix}labels"])
    return (-(s / n)).mean()


def token_nll(model, batch: dict):
    """The model's own loss: the answer NLL averaged over every labelled token of the batch (building
    a target and the relearning attack train on it)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def reference_logprob(ref_model, data: dict, batch_size: int = 64, prefix: str = ""):
    """Sum answer log-probs of every row under the frozen base, computed once before training."""
    out = []
    device = next(ref_model.parameters()).device
    with evaluating(ref_model):
        n = data[f"{prefix}input_ids"].shape[0]
        for s in range(0, n, batch_size):
            batch = {k: v[s : s + batch_size].to(device) for k, v in data.items()}
            lp, _ = answer_logprob(logits_of(ref_model, batch, prefix), batch[f"{prefix}labels"])
            out.append(lp.float().cpu())
    return torch.cat(out)


def retain_kl(model, ref_model, batch: dict):
    """Mean token KL(base || model) over the retain rows' real tokens (prompt and answer)."""
    logits = logits_of(model, batch).float()
    with evaluating(ref_model):
        ref = logits_of(ref_model, batch).float()
    mask = batch["attention_mask"].bool()
    ref_logp = torch.log_softmax(ref, -1)[mask]
    logp = torch.log_softmax(logits, -1)[mask]
    return torch.nn.functional.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def retain_term(kind: str, model, ref_model, batch: dict | None):
    """The retain loss of a method ("nll" or "kl"); zero without retain rows."""
    if batch is None:
        return torch.zeros((), device=next(model.parameters()).device)
    return retain_kl(model, ref_model, batch) if kind == "kl" else nll(model, batch)


# ------------------------------------------------------------------ the cheap step
# The output head (hidden x vocabulary) is a fifth of a small model's forward and its logits the largest
# activation of the step; only the positions that predict a labelled token enter an answer loss, so the
# head runs on those alone ("packed"), and rows of several sources share one forward.


def joint(*batches: dict, prefix: str = "") -> tuple[dict, list[slice]]:
    """The rows of `batches` ({input_ids, attention_mask, labels}, right-padded) as one batch padded to
    the widest, and each batch's rows in it. Right padding keeps every row's real tokens blind to the
    padding, so each row's scores are its own, as in a forward of its batch alone."""
    keys = ("input_ids", "attention_mask", "labels")
    width = max(b[f"{prefix}input_ids"].shape[1] for b in batches)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    out: dict = {}
    for k in keys:
        parts = [torch.nn.functional.pad(b[f"{prefix}{k}"], (0, width - b[f"{prefix}{k}"].shape[1]), value=fill[k])
                 for b in batches]
        out[k] = torch.cat(parts)
    slices, start = [], 0
    for b in batches:
        n = b[f"{prefix}input_ids"].shape[0]
        slices.append(slice(start, start + n))
        start += n
    return out, slices


def _bins(lengths: list[int], cap: int) -> list[list[int]]:
    """Rows packed first-fit by decreasing length into bins of `cap` tokens (at least the longest row)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        b = next((b for b in range(len(bins)) if room[b] >= lengths[i]), None)
        if b is None:
            bins.append([])
            room.append(cap)
            b = len(bins) - 1
        bins[b].append(i)
        room[b] -= lengths[i]
    return bins


def _packed_hidden(inner, ids, mask, width: int | None = None):
    """The decoder's last hidden states of right-padded rows packed several to a sequence of `width`
    tokens (default: the longest row's) without padding between them, each restarting its position ids
    (transformers then masks attention block-diagonally, so a row sees only itself); returns
    (hidden (bins, width, H), bin of each row, start of each row)."""
    lengths = mask.sum(1).tolist()
    width = width or max(lengths)
    bins = _bins(lengths, width)
    flat = torch.zeros(len(bins), width, dtype=ids.dtype, device=ids.device)
    pos = torch.zeros(len(bins), width, dtype=torch.long, device=ids.device)
    where, start = [0] * len(lengths), [0] * len(lengths)
    for b, rows in enumerate(bins):
        at = 0
        for r in rows:
            flat[b, at : at + lengths[r]] = ids[r, : lengths[r]]
            pos[b, at : at + lengths[r]] = torch.arange(lengths[r])
            where[r], start[r] = b, at
            at += lengths[r]
        pos[b, at:] = torch.arange(width - at)  # the tail is a sequence of its own, never attended to
    hidden = inner.get_decoder()(input_ids=flat, position_ids=pos, use_cache=False).last_hidden_state
    return hidden, torch.tensor(where, device=ids.device), torch.tensor(start, device=ids.device)


def _gather(hidden, where, start, rows, cols):
    return hidden[where[rows], start[rows] + cols]


def _packing_ok(model, inner, ids, mask) -> bool:
    """Whether packed rows give the model's own logits: its logits are its output head applied to its
    decoder's last hidden state (true of Llama-style models; not of those that scale or soft-cap logits
    after the head) and its attention honours restarted position ids. Probed once per model on two rows,
    in eval mode without autograd, and remembered on the model."""
    known = getattr(inner, "_expunge_packing", None)
    if known is not None:
        return known
    ok = False
    body, head = getattr(inner, "get_decoder", None), getattr(inner, "get_output_embeddings", None)
    if body is not None and head is not None and body() is not None and head() is not None and len(ids) > 1:
        pair, pair_mask = ids[:2], mask[:2]
        with evaluating(model):
            full = model(input_ids=pair, attention_mask=pair_mask).logits.float()
            # Both rows in one sequence: the probe must see a position restart.
            hidden, where, start = _packed_hidden(inner, pair, pair_mask, width=int(pair_mask.sum()))
            rows, cols = pair_mask.bool().nonzero(as_tuple=True)
            packed = head()(_gather(hidden, where, start, rows, cols)).float()
            full = full[rows, cols]
        ok = bool(torch.allclose(full, packed, rtol=1e-4, atol=1e-4 * (1.0 + float(full.abs().max()))))
    else:
        return False  # one row: nothing to learn yet, probe on a later batch
    inner._expunge_packing = ok
    return ok


def packed_logits(model, batch: dict, prefix: str = ""):
    """(logits, rows, targets) at the positions that predict a labelled token, packed: `logits` is
    (N, vocabulary), `rows` the batch row of each and `targets` the token it predicts. Where the model
    allows (see _packing_ok) the rows run without their padding and the head only where a target is."""
    ids, mask, labels = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], batch[f"{prefix}labels"]
    gold = labels[:, 1:]
    rows, cols = (gold != -100).nonzero(as_tuple=True)
    targets = gold[rows, cols]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    right_padded = bool((mask[:, :-1] >= mask[:, 1:]).all())
    if right_padded and _packing_ok(model, inner, ids, mask):
        hidden, where, start = _packed_hidden(inner, ids, mask)
        logits = inner.get_output_embeddings()(_gather(hidden, where, start, rows, cols))
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][rows, cols]
    return logits, rows, targets


def row_scores(logits, rows, targets, n_rows: int):
    """Per row: (sum of the targets' log-probs, number of targets) from packed logits, as answer_logprob."""
    tok = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    sums = torch.zeros(n_rows, dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
    counts = torch.zeros(n_rows, dtype=torch.long, device=tok.device).index_add(0, rows, torch.ones_like(rows))
    return sums, counts.clamp(min=1)


def answer_scores(model, batch: dict, prefix: str = ""):
    """answer_logprob(logits_of(model, batch, prefix), labels), with the head on the answer positions only."""
    n = batch[f"{prefix}input_ids"].shape[0]
    return row_scores(*packed_logits(model, batch, prefix), n)


def forget_scores_and_retain(kind: str, model, base, forget: dict, retain: dict | None):
    """(forget answer log-prob sums, their token counts, the retain term) for the methods whose forget term
    reads only the forget answers' log-probs: with an NLL retain term both sources share one forward."""
    if retain is None or kind != "nll":
        s, n = answer_scores(model, forget)
        return s, n, retain_term(kind, model, base, retain)
    both, (f, r) = joint(forget, retain)
    s, n = answer_scores(model, both)
    return s[f], n[f], (-(s[r] / n[r])).mean()
