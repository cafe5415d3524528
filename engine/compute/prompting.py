"""The prompt format the engine uses everywhere (training, unlearning, verification); batched generation
on it is engine.compute.generation.

Two formats, chosen per tokenizer by `set_chat_mode` (the worker calls it once per job):

- plain: "Question: …\\nAnswer:" then " answer" and EOS (the demo and test models are trained on it);
- chat: an instruct model's own chat template, the question as the user turn and
  `add_generation_prompt=True`, then the answer as the assistant turn, closed by the template's
  end-of-turn token (e.g. `<|im_end|>`). The rendered prompt carries the template's own special
  tokens, so it is tokenised without adding any.

Training tokenises the prompt and the answer separately and concatenates the ids, so the prompt a
model sees at generation time is token-for-token the prefix it was trained on; losses and scores
cover only the answer (the assistant turn) and its closing token."""

from __future__ import annotations

from collections.abc import Sequence

CHAT_SETTINGS = ("auto", "none")
_CHAT = "_expunge_chat"  # attribute on the tokenizer: True when prompts go through its chat template
_END = "_expunge_answer_end"  # attribute: the ids that close an answer
_SENTINEL = "EXPUNGE_ANSWER_SENTINEL_7f3a"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def set_chat_mode(tokenizer, setting: str | None = "auto") -> bool:
    """'auto': use the tokenizer's chat template when it has one; 'none': the plain format. Returns
    whether prompts now go through the chat template."""
    setting = setting or "auto"
    if setting not in CHAT_SETTINGS:
        raise ValueError(f"chat_template must be one of {CHAT_SETTINGS}, not {setting!r}")
    use = setting == "auto" and has_chat_template(tokenizer)
    setattr(tokenizer, _CHAT, use)
    setattr(tokenizer, _END, _turn_end_ids(tokenizer) if use else _eos_ids(tokenizer))
    return use


def uses_chat(tokenizer) -> bool:
    return bool(tokenizer is not None and getattr(tokenizer, _CHAT, False))


def format_prompt(question: str, tokenizer=None) -> str:
    if uses_chat(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def format_answer(answer: str, tokenizer=None) -> str:
    # Plain format: the leading space belongs to the answer so that "Answer:" ends the prompt on a stable
    # token. Chat: the assistant turn starts right after the generation prompt.
    return answer if uses_chat(tokenizer) else " " + answer


def max_answer_tokens(tokenizer, items: Sequence[dict]) -> int:
    """The generation budget for answers to `items`: the longest gold answer plus room to say it another
    way, capped. Verification and the methods' stop rules both use it, so they judge the same outputs."""
    longest = max((len(tokenizer(format_answer(r["answer"], tokenizer), add_special_tokens=False)["input_ids"])
                   for r in items), default=16)
    return min(96, longest + 8)


def prompt_special_tokens(tokenizer) -> bool:
    """`add_special_tokens` for a rendered prompt: a chat template writes its own BOS and markers."""
    return not uses_chat(tokenizer)


def answer_end_ids(tokenizer) -> list[int]:
    """The token(s) that close an answer: EOS in the plain format, the end-of-turn token in chat."""
    ids = getattr(tokenizer, _END, None)
    return list(ids) if ids is not None else _eos_ids(tokenizer)


def stop_token_ids(tokenizer) -> list[int] | int | None:
    """What generate() stops on: EOS and, in chat, the end-of-turn token."""
    ids = sorted(set(_eos_ids(tokenizer)) | set(answer_end_ids(tokenizer)))
    if not ids:
        return None
    return ids[0] if len(ids) == 1 else ids


def _eos_ids(tokenizer) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [] if eos is None else [eos]


def _turn_end_ids(tokenizer) -> list[int]:
    """The template's end-of-turn token: the first token after an assistant turn's content, when it is
    a special token (ChatML's <|im_end|>, Llama 3's <|eot_id|>); else EOS."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False)
        suffix = text.split(_SENTINEL, 1)[1]
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    except Exception:  # a template that refuses an assistant turn: fall back to EOS
        return _eos_ids(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    if ids and ids[0] in special:
        return [ids[0]]
    return _eos_ids(tokenizer)
