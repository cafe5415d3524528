"""The one LoRA preparation: a seeded adapter on a model (the methods' trainable copy of the base, the
relearning attack's fine-tune)."""

from __future__ import annotations

import copy

import torch


def add_lora(model, *, rank: int, alpha: float, targets: str | list[str], seed: int):
    """`model` wrapped in a fresh peft LoRA adapter (no dropout, no bias), only the adapter trainable.

    `targets` "all-linear" is peft's rule: every nn.Linear but the output head. The A matrices are drawn
    from the global RNG: it is seeded with `seed` here, and the caller's stream is left as it was."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                        task_type="CAUSAL_LM")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def shared_weights_copy(base):
    """A copy of `base`'s module tree that shares every parameter and buffer with it: adapters can be
    added to the copy's modules without touching the base's, at no memory cost. Its weights must never
    be written in place (a LoRA adapter trains only its own matrices; merging copies first)."""
    memo = {id(t): t for t in list(base.parameters()) + list(base.buffers())}
    return copy.deepcopy(base, memo)


def trainable_copy(base, hp):
    """A private trainable version of `base`: a fresh LoRA adapter on a shared-weights copy (hp.lora: the
    frozen weights are the base's own tensors, so the base is not held twice and is itself the exact
    reference the losses compare against), or a full copy with every weight trainable; `hp` is a
    method's GradientHyper. The base stays untouched either way."""
    if not hp.lora:
        model = copy.deepcopy(base)
        model.requires_grad_(True)
        return model
    base.requires_grad_(False)  # shared with the copy: only the adapter trains
    model = shared_weights_copy(base)
    return add_lora(model, rank=hp.lora_rank, alpha=hp.lora_alpha, targets=hp.lora_targets, seed=hp.seed)
