"""The relearning attack (white-box): can a small fine-tune bring forgotten knowledge back?

An attacker who holds the weights fine-tunes a fresh LoRA adapter on half A of the forget set for a
fixed budget, then asks the other half B. Learning A alone teaches some of B's surface (templates,
names, style) even to a model that never knew B, so the same attack is run from the base model on
holdout facts it never knew (holdout half A' -> half B'): that is what "learning related facts"
explains without any memory of B. Both runs are scored at a few checkpoints of the budget and keep
their best (the defender's worst case; it also keeps a fine-tune that starts to overwrite B with A's
answers late in the budget from hiding what it had recovered earlier). Recovery is the share of the
base model's knowledge margin on B that comes back:

    recovery = clip((R_attacked(B) - R_control(B')) / (R_base(B) - R_control(B')), 0, 1)

with R = mean ROUGE-L recall of greedy answers against the gold answers. 1 = everything the base
knew about B is back after the fine-tune; 0 = no more than a model that never saw B gets from the
same fine-tune. The attacker decodes without any guard (it owns the weights).

The control and the base's own score on B depend only on the base model and the rows, so they are
computed once per base model (in memory) and reused for every candidate checked against it."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from engine.compute.generation import greedy
from engine.compute.tokens import encode_qa
from engine.compute.verify.metrics import mean_rouge_l_recall, rouge_l_recall

# A base margin below this (ROUGE-L points) means the base did not know B better than a stranger:
# there is nothing to recover, and the metric is not defined.
MIN_MARGIN = 0.05


@dataclass(frozen=True)
class RelearnConfig:
    """The attack's fixed budget. Small on purpose: a handful of rows, tens of steps, rank-8 LoRA."""

    steps: int = 30
    lr: float = 3e-3
    checkpoints: int = 3  # B is asked after every steps / checkpoints steps; the best score counts
    rank: int = 8
    alpha: float = 16.0
    targets: str = "all-linear"
    max_train_rows: int = 32  # rows of half A used (all of them for a forget set of a few rows)
    max_eval_rows: int = 32  # rows of half B asked
    max_length: int = 128
    seed: int = 0


# The 'quick' verification profile's budget: a third of the steps, asked once at the end.
QUICK_RELEARN = RelearnConfig(steps=10, checkpoints=1)


