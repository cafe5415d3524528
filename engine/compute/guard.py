"""Tier 1: a decode-time guard. No weight changes: the model stays the base, and two layers stop it from
saying the sensitive strings.

1. Banned token sequences, applied with transformers' `NoBadWordsLogitsProcessor` (a -inf bias).
   For every sensitive string the guard enumerates surface variants (as-is / lower / upper / title
   case; with and without a leading space; attached punctuation and brackets before and after, kept
   only where the tokenizer merges them into different tokens; and for strings with digits the
   re-separated forms "415-555-0142", "415 555 0142", "4155550142", "415.555.0142", "(415) 555-0142")
   and bans the tokenizer's canonical token sequence of each.

   What this alone guarantees, and no more: none of those exact token sequences is ever emitted as a
   contiguous run of tokens (the prompt included), in greedy, sampled or beam decoding. A banned
   multi-token sequence only blocks its LAST token once the rest has been generated, so the model can
   still emit every token but the last (a number tokenised digit by digit leaks all but one digit),
   spell the string with a separator or casing not enumerated ("415/555/0142"), or reach the same text
   through a non-canonical tokenisation (e.g. "Riv"+"era" vs "Ri"+"vera"), which sampling sometimes does.

   The processor also records, per generated sequence, whether a ban removed the token the model
   ranked first: the model was about to say a protected string. With `on_block = "refuse"` (the
   default) that whole answer is replaced by the refusal text, because the rest of it is a near miss
   ("415-555-014" and a made-up last digit) that still discloses most of the string.

2. Redaction of the decoded text (`engine.leaks.mask_sensitive`: case-, space- and
   punctuation-insensitive, digits-only for numbers, spelled-out digits included) replaces whatever
   slipped through with "[REDACTED]". This is the backstop that makes the guarded output free of
   every sensitive string as the verifier's leak metric defines it. With `on_block = "refuse"` a
   redacted answer is refused whole, like a blocked one.

`Guard.load(path, tokenizer)` needs only this module, transformers and the guard.json file."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path

from engine.leaks import key_spans

GUARD_VERSION = 2  # 2: on_block + refusal (version 1 files load as on_block = "redact")
REPLACEMENT = "[REDACTED]"
REFUSAL = "I can't share that information."
ON_BLOCK = ("refuse", "redact")
_CASES = (str, str.lower, str.upper, str.title)
# Characters that may be glued to a string in running text; kept only when the tokenizer merges them.
_BEFORE = ("(", "[", '"', "'", "<", ":", "/", "-", "@", "#", "*")
_AFTER = (".", ",", "'s", "’s", ")", "]", '"', "'", ">", ":", ";", "!", "?", "-", "/", "*", ".\n")

def surface_forms(s: str) -> list[str]:
    """Case and separator variants of one string (no attached punctuation, no leading space)."""
    bases = [s]
    if any(c.isdigit() for c in s) and "@" not in s:
        groups = re.findall(r"[A-Za-z0-9]+", s)
        if len(groups) > 1:
            bases += [sep.join(groups) for sep in ("-", " ", "", ".")]
        digits = "".join(c for c in s if c.isdigit())
        if digits == "".join(groups) and len(digits) == 10:  # a North-American phone number, any grouping
            a, b, c = digits[:3], digits[3:6], digits[6:]
            bases += [f"{a}-{b}-{c}", f"{a} {b} {c}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"({a}) {b} {c}"]
        elif len(groups) == 3 and all(g.isdigit() for g in groups):
            bases.append(f"({groups[0]}) {groups[1]}-{groups[2]}")
    out = []
    for b in bases:
        for case in _CASES:
            out.append(case(b))
    return list(dict.fromkeys(v for v in out if v.strip()))


def redact_pattern(s: str) -> str:
    """A regex for `s` that ignores case, spacing and punctuation between its characters (for the
    standalone README: the same idea as mask_sensitive, in one line of `re`)."""
    chars = [c for c in s if c.isalnum()]
    if not chars:
        return re.escape(s)
    return r"[\W_]{0,3}".join(re.escape(c) for c in chars)


class Guard:
    def __init__(self, strings: Sequence[str], tokenizer=None, replacement: str = REPLACEMENT,
                 redact: bool = True, on_block: str = "refuse", refusal: str = REFUSAL) -> None:
        self.strings = list(dict.fromkeys(s.strip() for s in strings if s and s.strip()))
        if not self.strings:
            raise ValueError("a guard needs at least one string to block")
        if on_block not in ON_BLOCK:
            raise ValueError(f"on_block must be one of {ON_BLOCK}, not {on_block!r}")
        self.on_block = on_block
        self.refusal = refusal
        self.replacement = replacement
        self.redact_enabled = redact
        self.tokenizer = tokenizer
        self.variants: list[str] = []
        self.bad_words_ids: list[list[int]] = []
        if tokenizer is not None:
            self.variants, self.bad_words_ids = self._ban_list(tokenizer)
        self._patterns = [re.compile(redact_pattern(s), re.IGNORECASE) for s in self.strings]

    # ---------------------------------------------------------------- building

    @classmethod
    def build(cls, sensitive: Sequence[str], forget: Sequence[dict], tokenizer, **kwargs) -> Guard:
        """From the request's sensitive strings, or, when it names none, the forget answers' key spans."""
        strings = [s for s in sensitive if s and s.strip()]
        if not strings:
            strings = key_spans(r["answer"] for r in forget if r.get("answer"))
        return cls(strings, tokenizer, **kwargs)

    def _ban_list(self, tokenizer) -> tuple[list[str], list[list[int]]]:
        def ids(texts: list[str]) -> list[list[int]]:
            return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

        variants: list[str] = []
        for s in self.strings:
            for form in surface_forms(s):
                cores = [form, " " + form]
                variants += cores
                core_ids = ids(cores)
                # Attached characters matter only where the tokenizer merges them with the string:
                # otherwise the sequence contains a banned core already and can never be completed.
                pre = [p + c for p in _BEFORE for c in cores]
                post = [c + a for c in cores for a in _AFTER]
                pre_ids, post_ids = ids(pre), ids(post)
                for text, t in zip(pre, pre_ids, strict=True):
                    if not any(_contains(t, c) for c in core_ids):
                        variants.append(text)
                for text, t in zip(post, post_ids, strict=True):
                    if not any(_contains(t, c) for c in core_ids):
                        variants.append(text)
        variants = list(dict.fromkeys(variants))
        seen: set[tuple[int, ...]] = set()
        bad: list[list[int]] = []
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for t in ids(variants):
            t = [i for i in t if i not in special]
            if t and tuple(t) not in seen:
                seen.add(tuple(t))
                bad.append(t)
        return variants, bad

    # ---------------------------------------------------------------- use

    def logits_processors(self):
        """A fresh LogitsProcessorList for one `model.generate(logits_processor=...)` call; pass the same
        list to `finish` with that call's decoded texts."""
        from transformers import LogitsProcessorList

        if not self.bad_words_ids:
            return LogitsProcessorList()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return LogitsProcessorList([_blocking_processor(self.bad_words_ids, eos)])

    def finish(self, texts: Sequence[str], processors=()) -> list[str]:
        """The deployed answers for one generate call's decoded texts (one per generated sequence):
        refused where the processor blocked the model's top choice or redaction found something
        (on_block = "refuse"), else redacted."""
        fired = None
        for proc in processors:
            if getattr(proc, "fired", None) is not None:
                fired = proc.fired.tolist()
        out = []
        for i, text in enumerate(texts):
            redacted = self.redact(text)
            blocked = bool(fired[i]) if fired is not None and i < len(fired) else False
            if self.on_block == "refuse" and (blocked or redacted != text):
                out.append(self.refusal)
            else:
                out.append(redacted)
        return out

    def redact(self, text: str) -> str:
        """Whatever slipped through the processor, replaced by the replacement string."""
        if not self.redact_enabled:
            return text
        from engine.leaks import mask_sensitive

        text = mask_sensitive(text, self.strings, self.replacement)
        for p in self._patterns:
            text = p.sub(self.replacement, text)
        return text

    def leaks(self, text: str) -> list[str]:
        from engine.leaks import contains_sensitive

        return contains_sensitive(text, self.strings)

    # ---------------------------------------------------------------- files

    def to_json(self) -> dict:
        tok = self.tokenizer
        return {
            "format": "expunge-guard",
            "version": GUARD_VERSION,
            "strings": self.strings,
            "replacement": self.replacement,
            "redact": self.redact_enabled,
            "on_block": self.on_block,
            "refusal": self.refusal,
            # For use without expunge: transformers' NoBadWordsLogitsProcessor(bad_words_ids) and re.sub.
            "bad_words_ids": self.bad_words_ids,
            "redact_patterns": [p.pattern for p in self._patterns],
            "variants": self.variants,
            "tokenizer": {"name_or_path": getattr(tok, "name_or_path", None), "vocab_size": len(tok) if tok else None},
            "guarantee": "the listed token sequences are never generated; redaction masks any remaining "
                         "occurrence of the strings (case/space/punctuation-insensitive, digits-only for numbers)",
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, tokenizer=None) -> Guard:
        """Rebuild the guard from guard.json; with a tokenizer the ban list is recomputed for it."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != "expunge-guard":
            raise ValueError(f"{path} is not an expunge guard file")
        guard = cls(data["strings"], tokenizer, replacement=data.get("replacement", REPLACEMENT),
                    redact=data.get("redact", True), on_block=data.get("on_block", "redact"),
                    refusal=data.get("refusal", REFUSAL))
        if tokenizer is None:
            guard.bad_words_ids = [list(map(int, t)) for t in data.get("bad_words_ids", [])]
            guard.variants = list(data.get("variants", []))
        return guard


def _blocking_processor(bad_words_ids: list[list[int]], eos_token_id):
    """transformers' NoBadWordsLogitsProcessor that also records, per sequence, whether a ban removed
    the token the model ranked first (`fired`). Tokens after a sequence's end of text do not count."""
    return _blocking_class()(bad_words_ids, eos_token_id)


