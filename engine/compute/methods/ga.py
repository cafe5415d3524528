"""Gradient ascent (GA): maximise the NLL of the forget answers. The plain baseline of the field
(Jang et al. 2023; TOFU's "GA"); unbounded and without a retain term, so it collapses the model when
run for long, which is why it stops once the forget answers are gone and why GradDiff / NPO exist.

Unlike the other tier-3 methods GA defaults to full weights (lora=False) with a small learning rate:
on the tests' tiny model a rank-8 LoRA adapter degrades the retain set at least as fast as the forget
set at every learning rate tried. Even so GA is not selective there: stopped as soon as one person's
answers are gone (forget ROUGE-L at most 0.45 of before), it has cost 3-15% of the retain set on tiny
models of three seeds; run on for all 100 steps, 76-99%. That is the field's finding too (TOFU: GA
destroys model utility); use GradDiff, NPO or SimNPO when the rest must survive. The end-of-answer token is
left out of the ascent by default: pushing it down teaches the model to ramble on every answer."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.compute.methods.base import GradientHyper, Method, RunContext, register, stop_forget_rouge_field


class GAHyper(GradientHyper):
    lora: bool = Field(default=False, description="train a LoRA adapter (default: update every weight, see above)")
    steps: int = Field(default=100, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=1e-4, gt=0, le=1.0, description="peak learning rate")
    # Unbounded: past the point where the forget answers are gone it only takes the rest with it (tiny models
    # of three seeds, 100 steps: retain ROUGE-L 0.24, 0.07, 0.01 of before; stopped at 0.45: 0.85-0.97).
    stop_forget_rouge: float | None = stop_forget_rouge_field(0.45)
    ascend_eos: bool = Field(default=False, description="also push down the end-of-answer token (makes the "
                             "model ramble on every answer, so off by default)")


@register
class GradientAscent(Method):
    name: ClassVar[str] = "ga"
    tier: ClassVar[int] = 3
    description: ClassVar[str] = "Gradient ascent on the forget answers (no retain term): fast, blunt, collapses if run long."
    Hyper: ClassVar[type] = GAHyper

    def run(self, ctx: RunContext, hp: GAHyper):
        from engine.compute.methods import unlearn
        from engine.compute.tokens import without_answer_ends
        from engine.compute.training import losses
        from engine.compute.training.lora import trainable_copy

        model = trainable_copy(ctx.model, hp)

        forget_data = unlearn.encode_rows(ctx.tokenizer, ctx.forget, hp.max_length)
        if not hp.ascend_eos:
            # Ascending the closing target teaches the model never to stop, on every answer.
            forget_data["labels"] = without_answer_ends(forget_data["labels"], ctx.tokenizer)

        def loss_fn(model, forget, retain):
            s, n = losses.answer_scores(model, forget)
            f = (-(s / n)).mean()
            return -f, {"forget_nll": f.detach()}

        result = unlearn.train(ctx, model, hp, loss_fn, forget_data=forget_data, use_retain=False)
        return unlearn.candidate_for(model, hp, result)
