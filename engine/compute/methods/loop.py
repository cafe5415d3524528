"""The one training loop every weight-changing method shares (tiers 2 and 3), and the small helpers
the methods build their losses from.

A method is a loss: `loss_fn(model, forget_batch, retain_batch) -> (loss, {name: float})`. The loop
owns everything else: AdamW over the trainable parameters, linear warmup then cosine (or linear) decay,
gradient accumulation, clipping, seeded cycling over the forget and retain rows, a progress event per
optimizer step, and atomic checkpoints from which a resumed run finishes bit-for-bit like an
uninterrupted one (same seed, same machine, same thread count).

This module is imported by the method modules at import time for `GradientHyper`, so it must not
import torch / transformers / peft at module level: those imports live inside the functions."""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from engine.compute.methods.base import TrainHyper

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.compute.methods.base import RunContext

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"


class GradientHyper(TrainHyper):
    """Knobs of every tier-3 method: the shared loop's, plus the LoRA adapter (the default) or full weights."""

    lora: bool = Field(default=True, description="train a LoRA adapter (False: update every weight)")
    lora_rank: int = Field(default=8, ge=1, le=1024, description="LoRA rank r")
    lora_alpha: float = Field(default=16.0, gt=0, le=4096, description="LoRA scaling alpha (scale = alpha / r)")
    lora_targets: str | list[str] = Field(
        default="all-linear",
        description="modules that get an adapter; 'all-linear' = every linear projection of attention "
                    "and MLP (peft's rule: all nn.Linear except the output head)")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="learning-rate decay after the warmup")
    stop_forget_rouge: float | None = Field(
        default=None, gt=0, le=1,
        description="stop early once the forget answers' greedy ROUGE-L recall and gold-answer probability "
                    "are at most this share of their values before training and no answer leaks "
                    "(None: run every step)")
    stop_every: int = Field(default=2, ge=1, le=10_000, description="steps between early-stop checks")
    gradient_checkpointing: bool = Field(
        default=False, description="recompute activations in the backward pass: less memory, ~30% slower")

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names or any(not n.strip() or len(n) > 200 for n in names):
            raise ValueError("lora_targets must name at least one module (or be 'all-linear')")
        return value


# ------------------------------------------------------------------ data


def encode_rows(tokenizer, rows: list[dict], max_length: int, answer_key: str = "answer", prefix: str = "") -> dict:
    """{prefix+"input_ids", prefix+"attention_mask", prefix+"labels"}: right-padded, labels on the answer."""
    from engine.compute.tokens import encode_qa

    ids, mask, labels = encode_qa(tokenizer, rows, max_length=max_length, answer_key=answer_key)
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask, f"{prefix}labels": labels}


