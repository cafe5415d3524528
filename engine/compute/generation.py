"""Batched generation for verification and attacks: left padding, KV cache, an optional decode-time guard.

Out of GPU memory, generation backs off once: the failed batch is retried at half the size, every later call in
the job keeps to that size, and a second out-of-memory error fails the job. The worker runs one job at a time and
resets this per job (`reset_backoff`), then records what happened (`backoff`)."""

from __future__ import annotations

import sys

import torch

from engine.compute.modeling import evaluating
from engine.compute.prompting import format_prompt, prompt_special_tokens, stop_token_ids

_cap: dict = {"batch_size": None, "record": None}


def reset_backoff() -> None:
    _cap.update(batch_size=None, record=None)


def backoff() -> dict | None:
    """The back-off taken since the last reset: {"batch_size_before", "batch_size", "error"}, or None."""
    return _cap["record"]


def generate(model, tokenizer, questions: list[str], *, max_new_tokens: int = 48, guard=None, sample: bool = False,
             num_samples: int = 1, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
             raw_prompts: bool = False, seed: int = 0) -> list[list[str]]:
    """For each question, `num_samples` answers (greedy gives one). A guard adds its logits processors
    to every call and refuses or redacts what it blocked, exactly as it would in deployment."""
    if not questions:
        return []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    n = num_samples if sample else 1
    results: list[list[str]] = []
    kwargs = dict(max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad_id,
                  eos_token_id=stop_token_ids(tokenizer), num_return_sequences=n)
    if sample:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, num_beams=1)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with evaluating(model, inference=True):
            start = 0
            while start < len(questions):
                size = min(batch_size, _cap["batch_size"] or batch_size)
                chunk = questions[start : start + size]
                oom = None
                try:
                    texts = _generate_batch(model, tokenizer, chunk, guard, raw_prompts, device, dict(kwargs))
                except torch.OutOfMemoryError as exc:  # torch.cuda.OutOfMemoryError is this class
                    if _cap["record"] is not None or size <= 1:
                        raise
                    oom = str(exc).splitlines()[0][:300] if str(exc) else "out of memory"
                if oom is not None:
                    # Outside the except block, so the failed batch's tensors are already freed.
                    _back_off(size, oom, device)
                    continue
                for i in range(len(chunk)):
                    results.append(texts[i * n : (i + 1) * n])
                start += len(chunk)
    finally:
        tokenizer.padding_side = old_side
        torch.random.set_rng_state(generator_state)
    return results


def _generate_batch(model, tokenizer, chunk: list[str], guard, raw_prompts: bool, device, kwargs: dict) -> list[str]:
    prompts = chunk if raw_prompts else [format_prompt(q, tokenizer) for q in chunk]
    enc = tokenizer(prompts, return_tensors="pt", padding=True,
                    add_special_tokens=prompt_special_tokens(tokenizer)).to(device)
    processors = guard.logits_processors() if guard is not None else None
    if processors is not None:
        kwargs["logits_processor"] = processors
    out = model.generate(**enc, **kwargs)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    texts = [t.strip() for t in texts]
    return guard.finish(texts, processors) if guard is not None else texts


def _back_off(size: int, error: str, device) -> None:
    half = max(1, size // 2)
    _cap.update(batch_size=half, record={"batch_size_before": size, "batch_size": half, "error": error})
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"expunge: out of memory generating a batch of {size}; retrying at {half} for the rest of the job",
          file=sys.stderr, flush=True)


def greedy(model, tokenizer, questions: list[str], **kwargs) -> list[str]:
    return [outs[0] for outs in generate(model, tokenizer, questions, **kwargs)]
