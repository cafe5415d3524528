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
