"""What an unlearning method's run adds to the loop: the job's forget and retain rows as seeded batch
sources, checkpoints in the job's folder that resume only the same run, the hyperparameters' schedule
and stop rule, and the candidate it hands back."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.compute.training import loop

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.compute.methods.base import GradientHyper, RunContext, TrainHyper

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
# The hyperparameters' decay after the warmup, as transformers names it.
SCHEDULE_NAMES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
# Part of every checkpoint's fingerprint: a checkpoint of another layout never resumes.
CHECKPOINT_FORMAT = "2"


def encode_rows(tokenizer, rows: list[dict], max_length: int, answer_key: str = "answer", prefix: str = "",
                keep: bool = False) -> dict:
    """{prefix+"input_ids", prefix+"attention_mask", prefix+"labels"}: right-padded, labels on the answer. Rows
    scored after the base's lead-in (engine.compute.verify.leadin) are unlearned on the answer's tokens alone; rows
    to `keep` also on the rest of the base's sentence and the closing token, so the model goes on ending it."""
    from engine.compute.tokens import encode_qa

    ids, mask, labels = encode_qa(tokenizer, rows, max_length=max_length, answer_key=answer_key, train=keep)
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask, f"{prefix}labels": labels}


def loop_config(hp: TrainHyper) -> loop.LoopConfig:
    return loop.LoopConfig(
        steps=hp.steps, lr=hp.lr, seed=hp.seed, grad_accum=hp.grad_accum,
        warmup_steps=int(round(hp.warmup * hp.steps)),
        schedule=SCHEDULE_NAMES[getattr(hp, "schedule", "cosine")], weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm, activation_checkpointing=bool(getattr(hp, "gradient_checkpointing", False)),
        fused_adamw=True)


def _fingerprint(hp: TrainHyper, model, params) -> str:
    # A checkpoint only resumes the same job: same hyperparameters, same trainable tensors.
    by_id = {id(p): n for n, p in model.named_parameters()}
    body = CHECKPOINT_FORMAT + "|" + hp.model_dump_json() + "|" + ",".join(by_id[id(p)] for p in params)
    return hashlib.sha256(body.encode()).hexdigest()


def train(ctx: RunContext, model, hp: TrainHyper, loss_fn: Callable, params=None, *,
          forget_data: dict | None = None, retain_data: dict | None = None, use_retain: bool = True,
          stop: Callable | None = None) -> dict:
    """Optimise `model` (already a private copy) in place with `loss_fn(model, forget_batch, retain_batch)`;
    return the loop's summary.

    `params` defaults to the parameters with requires_grad. `forget_data` / `retain_data` default to
    the encoded ctx.forget / ctx.retain rows; a method passes its own dicts of row-aligned tensors when a
    batch needs more (refusal answers, precomputed reference log-probs). No retain rows: retain_batch is
    None (also with use_retain=False, for methods without a retain term). `stop` defaults to the
    hyperparameters' forget-ROUGE rule, if set. With ctx.resume and a matching checkpoint in
    ctx.work_dir/checkpoint the run continues from it. With `hp.retarget_leaks` (and the loop's own forget rows)
    the answers that still leak become forget rows as the run goes (engine.compute.methods.retarget)."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    own_forget_rows = forget_data is None  # rows the loop encodes itself: retargeting can add more of them
    if forget_data is None:
        forget_data = encode_rows(ctx.tokenizer, ctx.forget, hp.max_length)
    if not use_retain:
        retain_data = None
    elif retain_data is None and ctx.retain:
        retain_data = encode_rows(ctx.tokenizer, ctx.retain, hp.max_length, keep=True)
    # Rows of similar length batched together, each batch trimmed to its longest row.
    cycler = loop.LengthGroupedCycler if hp.length_grouped else loop.Cycler
    sources = [cycler(forget_data, hp.batch_size, hp.seed)]
    if retain_data:
        sources.append(cycler(retain_data, hp.batch_size, hp.seed + 1))
    stop = stop or ctx.stop
    if stop is None and getattr(hp, "stop_forget_rouge", None):
        from engine.compute.methods.stop import forget_rouge_stop

        stop = forget_rouge_stop(ctx, hp.stop_forget_rouge, getattr(hp, "stop_every", 1))
    retarget = None
    if getattr(hp, "retarget_leaks", False) and ctx.sensitive and own_forget_rows:
        from engine.compute.methods.retarget import LeakRetarget, chained
        from engine.compute.prompting import max_answer_tokens

        retarget = LeakRetarget(ctx.tokenizer, ctx.forget, ctx.sensitive,
                                max_answer_tokens(ctx.tokenizer, ctx.forget + ctx.retain), getattr(hp, "stop_every", 2),
                                extend=lambda rows: sources[0].extend(encode_rows(ctx.tokenizer, rows, hp.max_length)))
        stop = chained(retarget, stop)
    checkpoints = loop.Checkpoints(path=Path(ctx.work_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE,
                                   every=hp.checkpoint_every, fingerprint=_fingerprint(hp, model, params),
                                   resume=ctx.resume)
    result = loop.train(model, lambda m, forget, retain=None: loss_fn(m, forget, retain), sources, loop_config(hp),
                        params=params, progress=ctx.progress, stop=stop, checkpoints=checkpoints)
    return {**result, **retarget.summary()} if retarget is not None else result


def candidate_for(model, hp: GradientHyper, result: dict, **info: Any):
    """The trained copy as a candidate: its LoRA adapter (hp.lora) or its full weights, with the run's summary."""
    from engine.compute.candidate import Candidate

    return Candidate(model=model, kind="adapter" if hp.lora else "full", info=run_info(result, **info))


def run_info(result: dict, **more: Any) -> dict:
    return {"train": {k: v for k, v in result.items() if k != "parts"}, **more}
