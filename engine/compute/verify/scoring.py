"""Batched torch-level scorers for verification: answer NLLs, text NLL, Min-K%++, KL to the base
model and the logit lens. Imported only inside the worker (it imports torch at module level).

Rows are either question/answer items ({"question", "answer"}) or plain texts (str). Items are
encoded exactly as training encodes them (`engine.compute.tokens.encode_qa`: the prompt with BOS, the
answer without specials, then EOS; loss on the answer and EOS only); texts with `encode_texts`.
Both are right-padded, so a row's real tokens never see padding and scores do not depend on the
batch a row lands in. Rows are grouped by length to waste little compute on padding; results come
back in input order."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from engine.compute.tokens import encode_qa, encode_texts, without_answer_ends

# Positions per chunk when a (positions x vocabulary) float tensor is materialised: bounds memory
# at ~chunk * vocab * 4 bytes (200 MB for a 49k vocabulary) whatever the batch size.
_CHUNK = 1024


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _eval(*models):
    # Dropout off while scoring; the caller's train/eval state comes back afterwards.
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, w in zip(models, was, strict=True):
            if w:
                m.train()


def _is_text(rows: Sequence) -> bool:
    kinds = {isinstance(r, str) for r in rows}
    if len(kinds) > 1:
        raise ValueError("rows must be all texts (str) or all question/answer items (dict), not a mix")
    return kinds == {True}


def _approx_len(row) -> int:
    return len(row) if isinstance(row, str) else len(row["question"]) + len(row["answer"])


def _batches(tokenizer, rows: Sequence, batch_size: int, max_length: int) -> Iterator[tuple[list[int], tuple]]:
    """(row indices, (input_ids, attention_mask, labels)) per batch, rows of similar length together."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    text = _is_text(rows)
    order = sorted(range(len(rows)), key=lambda i: _approx_len(rows[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        chunk = [rows[i] for i in idx]
        enc = encode_texts(tokenizer, chunk, max_length) if text else encode_qa(tokenizer, chunk, max_length)
        yield idx, enc


def _forward(model, input_ids, attention, **kwargs):
    dev = _device(model)
    return model(input_ids=input_ids.to(dev), attention_mask=attention.to(dev), use_cache=False, **kwargs)


def _targets(labels: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For next-token prediction: the mask of scored positions (over logits[:, :-1]), their row
    indices and their target ids."""
    shifted = labels[:, 1:].to(device)
    mask = shifted != -100
    return mask, mask.nonzero()[:, 0], shifted[mask]


def _chunks(n: int) -> Iterator[slice]:
    for s in range(0, n, _CHUNK):
        yield slice(s, min(n, s + _CHUNK))


# ---------------------------------------------------------------------------------------------
# Token log-probabilities and NLLs
# ---------------------------------------------------------------------------------------------


def token_logprobs(model, tokenizer, rows: Sequence, batch_size: int = 32, max_length: int = 256) -> list[list[float]]:
    """Per row, the log-probability of each scored token (items: answer tokens and EOS; texts:
    every token after the first)."""
    out: list[list[float]] = [[] for _ in rows]
    with _eval(model):
        for idx, (ids, att, labels) in _batches(tokenizer, rows, batch_size, max_length):
            logits = _forward(model, ids, att).logits
            mask, row_of, tgt = _targets(labels, logits.device)
            sel = logits[:, :-1][mask]
            lp = torch.cat([-F.cross_entropy(sel[c].float(), tgt[c], reduction="none") for c in _chunks(len(tgt))]) \
                if len(tgt) else sel.new_zeros(0)
            for r, v in zip(row_of.tolist(), lp.tolist(), strict=True):
                out[idx[r]].append(v)
    return out


def answer_token_logprobs(model, tokenizer, items: Sequence[dict], batch_size: int = 32,
                          max_length: int = 256) -> list[list[float]]:
    """Per item, log p of each answer token (and of the closing EOS) given the prompt."""
    return token_logprobs(model, tokenizer, items, batch_size, max_length)


def _mean_nll(lps: list[float]) -> float:
    return -sum(lps) / len(lps) if lps else math.nan


def answer_nlls(model, tokenizer, items: Sequence[dict], batch_size: int = 32, max_length: int = 256) -> list[float]:
    """Per item, the mean token NLL of the answer (and its EOS, as in TOFU) given the prompt:
    exp(-nll) is TOFU's answer probability. NaN for an item with no answer token left after truncation."""
    return [_mean_nll(lps) for lps in token_logprobs(model, tokenizer, items, batch_size, max_length)]


def text_nll(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 256) -> list[float]:
    """Per text, the mean token NLL (exp of it is the text's perplexity)."""
    return [_mean_nll(lps) for lps in token_logprobs(model, tokenizer, list(texts), batch_size, max_length)]


# ---------------------------------------------------------------------------------------------
# Membership inference: Min-K%++
# ---------------------------------------------------------------------------------------------


def min_k_plus_plus(model, tokenizer, rows: Sequence, k: float = 0.2, batch_size: int = 32,
                    max_length: int = 256) -> list[float]:
    """Min-K%++ membership score per row (Zhang et al. 2024); higher = more likely a training member.

    Per scored token x_t: z_t = (log p(x_t) - mu_t) / sigma_t, where mu_t = E_{v~p}[log p(v)] and
    sigma_t^2 = E_{v~p}[(log p(v))^2] - mu_t^2 under the model's next-token distribution p at that
    position; the score is the mean of the lowest k share of the z_t (at least one token).
    Variance is clamped at 1e-6 as open-unlearning does. (open-unlearning reports the negation, to
    fit its own AUC convention; here higher means member so that `metrics.auc(forget, holdout)` works.)"""
    if not 0 < k <= 1:
        raise ValueError("k must be in (0, 1]")
    per_row: list[list[float]] = [[] for _ in rows]
    with _eval(model):
        for idx, (ids, att, labels) in _batches(tokenizer, rows, batch_size, max_length):
            logits = _forward(model, ids, att).logits
            mask, row_of, tgt = _targets(labels, logits.device)
            sel = logits[:, :-1][mask]
            zs = []
            for c in _chunks(len(tgt)):
                logp = F.log_softmax(sel[c].float(), dim=-1)
                p = logp.exp()
                mu = (p * logp).sum(-1)
                var = (p * logp.square()).sum(-1) - mu.square()
                target = logp.gather(-1, tgt[c].unsqueeze(-1)).squeeze(-1)
                zs.append((target - mu) / var.clamp(min=1e-6).sqrt())
            for r, z in zip(row_of.tolist(), torch.cat(zs).tolist() if zs else [], strict=True):
                per_row[idx[r]].append(z)
    scores = []
    for zs in per_row:
        if not zs:
            scores.append(math.nan)
            continue
        lowest = sorted(zs)[: max(1, int(len(zs) * k))]
        scores.append(sum(lowest) / len(lowest))
    return scores


# ---------------------------------------------------------------------------------------------
# Control: KL to the base model
# ---------------------------------------------------------------------------------------------


def mean_token_kl(model, base_model, tokenizer, items: Sequence[dict], batch_size: int = 32,
                  max_length: int = 256) -> float:
    """Mean over all answer tokens (token-weighted) of KL(p_base || p_model) between the two models'
    next-token distributions, on the same prompt + gold answer prefixes. 0 for an unchanged model."""
    if not items:
        raise ValueError("mean_token_kl of no items")
    total, count = 0.0, 0
    with _eval(model, base_model):
        for _, (ids, att, labels) in _batches(tokenizer, items, batch_size, max_length):
            logits = _forward(model, ids, att).logits
            base_logits = _forward(base_model, ids, att).logits.to(logits.device)
            if base_logits.shape[-1] != logits.shape[-1]:
                raise ValueError("model and base model have different vocabulary sizes")
            mask, _, tgt = _targets(labels, logits.device)
            sel, base_sel = logits[:, :-1][mask], base_logits[:, :-1][mask]
            for c in _chunks(len(tgt)):
                logq = F.log_softmax(sel[c].float(), dim=-1)
                logp = F.log_softmax(base_sel[c].float(), dim=-1)
                total += F.kl_div(logq, logp, log_target=True, reduction="sum").item()
            count += len(tgt)
    return total / count if count else math.nan


# ---------------------------------------------------------------------------------------------
# White-box: logit lens
# ---------------------------------------------------------------------------------------------


def final_norm(model) -> torch.nn.Module:
    """The final normalisation applied before the unembedding (Llama, Qwen, Gemma, Mistral, SmolLM:
    model.model.norm; GPT-2: transformer.ln_f; GPT-NeoX: final_layer_norm; OPT: decoder.final_layer_norm)."""
    bases = []
    try:
        bases.append(model.get_decoder())
    except (AttributeError, NotImplementedError, ValueError):
        pass
    for name in (getattr(model, "base_model_prefix", None), "model", "transformer", "gpt_neox"):
        sub = getattr(model, name, None) if name else None
        if isinstance(sub, torch.nn.Module):
            bases.append(sub)
            if isinstance(getattr(sub, "decoder", None), torch.nn.Module):
                bases.append(sub.decoder)
    for base in bases:
        for attr in ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm"):
            mod = getattr(base, attr, None)
            if isinstance(mod, torch.nn.Module):
                return mod
    raise ValueError(f"logit lens: cannot find the final norm of {type(model).__name__}")


def _softcap(model) -> float | None:
    # Gemma 2/3 squash the final logits with tanh; the lens applies the same map to every layer.
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "final_logit_softcapping", None)


def logit_lens(model, tokenizer, items: Sequence[dict], batch_size: int = 32, max_length: int = 256) -> list[dict]:
    """Where the gold answer becomes decodable: per layer, the residual stream at every position that
    predicts an answer token, decoded with the model's own final norm and unembedding.

    Returns one row per hidden state: {"layer": 0} is the embedding output, {"layer": i} the output
    of decoder block i; the last row is the model's real output (its logits as returned by forward,
    final norm included). Each row has
      prob: mean over items of the mean probability of the gold answer tokens,
      rank: mean over items of their mean 1-based rank among the vocabulary,
      top1: share of items whose first answer token is the top-1 prediction.
    EOS targets are left out: the lens asks about the answer's content."""
    if not items:
        raise ValueError("logit_lens of no items")
    norm, head = final_norm(model), model.get_output_embeddings()
    if head is None:
        raise ValueError(f"logit lens: {type(model).__name__} has no output embeddings")
    cap = _softcap(model)
    n_items = len(items)
    prob_sum = rank_sum = top1 = None  # (layers, items), allocated once the layer count is known
    n_tok = torch.zeros(n_items, dtype=torch.float64)
    with _eval(model):
        for idx, (ids, att, labels) in _batches(tokenizer, items, batch_size, max_length):
            labels = without_answer_ends(labels, tokenizer)
            out = _forward(model, ids, att, output_hidden_states=True)
            hidden = out.hidden_states
            n_layers = len(hidden)
            if prob_sum is None:
                prob_sum = torch.zeros(n_layers, n_items, dtype=torch.float64)
                rank_sum = torch.zeros(n_layers, n_items, dtype=torch.float64)
                top1 = torch.zeros(n_layers, n_items, dtype=torch.float64)
            mask, row_of, tgt = _targets(labels, out.logits.device)
            if not len(tgt):
                continue
            items_of = torch.tensor(idx, dtype=torch.long)[row_of.cpu()]
            # A row's first scored position predicts its first answer token.
            first = torch.ones(len(row_of), dtype=torch.bool)
            first[1:] = row_of[1:].cpu() != row_of[:-1].cpu()
            n_tok.index_add_(0, items_of, torch.ones(len(tgt), dtype=torch.float64))
            for layer in range(n_layers):
                if layer == n_layers - 1:
                    sel, decode = out.logits[:, :-1][mask], None
                else:
                    sel, decode = hidden[layer][:, :-1][mask], True
                probs, ranks = [], []
                for c in _chunks(len(tgt)):
                    lg = sel[c]
                    if decode:
                        lg = head(norm(lg.to(device=head.weight.device, dtype=head.weight.dtype)))
                        if cap:
                            lg = torch.tanh(lg / cap) * cap
                    lg = lg.float()
                    gold = lg.gather(-1, tgt[c].to(lg.device).unsqueeze(-1))
                    probs.append((gold.squeeze(-1) - torch.logsumexp(lg, dim=-1)).exp())
                    ranks.append((lg > gold).sum(-1) + 1)
                p = torch.cat(probs).double().cpu()
                r = torch.cat(ranks).double().cpu()
                prob_sum[layer].index_add_(0, items_of, p)
                rank_sum[layer].index_add_(0, items_of, r)
                top1[layer].index_add_(0, items_of[first], (r[first] == 1).double())
    scored = n_tok > 0
    n_scored = int(scored.sum())
    if prob_sum is None or not n_scored:
        raise ValueError("logit_lens: no item has an answer token to score")
    return [
        {
            "layer": layer,
            "prob": float((prob_sum[layer][scored] / n_tok[scored]).mean()),
            "rank": float((rank_sum[layer][scored] / n_tok[scored]).mean()),
            "top1": float(top1[layer][scored].sum() / n_scored),
        }
        for layer in range(prob_sum.shape[0])
    ]
