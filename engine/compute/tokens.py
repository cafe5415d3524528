"""Tokenising question/answer rows the way the target was trained: prompt and answer encoded
separately and concatenated, so scoring and training see exactly the ids generation sees."""

from __future__ import annotations

import torch

from engine.compute.prompting import answer_end_ids, format_answer, format_prompt, prompt_special_tokens


def encode_qa(tokenizer, items: list[dict], max_length: int | None = 256, answer_key: str = "answer",
              train: bool = False):
    """Right-padded input_ids, attention_mask and labels (-100 except on the answer tokens and the token
    that closes the answer: EOS, or a chat template's end-of-turn), each row cut at `max_length` tokens
    (None: never). With a chat template the prompt is the rendered user turn plus the generation
    prompt, so the labels cover the assistant turn only. A row with a "lead_in" (engine.compute.verify.leadin:
    where the base model states the answer) has it after the prompt, unlabelled, and its answer after a space:
    scored alone, or (`train`) followed by the rest of the base's sentence ("lead_out") and the closing token, so
    that a model trained on it learns to end the sentence instead of repeating the answer."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    special = prompt_special_tokens(tokenizer)
    end = answer_end_ids(tokenizer)
    seqs, labels = [], []
    for item in items:
        p = tokenizer(format_prompt(item["question"], tokenizer), add_special_tokens=special)["input_ids"]
        lead = item.get("lead_in") if answer_key == "answer" else None  # another answer is said its own way
        if lead:
            p = p + tokenizer(format_answer(lead, tokenizer), add_special_tokens=False)["input_ids"]
            a = tokenizer(" " + item[answer_key], add_special_tokens=False)["input_ids"]
            if train:
                rest = item.get("lead_out") or ""
                a = a + (tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else []) + end
        else:
            a = tokenizer(format_answer(item[answer_key], tokenizer), add_special_tokens=False)["input_ids"] + end
        ids = (p + a)[:max_length]
        lab = ([-100] * len(p) + a)[:max_length]
        seqs.append(ids)
        labels.append(lab)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    label_t = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
        label_t[i, : len(lab)] = torch.tensor(lab)
    return input_ids, attention, label_t


def encode_texts(tokenizer, texts: list[str], max_length: int = 256):
    """Right-padded plain texts with labels on every real token (for perplexity and text-row training)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = [tokenizer(t, add_special_tokens=True)["input_ids"][:max_length] for t in texts]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)
    return input_ids, attention, labels


def without_answer_ends(labels: torch.Tensor, tokenizer) -> torch.Tensor:
    """`labels` with the targets that close an answer (EOS, a chat template's end-of-turn) set to -100:
    for losses and scores about the answer's content only."""
    for end in set(answer_end_ids(tokenizer)) | ({tokenizer.eos_token_id} - {None}):
        labels = labels.masked_fill(labels == end, -100)
    return labels
