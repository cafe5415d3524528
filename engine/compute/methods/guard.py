"""Tier 1, suppress: a decode-time guard (banned token sequences + redaction); the weights stay the base's."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from engine.compute.guard import REFUSAL
from engine.compute.methods.base import Hyper, Method, RunContext, register


class GuardHyper(Hyper):
    extra_strings: list[str] = Field(default_factory=list, max_length=1000,
                                     description="strings to block besides the request's sensitive strings")
    redact: bool = Field(default=True, description="mask whatever slips past the banned sequences")
    replacement: str = Field(default="[REDACTED]", min_length=1, max_length=100)
    on_block: Literal["refuse", "redact"] = Field(
        default="refuse", description="refuse: an answer the guard had to block or redact becomes the refusal; "
                                      "redact: keep the rest of the answer")
    refusal: str = Field(default=REFUSAL, min_length=1, max_length=300, description="what a refused answer says")

    @field_validator("extra_strings")
    @classmethod
    def _strings(cls, values: list[str]) -> list[str]:
        if any(not v.strip() or len(v) > 500 for v in values):
            raise ValueError("each string must be 1 to 500 characters")
        return values


@register
class GuardMethod(Method):
    name: ClassVar[str] = "guard"
    tier: ClassVar[int] = 1
    description: ClassVar[str] = ("Decode-time guard: bans every tokenisation variant of the sensitive strings, "
                                  "refuses an answer it had to block and redacts what slips through. "
                                  "No weight changes; reversible.")
    Hyper: ClassVar[type[Hyper]] = GuardHyper

    def run(self, ctx: RunContext, hp: GuardHyper):
        from engine.compute.candidate import Candidate
        from engine.compute.guard import Guard

        ctx.progress(phase="guard", step=0, total=1)
        guard = Guard.build(list(ctx.sensitive) + list(hp.extra_strings), ctx.forget, ctx.tokenizer,
                            replacement=hp.replacement, redact=hp.redact, on_block=hp.on_block,
                            refusal=hp.refusal)
        ctx.progress(phase="guard", step=1, total=1, strings=len(guard.strings),
                     sequences=len(guard.bad_words_ids))
        # The candidate's model is the base itself: nothing is copied or changed.
        return Candidate(model=ctx.model, kind="guard", guard=guard,
                         info={"strings": len(guard.strings), "banned_sequences": len(guard.bad_words_ids),
                               "from_sensitive": bool(ctx.sensitive)})