@functools.cache
def _blocking_class():
    # Built on first use: importing transformers and torch is the worker's business, not this module's.
    import torch
    from transformers import NoBadWordsLogitsProcessor

    class BlockingBadWords(NoBadWordsLogitsProcessor):
        def __init__(self, bad_words_ids: list[list[int]], eos_token_id) -> None:
            super().__init__(bad_words_ids, eos_token_id=eos_token_id)
            self.fired = None
            self.prompt_len = 0
            self.stop_ids = [] if eos_token_id is None else (
                [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
            self.stop_tensor = None

        def __call__(self, input_ids, scores):
            top = scores.argmax(dim=-1, keepdim=True)
            processed = super().__call__(input_ids, scores)
            if self.fired is None:  # the first decoding step: the prompt ends here
                self.fired = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                self.prompt_len = input_ids.shape[1]
                self.stop_tensor = torch.tensor(self.stop_ids, device=input_ids.device)
            hit = torch.isneginf(processed.gather(1, top)).squeeze(1)
            generated = input_ids[:, self.prompt_len :]
            if self.stop_ids and generated.shape[1]:
                hit &= ~torch.isin(generated, self.stop_tensor).any(dim=1)
            self.fired |= hit
            return processed

    return BlockingBadWords


def _contains(seq: list[int], sub: list[int]) -> bool:
    n = len(sub)
    return n > 0 and any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))
