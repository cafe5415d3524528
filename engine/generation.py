"""Batched generation for verification and attacks: left padding, KV cache, an optional decode-time guard."""

from __future__ import annotations

import torch

from engine.prompting import format_prompt, prompt_special_tokens, stop_token_ids


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
    was_training = model.training
    model.eval()
    n = num_samples if sample else 1
    results: list[list[str]] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            for start in range(0, len(questions), batch_size):
                chunk = questions[start : start + batch_size]
                prompts = chunk if raw_prompts else [format_prompt(q, tokenizer) for q in chunk]
                enc = tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=prompt_special_tokens(tokenizer)).to(device)
                kwargs = dict(max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad_id,
                              eos_token_id=stop_token_ids(tokenizer), num_return_sequences=n)
                if sample:
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
                else:
                    kwargs.update(do_sample=False, num_beams=1)
                processors = guard.logits_processors() if guard is not None else None
                if processors is not None:
                    kwargs["logits_processor"] = processors
                out = model.generate(**enc, **kwargs)
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                texts = [t.strip() for t in texts]
                if guard is not None:
                    texts = guard.finish(texts, processors)
                for i in range(len(chunk)):
                    results.append(texts[i * n : (i + 1) * n])
    finally:
        tokenizer.padding_side = old_side
        torch.random.set_rng_state(generator_state)
        if was_training:
            model.train()
    return results


def greedy(model, tokenizer, questions: list[str], **kwargs) -> list[str]:
    return [outs[0] for outs in generate(model, tokenizer, questions, **kwargs)]
