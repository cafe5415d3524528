"""The one optimisation loop: AdamW over the trainable parameters, a learning-rate schedule from
transformers (`get_scheduler`), gradient accumulation and clipping, seeded batch sources, a progress
event per optimizer step, a stop rule, and atomic checkpoints from which a resumed run finishes
bit-for-bit like an uninterrupted one (same seed, same machine, same thread count). On an out-of-memory
error it backs off once to half the micro-batch and twice the accumulation.

A loss is `loss_fn(model, *batches) -> (loss, {name: float})`, one batch per source."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.compute.modeling import evaluating

if TYPE_CHECKING:
    from collections.abc import Callable

# The schedules the loop offers, by transformers' names: a linear warmup, then the decay.
SCHEDULES = ("cosine", "linear", "constant_with_warmup", "cosine_with_min_lr", "constant")


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # optimizer steps
    lr: float  # peak learning rate
    seed: int = 0
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 0
    schedule: str = "cosine"  # one of SCHEDULES
    min_lr_rate: float = 0.0  # cosine_with_min_lr: the floor, as a share of the peak
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    activation_checkpointing: bool = False
    # The decay over every step from the first, the warmup ramp multiplying it (the TOFU bench's schedule).
    decay_from_start: bool = False
    fused_adamw: bool = False  # AdamW's fused kernel (see adamw); off where results were tuned on the plain one


@dataclass(frozen=True)
class Checkpoints:
    """Where and how often the loop saves its state; `fingerprint` names the run a checkpoint may resume."""

    path: Path
    every: int
    fingerprint: str
    resume: bool = False


def lr_curve(cfg: LoopConfig) -> Callable[[int], float]:
    """The share of the peak learning rate at optimizer step `s` (0-based): transformers' schedule
    (`get_scheduler`), its warmup read one step ahead. transformers' first step trains at 0 and its
    last warmup step at (w-1)/w of the peak; here they train at 1/w and at the peak, the schedule every
    default in this project was tuned on (with transformers' own warmup, SimNPO's and IdkDPO's 30-step
    defaults no longer pass the unit stage on the test model)."""
    from transformers import get_scheduler

    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {cfg.schedule!r}")
    extra = {"min_lr_rate": cfg.min_lr_rate} if cfg.schedule == "cosine_with_min_lr" else None
    probe = torch.optim.SGD([torch.zeros(1)], lr=1.0)  # get_scheduler wants an optimizer; only its curve is kept
    warm = cfg.warmup_steps
    curve = get_scheduler(cfg.schedule, probe, num_warmup_steps=0 if cfg.decay_from_start else warm,
                          num_training_steps=cfg.steps, scheduler_specific_kwargs=extra).lr_lambdas[0]
    if cfg.decay_from_start:
        return lambda s: (min(1.0, (s + 1) / warm) if warm else 1.0) * curve(s)
    return lambda s: curve(s + 1) if s < warm else curve(s)


def make_scheduler(optimizer, cfg: LoopConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_curve(cfg))


# ------------------------------------------------------------------ batch sources


def _take(data: dict, idx, device) -> dict:
    """Rows `idx` of `data`, each sequence group (one per attention mask) trimmed to its longest row."""
    out = {k: v[idx] for k, v in data.items()}
    for group in [k[: -len("attention_mask")] for k in data if k.endswith("attention_mask")]:
        width = int(out[f"{group}attention_mask"].sum(1).max())
        for k in list(out):
            if k.startswith(group) and k[len(group):] in ("input_ids", "attention_mask", "labels"):
                out[k] = out[k][:, :width]
    return {k: v.to(device) for k, v in out.items()}


def _padded_cat(a: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    """Rows of `a` then of `b`; 2-D tensors right-padded with `pad` to the wider of the two."""
    if a.dim() == 2 and a.shape[1] != b.shape[1]:
        width = max(a.shape[1], b.shape[1])
        a, b = (torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad) for t in (a, b))
    return torch.cat([a, b.to(a.dtype)])


class Cycler:
    """Endless seeded batches over the rows of `data` (a dict of row-aligned tensors): a fresh
    permutation per pass (epoch), or the rows in order with `shuffle=False`."""

    def __init__(self, data: dict, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.data = data
        self.n = next(iter(data.values())).shape[0]
        self.wanted = batch_size
        self.batch = min(batch_size, self.n)
        self.shuffle = shuffle
        self.gen = torch.Generator().manual_seed(seed)
        self.order = self._pass()
        self.pos = 0

    def _pass(self):
        return torch.randperm(self.n, generator=self.gen) if self.shuffle else torch.arange(self.n)

    def next(self, device) -> dict:
        if self.pos + self.batch > self.n:
            self.order, self.pos = self._pass(), 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return _take(self.data, idx, device)

    def can_halve(self) -> bool:
        return self.batch > 1

    def halve(self) -> None:
        self.batch = self.wanted = max(1, self.batch // 2)

    def extend(self, more: dict) -> None:
        """Add rows (the same keys, right-padded as `data` is) mid-run: both sides padded to the wider one, and
        a fresh pass starts over all of them (engine.compute.methods.retarget adds the rows a model leaks on)."""
        self.data = {k: _padded_cat(v, more[k], -100 if k.endswith("labels") else 0) for k, v in self.data.items()}
        self.n = next(iter(self.data.values())).shape[0]
        self.batch = min(self.wanted, self.n)
        self._rows_changed()
        self.order, self.pos = self._pass(), 0

    def _rows_changed(self) -> None:
        """Hook for a subclass that keeps per-row facts."""

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order.clone(), "pos": self.pos}

    def load(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order = state["order"].clone()
        self.pos = int(state["pos"])


class LengthGroupedCycler(Cycler):
    """Cycler's seeded epochs, each pass cut into mega-batches of GROUP batches whose rows are sorted by
    length, the batches then visited in a seeded order (transformers' LengthGroupedSampler): a batch holds
    rows of similar length, so trimming it to its longest row ("dynamic padding") leaves little padding.
    A pass is one flat row order, so halving the batch on an out-of-memory back-off keeps the grouping."""

    GROUP = 16

    def __init__(self, data: dict, batch_size: int, seed: int) -> None:
        self.lengths = data["attention_mask"].sum(1)
        super().__init__(data, batch_size, seed)

    def _rows_changed(self) -> None:
        self.lengths = self.data["attention_mask"].sum(1)

    def _pass(self):
        perm = torch.randperm(self.n, generator=self.gen)
        chunks = []
        for s in range(0, self.n, self.batch * self.GROUP):
            part = perm[s : s + self.batch * self.GROUP]
            part = part[torch.sort(self.lengths[part], descending=True, stable=True).indices]
            chunks += list(part.split(self.batch))
        full = [c for c in chunks if len(c) == self.batch]
        rest = [c for c in chunks if len(c) != self.batch]  # the pass's remainder: last, where next() drops it
        visit = torch.randperm(len(full), generator=self.gen).tolist()
        return torch.cat([full[i] for i in visit] + rest)


class LengthBatches:
    """Rows sorted by length and cut into fixed batches once, the batches visited in a fresh seeded
    order every epoch: long rows waste little on padding. The batches are fixed, so no back-off."""

    def __init__(self, data: dict, batch_size: int, seed: int) -> None:
        self.data = data
        lengths = data["attention_mask"].sum(1).tolist()
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batch = batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0

    def next(self, device) -> dict:
        if self.pos >= len(self.order):
            self.order, self.pos = torch.randperm(len(self.batches), generator=self.gen).tolist(), 0
        idx = torch.tensor(self.batches[self.order[self.pos]])
        self.pos += 1
        return _take(self.data, idx, device)

    def can_halve(self) -> bool:
        return False

    def halve(self) -> None:
        raise NotImplementedError("fixed batches cannot be halved")

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order), "pos": self.pos}

    def load(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order, self.pos = list(state["order"]), int(state["pos"])


# ------------------------------------------------------------------ the loop


@dataclass
class _Run:
    """One run's moving parts, shared by the loop's helpers."""

    model: object
    params: list
    names: list[str]
    sources: list
    cfg: LoopConfig
    opt: object
    sched: object
    accum: int
    progress: Callable[..., None]
    backoff: dict | None = None


def train(model, loss_fn: Callable, sources: list, cfg: LoopConfig, *, params=None,
          progress: Callable[..., None] | None = None, stop: Callable | None = None,
          checkpoints: Checkpoints | None = None) -> dict:
    """Optimise `model` in place for cfg.steps optimizer steps; return a summary of the run.

    `params` defaults to the parameters with requires_grad. `stop(model, step, loss)` is called after
    every optimizer step, the model in eval mode without autograd; a dict it returns ends the run
    (reported as a "stop" event), None lets it go on (a rule may only observe, too). `progress(**event)`
    gets the "train" event of every step and the "resume", "oom-backoff" and "stop" events."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    by_id = {id(p): n for n, p in model.named_parameters()}
    opt = adamw(params, cfg)
    run = _Run(model=model, params=params, names=[by_id[id(p)] for p in params], sources=sources, cfg=cfg,
               opt=opt, sched=make_scheduler(opt, cfg), accum=cfg.grad_accum,
               progress=progress or (lambda **event: None))
    start, rng_state = _resume(run, checkpoints) if checkpoints and checkpoints.resume else (0, None)
    device = next(model.parameters()).device
    if cfg.activation_checkpointing:
        set_activation_checkpointing(model, True)
    model.train()
    last_loss, last_parts, stopped_at = float("nan"), {}, None
    began = time.monotonic()
    # The global RNG (dropout, if the model has any) is seeded here and restored on resume; fork_rng
    # keeps the caller's own RNG state as it was.
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        if rng_state is not None:
            torch.set_rng_state(rng_state["torch"])
            if cuda and rng_state.get("cuda") is not None:
                torch.cuda.set_rng_state(rng_state["cuda"], cuda[0])
        for step in range(start + 1, cfg.steps + 1):
            total, parts = _step_with_backoff(run, loss_fn, step, device)
            if not math.isfinite(total):
                raise FloatingPointError(f"the loss became {total} at step {step}; lower lr or steps")
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            run.sched.step()
            # Checked before the checkpoint, so a resumed run stops at the same step as this one.
            verdict = None
            if stop is not None:
                with evaluating(model):
                    verdict = stop(model, step, total)
            if checkpoints and step % checkpoints.every == 0 and step < cfg.steps and not verdict:
                _save(run, checkpoints, step, cuda)
            eta = (time.monotonic() - began) / (step - start) * (cfg.steps - step)
            last_loss, last_parts = total, parts
            # After the checkpoint: whatever the callback does (or a kill right after) loses nothing.
            run.progress(phase="train", step=step, total=cfg.steps, loss=round(total, 5), eta=round(eta, 1),
                         lr=lr_now, **{k: round(v, 5) for k, v in parts.items()})
            if verdict:
                stopped_at = step
                run.progress(phase="stop", step=step, total=cfg.steps, **verdict)
                break
    if cfg.activation_checkpointing:
        set_activation_checkpointing(model, False)
    model.eval()
    return {"steps": stopped_at or cfg.steps, "stopped_early": stopped_at is not None,
            "resumed_from": start or None, "final_loss": last_loss,
            "parts": last_parts, "seconds": round(time.monotonic() - began, 2),
            "gradient_checkpointing": cfg.activation_checkpointing, "oom_backoff": run.backoff}


def adamw(params: list, cfg: LoopConfig):
    """AdamW; with cfg.fused_adamw the fused kernel where torch has one for these tensors (CPU and CUDA
    floats: one pass over each tensor instead of a dozen; transformers' Trainer's default), equal to the
    plain one to rounding."""
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    if cfg.fused_adamw and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(params, **kwargs)


def _one_step(run: _Run, loss_fn: Callable, device) -> tuple[float, dict]:
    """Forward and backward over run.accum micro-batches; (mean loss, mean named parts)."""
    total, parts = 0.0, {}
    for _ in range(run.accum):
        loss, named = loss_fn(run.model, *[s.next(device) for s in run.sources])
        (loss / run.accum).backward()
        total += float(loss.detach()) / run.accum
        for k, v in named.items():
            parts[k] = parts.get(k, 0.0) + float(v) / run.accum
    return total, parts


def _step_with_backoff(run: _Run, loss_fn: Callable, step: int, device) -> tuple[float, dict]:
    run.opt.zero_grad(set_to_none=True)
    oom = None
    try:
        return _one_step(run, loss_fn, device)
    except torch.OutOfMemoryError as exc:  # torch.cuda.OutOfMemoryError is this class
        if run.backoff is not None or not run.sources[0].can_halve():
            raise
        oom = str(exc).splitlines()[0][:300] if str(exc) else "out of memory"
    # Back off once: half the micro-batch, twice the accumulation (the same rows per optimizer step), and
    # redo this step from a clean gradient; a second OOM fails the run. Outside the except block, so the
    # failed step's traceback (holding its activations) is already freed.
    run.opt.zero_grad(set_to_none=True)
    _free_memory(device)
    was = run.sources[0].batch
    for source in run.sources:
        source.halve()
    run.accum *= 2
    run.backoff = {"step": step, "batch_size_before": was, "batch_size": run.sources[0].batch,
                   "grad_accum": run.accum, "error": oom}
    print(f"expunge: out of memory at step {step} with batch {was}; retrying with batch "
          f"{run.sources[0].batch} x {run.accum} accumulation", file=sys.stderr, flush=True)
    run.progress(phase="oom-backoff", total=run.cfg.steps, **run.backoff)
    return _one_step(run, loss_fn, device)


def _resume(run: _Run, checkpoints: Checkpoints) -> tuple[int, dict | None]:
    """(the step to continue after, the RNG state to restore) from a matching checkpoint, else (0, None)."""
    if not checkpoints.path.is_file():
        return 0, None
    state = torch.load(checkpoints.path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != checkpoints.fingerprint:
        run.progress(phase="resume", step=0, total=run.cfg.steps,
                     note="checkpoint belongs to other hyperparameters; starting over")
        return 0, None
    with torch.no_grad():
        for n, p in zip(run.names, run.params, strict=True):
            p.copy_(state["params"][n].to(p.device, p.dtype))
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    for source, saved in zip(run.sources, state["sources"], strict=True):
        source.load(saved)
    start = int(state["step"])
    run.progress(phase="resume", step=start, total=run.cfg.steps)
    return start, state["rng"]


def _save(run: _Run, checkpoints: Checkpoints, step: int, cuda: list[int]) -> None:
    from store.files import replace_file

    state = {
        "fingerprint": checkpoints.fingerprint, "step": step,
        "params": {n: p.detach().cpu().clone() for n, p in zip(run.names, run.params, strict=True)},
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "sources": [s.state() for s in run.sources],
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(cuda[0]) if cuda else None},
    }
    checkpoints.path.parent.mkdir(parents=True, exist_ok=True)
    # A kill mid-write leaves the previous checkpoint intact.
    replace_file(checkpoints.path, lambda fh: torch.save(state, fh))


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

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