def split_halves(rows: Sequence[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A seeded shuffle cut in two: half A (the larger when odd) to fine-tune on, half B to ask."""
    order = list(range(len(rows)))
    random.Random(f"expunge-relearn:{seed}").shuffle(order)
    cut = (len(rows) + 1) // 2
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def _plain_copy(model):
    """A private, plain (no adapter) copy of `model` to attack: the original is never touched."""
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):  # a peft candidate: fold its adapter into the weights
        clone = clone.merge_and_unload()
    return clone


def fine_tune(model, tokenizer, rows: Sequence[dict], cfg: RelearnConfig, on_checkpoint=None):
    """A LoRA-adapted copy of `model` trained on `rows` (loss on the answers) for cfg.steps full-batch
    steps at a constant rate; on_checkpoint(model, step) is called (in eval mode) cfg.checkpoints times
    along the way."""
    from engine.compute.training import loop
    from engine.compute.training.lora import add_lora
    from engine.compute.training.losses import token_nll

    attacked = _plain_copy(model)
    attacked.requires_grad_(False)
    attacked = add_lora(attacked, rank=cfg.rank, alpha=cfg.alpha, targets=cfg.targets, seed=cfg.seed)
    ids, att, labels = encode_qa(tokenizer, list(rows), max_length=cfg.max_length)
    data = {"input_ids": ids, "attention_mask": att, "labels": labels}
    every = max(1, cfg.steps // max(1, cfg.checkpoints))

    def checkpoint(attacked, step: int, loss: float) -> None:
        if on_checkpoint is not None and (step % every == 0 or step == cfg.steps):
            on_checkpoint(attacked, step)

    loop.train(attacked, lambda m, batch: (token_nll(m, batch), {}),
               [loop.Cycler(data, len(data["input_ids"]), cfg.seed, shuffle=False)],
               loop.LoopConfig(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, schedule="constant"), stop=checkpoint)
    return attacked


def attack(model, tokenizer, train_rows: Sequence[dict], eval_rows: Sequence[dict], cfg: RelearnConfig,
           max_new_tokens: int = 48, batch_size: int = 32) -> dict:
    """Fine-tune on `train_rows`, asking `eval_rows` (greedy) at each checkpoint; the best checkpoint's
    {"rouge_l", "outputs", "rows", "step", "curve" [(step, rouge_l)]}."""
    rows = list(eval_rows[: cfg.max_eval_rows])
    best: dict = {"rouge_l": -1.0, "outputs": [], "rows": rows, "step": 0, "curve": []}

    def check(attacked, step: int) -> None:
        outputs = greedy(attacked, tokenizer, [r["question"] for r in rows], max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        score = mean_rouge_l_recall(outputs, [r["answer"] for r in rows])
        best["curve"].append((step, score))
        if score > best["rouge_l"]:
            best.update(rouge_l=score, outputs=outputs, step=step)

    attacked = fine_tune(model, tokenizer, train_rows[: cfg.max_train_rows], cfg, on_checkpoint=check)
    del attacked
    return best


def recovery_share(attacked: float, control: float, base: float) -> float | None:
    """clip((attacked - control) / (base - control), 0, 1); None when the base's margin over the
    control is under MIN_MARGIN (nothing the attack could be said to recover)."""
    margin = base - control
    if margin < MIN_MARGIN or math.isnan(attacked):
        return None
    return min(1.0, max(0.0, (attacked - control) / margin))


# ------------------------------------------------------------------ per-base cache

_BASE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model) -> int:
    # Every in-place change of a tensor bumps its version counter: a cheap "weights unchanged" check.
    return sum(p._version for p in model.parameters())


def _cached(base, key: tuple, compute):
    slot = _BASE_CACHE.setdefault(base, {})
    full_key = (_fingerprint(base), *key)
    if full_key not in slot:
        slot[full_key] = compute()
    return slot[full_key]


def _rows_key(rows: Sequence[dict]) -> str:
    body = json.dumps([[r["question"], r["answer"]] for r in rows], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def relearn_recovery(model, base_model, tokenizer, forget: Sequence[dict], holdout: Sequence[dict],
                     cfg: RelearnConfig | None = None, max_new_tokens: int = 48, batch_size: int = 32) -> dict:
    """Run the attack on `model` and the control on `base_model` (the same object when measuring the base).

    Returns {"recovery" (None when undefined), "attacked", "control", "base", "evidence", "config"}."""
    cfg = cfg or RelearnConfig()
    half_a, half_b = split_halves(forget, cfg.seed)
    out = {"recovery": None, "attacked": None, "control": None, "base": None, "evidence": [], "config": asdict(cfg)}
    if not half_a or not half_b:
        return out  # a single forget row cannot be split
    half_b = half_b[: cfg.max_eval_rows]
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    key = (_rows_key(forget), json.dumps(asdict(cfg)), max_new_tokens)

    def base_on_b() -> float:
        outs = greedy(base_model, tokenizer, [r["question"] for r in half_b], **gen)
        return mean_rouge_l_recall(outs, [r["answer"] for r in half_b])

    def control() -> float:
        if len(holdout) < 2:
            return 0.0  # no never-seen facts to compare with: the attack gets no allowance
        ha, hb = split_halves(holdout, cfg.seed)
        return attack(base_model, tokenizer, ha, hb, cfg, **gen)["rouge_l"]

    r_base = _cached(base_model, ("base_b", *key), base_on_b)
    r_control = _cached(base_model, ("control", _rows_key(holdout), *key[1:]), control)
    if model is base_model:
        result = _cached(base_model, ("attacked", *key), lambda: attack(model, tokenizer, half_a, half_b, cfg, **gen))
    else:
        result = attack(model, tokenizer, half_a, half_b, cfg, **gen)
    out.update(recovery=recovery_share(result["rouge_l"], r_control, r_base), attacked=result["rouge_l"],
               control=r_control, base=r_base, attacked_step=result["step"], curve=result["curve"])
    out["evidence"] = [{"row": r, "output": o, "rouge_l": rouge_l_recall(o, r["answer"])}
                       for r, o in zip(result["rows"], result["outputs"], strict=True)]
    return out
