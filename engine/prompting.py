"""The one prompt format the engine uses everywhere (training, unlearning, verification), and batched
greedy generation on it.

Training tokenises the prompt and the answer separately and concatenates the ids, so the prompt a
model sees at generation time is token-for-token the prefix it was trained on."""

from __future__ import annotations

from collections.abc import Sequence


def format_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def format_answer(answer: str) -> str:
    # The leading space belongs to the answer so that "Answer:" ends the prompt on a stable token.
    return " " + answer


def greedy_answers(model, tokenizer, questions: Sequence[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy answers to plain `questions` (format_prompt is applied here), decoded and stripped.

    Left padding keeps every prompt's last token adjacent to its first generated token; generate()
    derives position ids from the attention mask, so padded rows see the same positions as unpadded ones."""
    import torch

    if not questions:
        return []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(questions), batch_size):
                prompts = [format_prompt(q) for q in questions[start : start + batch_size]]
                enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    use_cache=True,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out