class _Cycler:
    """Endless seeded batches over the rows of `data`: a fresh permutation per pass (epoch)."""

    def __init__(self, data: dict, batch_size: int, seed: int) -> None:
        import torch

        self.data = data
        self.n = next(iter(data.values())).shape[0]
        self.batch = min(batch_size, self.n)
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(self.n, generator=self.gen)
        self.pos = 0
        # Sequence groups (one per attention mask) are trimmed to the longest row in the batch.
        self.groups = [k[: -len("attention_mask")] for k in data if k.endswith("attention_mask")]

    def next(self, device) -> dict:
        import torch

        if self.pos + self.batch > self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        out = {k: v[idx] for k, v in self.data.items()}
        for g in self.groups:
            width = int(out[f"{g}attention_mask"].sum(1).max())
            for k in list(out):
                if k.startswith(g) and k[len(g):] in ("input_ids", "attention_mask", "labels"):
                    out[k] = out[k][:, :width]
        return {k: v.to(device) for k, v in out.items()}

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order.clone(), "pos": self.pos}

    def load(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order = state["order"].clone()
        self.pos = int(state["pos"])


# ------------------------------------------------------------------ the loop


def lr_factor(step: int, total: int, warmup_share: float, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
    warm = int(round(warmup_share * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    t = (step - warm) / max(1, total - warm)
    if schedule == "linear":
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _fingerprint(hp: TrainHyper, names: list[str]) -> str:
    # A checkpoint only resumes the same job: same hyperparameters, same trainable tensors.
    body = hp.model_dump_json() + "|" + ",".join(names)
    return hashlib.sha256(body.encode()).hexdigest()


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    from store.files import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, lambda fh: torch.save(state, fh))  # a kill mid-write leaves the previous checkpoint intact


def train(ctx: RunContext, model, hp: TrainHyper, loss_fn: Callable, params=None, *,
          forget_data: dict | None = None, retain_data: dict | None = None, use_retain: bool = True,
          stop: Callable | None = None) -> dict:
    """Optimise `model` (already a private copy) in place; return a summary of the run.

    `params` defaults to the parameters with requires_grad. `forget_data` / `retain_data` default to
    the encoded ctx.forget / ctx.retain rows; a method passes its own dicts of row-aligned tensors when a
    batch needs more (refusal answers, precomputed reference log-probs). No retain rows: retain_batch is
    None (also with use_retain=False, for methods without a retain term). `stop(model, step)` may
    end the run early by returning a dict (reported as a "stop" event); None defaults to the
    hyperparameters' forget-ROUGE rule, if set. With ctx.resume and a matching checkpoint in ctx.work_dir/checkpoint the run continues from it."""
    import torch

    device = next(model.parameters()).device
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = [by_id[id(p)] for p in params]
    if forget_data is None:
        forget_data = encode_rows(ctx.tokenizer, ctx.forget, hp.max_length)
    if not use_retain:
        retain_data = None
    elif retain_data is None and ctx.retain:
        retain_data = encode_rows(ctx.tokenizer, ctx.retain, hp.max_length)
    forget_it = _Cycler(forget_data, hp.batch_size, hp.seed)
    retain_it = _Cycler(retain_data, hp.batch_size, hp.seed + 1) if retain_data else None

    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    schedule = getattr(hp, "schedule", "cosine")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, hp.steps, hp.warmup, schedule))
    fingerprint = _fingerprint(hp, names)
    ckpt_path = Path(ctx.work_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE

    if stop is None and getattr(hp, "stop_forget_rouge", None):
        stop = forget_rouge_stop(ctx, hp.stop_forget_rouge, getattr(hp, "stop_every", 1))
    start = 0
    stopped_at = None
    rng_state = None
    if ctx.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            ctx.progress(phase="resume", step=0, total=hp.steps,
                         note="checkpoint belongs to other hyperparameters; starting over")
        else:
            with torch.no_grad():
                for n, p in zip(names, params, strict=True):
                    p.copy_(state["params"][n].to(p.device, p.dtype))
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            forget_it.load(state["forget"])
            if retain_it is not None and state.get("retain") is not None:
                retain_it.load(state["retain"])
            rng_state = state["rng"]
            start = int(state["step"])
            ctx.progress(phase="resume", step=start, total=hp.steps)

    checkpointing = bool(getattr(hp, "gradient_checkpointing", False))
    if checkpointing:
        set_activation_checkpointing(model, True)
    model.train()
    last_loss, last_parts = float("nan"), {}
    began = time.monotonic()
    accum = hp.grad_accum
    backoff: dict | None = None

    def one_step() -> tuple[float, dict]:
        total, parts = 0.0, {}
        for _ in range(accum):
            fb = forget_it.next(device)
            rb = retain_it.next(device) if retain_it is not None else None
            loss, named = loss_fn(model, fb, rb)
            (loss / accum).backward()
            total += float(loss.detach()) / accum
            for k, v in named.items():
                parts[k] = parts.get(k, 0.0) + float(v) / accum
        return total, parts

    # The global RNG (dropout, if the model has any) is seeded here and restored on resume; fork_rng
    # keeps the worker's own RNG state as it was.
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(hp.seed)
        if rng_state is not None:
            torch.set_rng_state(rng_state["torch"])
            if cuda and rng_state.get("cuda") is not None:
                torch.cuda.set_rng_state(rng_state["cuda"], cuda[0])
        for step in range(start + 1, hp.steps + 1):
            opt.zero_grad(set_to_none=True)
            oom = None
            try:
                total, parts = one_step()
            except torch.OutOfMemoryError as exc:  # torch.cuda.OutOfMemoryError is this class
                if backoff is not None or forget_it.batch <= 1:
                    raise
                oom = str(exc).splitlines()[0][:300] if str(exc) else "out of memory"
            if oom is not None:
                # Back off once: half the micro-batch, twice the accumulation (the same rows per optimizer
                # step), and redo this step from a clean gradient; a second OOM fails the job. Outside the
                # except block, so the failed step's traceback (holding its activations) is already freed.
                opt.zero_grad(set_to_none=True)
                _free_memory(device)
                was = forget_it.batch
                forget_it.batch = max(1, was // 2)
                if retain_it is not None:
                    retain_it.batch = max(1, retain_it.batch // 2)
                accum *= 2
                backoff = {"step": step, "batch_size_before": was, "batch_size": forget_it.batch,
                           "grad_accum": accum, "error": oom}
                print(f"expunge: out of memory at step {step} with batch {was}; retrying with batch "
                      f"{forget_it.batch} x {accum} accumulation", file=sys.stderr, flush=True)
                ctx.progress(phase="oom-backoff", total=hp.steps, **backoff)
                total, parts = one_step()
            if not math.isfinite(total):
                raise FloatingPointError(f"the loss became {total} at step {step}; lower lr or steps")
            torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            # Checked before the checkpoint, so a resumed run stops at the same step as this one.
            verdict = stop(model, step) if stop is not None else None
            model.train()
            if step % hp.checkpoint_every == 0 and step < hp.steps and not verdict:
                _save_checkpoint(ckpt_path, {
                    "fingerprint": fingerprint, "step": step,
                    "params": {n: p.detach().cpu().clone() for n, p in zip(names, params, strict=True)},
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "forget": forget_it.state(), "retain": retain_it.state() if retain_it else None,
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state(cuda[0]) if cuda else None},
                })
            done = step - start
            eta = (time.monotonic() - began) / done * (hp.steps - step)
            last_loss, last_parts = total, parts
            # After the checkpoint: whatever the callback does (or a kill right after) loses nothing.
            ctx.progress(phase="train", step=step, total=hp.steps, loss=round(total, 5), eta=round(eta, 1),
                         lr=lr_now, **{k: round(v, 5) for k, v in parts.items()})
            if verdict:
                stopped_at = step
                ctx.progress(phase="stop", step=step, total=hp.steps, **verdict)
                break
    if checkpointing:
        set_activation_checkpointing(model, False)
    model.eval()
    return {"steps": stopped_at or hp.steps, "stopped_early": stopped_at is not None,
            "resumed_from": start or None, "final_loss": last_loss,
            "parts": last_parts, "seconds": round(time.monotonic() - began, 2),
            "gradient_checkpointing": checkpointing, "oom_backoff": backoff}


def set_activation_checkpointing(model, on: bool) -> None:
    """Gradient (activation) checkpointing on the transformers model under any peft wrapper;
    non-reentrant, so it works with a frozen base and LoRA adapters."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.2x; gradient_checkpointing_enable is its deprecated alias
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
        disable()


def _free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.empty_cache()


def forget_rouge_stop(ctx: RunContext, share: float, every: int) -> Callable:
    """A stop rule on the unit stage's own targets: every `every` steps, stop once the forget answers'
    greedy ROUGE-L recall and their gold-answer probability are each at most `share` of the base
    model's and no greedy answer leaks (Jang et al. 2023 stop GA on memorisation accuracy; a forget
    ROUGE-L already halved can still carry a phone number, or a probability that gives it back)."""
    from engine.compute.generation import greedy
    from engine.compute.prompting import max_answer_tokens
    from engine.compute.verify.attacks import is_leak
    from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
    from engine.compute.verify.scoring import answer_nlls

    questions = [r["question"] for r in ctx.forget]
    golds = [r["answer"] for r in ctx.forget]
    # The unit stage's own budget: an instruct model says the fact at the end of a sentence, past a budget
    # sized to a short gold answer.
    budget = max_answer_tokens(ctx.tokenizer, ctx.forget + ctx.retain)

    def probability(model) -> float:
        nlls = answer_nlls(model, ctx.tokenizer, ctx.forget)
        return sum(answer_probability(n) for n in nlls) / len(nlls)

    rouge_before = mean_rouge_l_recall(greedy(ctx.model, ctx.tokenizer, questions, max_new_tokens=budget), golds)
    prob_before = probability(ctx.model)

    def check(model, step: int) -> dict | None:
        if step % every:
            return None
        answers = greedy(model, ctx.tokenizer, questions, max_new_tokens=budget)
        rouge = mean_rouge_l_recall(answers, golds)
        if rouge > share * rouge_before or any(is_leak(a, g, ctx.sensitive) for a, g in zip(answers, golds, strict=True)):
            return None
        prob = probability(model)
        if prob > share * prob_before:
            return None
        return {"reason": "the forget answers are gone: ROUGE-L and probability at the target, nothing leaks",
                "forget_rouge": round(rouge, 4), "forget_rouge_before": round(rouge_before, 4),
                "forget_prob": round(prob, 4), "forget_prob_before": round(prob_before, 4)}

    return check


# ------------------------------------------------------------------ model preparation


def trainable_copy(ctx: RunContext, hp: GradientHyper):
    """A private copy of the base with a fresh LoRA adapter (hp.lora) or every weight trainable.

    The base stays untouched: it is the frozen reference the losses compare against."""
    import torch

    model = copy.deepcopy(ctx.model)
    if not hp.lora:
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, target_modules=hp.lora_targets,
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    # LoRA's A matrices are drawn from the global RNG: seed it, without disturbing the caller's stream.
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(hp.seed)
        model = get_peft_model(model, config)
    return model


def candidate_for(model, hp: GradientHyper, info: dict | None = None):
    from engine.compute.candidate import Candidate

    return Candidate(model=model, kind="adapter" if hp.lora else "full", info=info or {})


class frozen:
    """`with frozen(ctx.model) as ref:` the base in eval mode with no autograd, its mode restored after."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        import torch

        self.was_training = self.model.training
        self.model.eval()
        self.grad = torch.no_grad()
        self.grad.__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        self.grad.__exit__(*exc)
        if self.was_training:
            self.model.train()


# ------------------------------------------------------------------ loss pieces


def logits_of(model, batch: dict, prefix: str = ""):
    return model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"]).logits


def answer_logprob(logits, labels):
    """Per row: (sum of log-probs of the labelled tokens, number of labelled tokens)."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gold = labels[:, 1:]
    mask = gold != -100
    tok = logp.gather(-1, gold.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(1), mask.sum(1).clamp(min=1)


def nll(model, batch: dict, prefix: str = ""):
    """Mean over rows of the per-row mean answer NLL: the standard fine-tuning loss."""
    s, n = answer_logprob(logits_of(model, batch, prefix), batch[f"{prefix}labels"])
    return (-(s / n)).mean()


def reference_logprob(ref_model, data: dict, batch_size: int = 64, prefix: str = ""):
    """Sum answer log-probs of every row under the frozen base, computed once before training."""
    import torch

    out = []
    device = next(ref_model.parameters()).device
    with frozen(ref_model):
        n = data[f"{prefix}input_ids"].shape[0]
        for s in range(0, n, batch_size):
            batch = {k: v[s : s + batch_size].to(device) for k, v in data.items()}
            lp, _ = answer_logprob(logits_of(ref_model, batch, prefix), batch[f"{prefix}labels"])
            out.append(lp.float().cpu())
    return torch.cat(out)


def retain_kl(model, ref_model, batch: dict):
    """Mean token KL(base || model) over the retain rows' real tokens (prompt and answer)."""
    import torch

    logits = logits_of(model, batch).float()
    with frozen(ref_model):
        ref = logits_of(ref_model, batch).float()
    mask = batch["attention_mask"].bool()
    ref_logp = torch.log_softmax(ref, -1)[mask]
    logp = torch.log_softmax(logits, -1)[mask]
    return torch.nn.functional.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def retain_term(kind: str, model, ref_model, batch: dict | None):
    import torch

    if batch is None:
        return torch.zeros((), device=next(model.parameters()).device)
    return retain_kl(model, ref_model, batch) if kind == "kl" else nll(model, batch)


class RetainMixin(GradientHyper):
    """Loss weights of methods with a retain term: gamma * forget + alpha * retain."""

    gamma: float = Field(default=1.0, ge=0, le=1e4, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, le=1e4, description="weight of the retain term")
    retain_loss: Literal["nll", "kl"] = Field(
        default="nll", description="retain term: NLL of the retain answers, or token KL to the frozen base")


def run_info(result: dict, **more: Any) -> dict:
    return {"train": {k: v for k, v in result.items() if k != "parts"}, **more}
