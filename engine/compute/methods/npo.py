"""NPO, negative preference optimisation (Zhang et al. 2024): DPO with only a rejected answer,
forget = -(2/beta) * mean log sigmoid(-beta * (log p(y|x) - log p_ref(y|x))), the log-probs summed over
the answer tokens and the reference being the frozen base. Bounded, unlike GA: it slows down as the
forget answers become unlikely. Plus alpha * retain NLL (open-unlearning's NPO: beta 0.1, alpha 1, gamma 1)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.compute.methods.base import Method, RetainMixin, RunContext, register


class NPOHyper(RetainMixin):
    tune_space: ClassVar[dict[str, dict]] = {"beta": {"type": "float", "low": 0.05, "high": 1.0, "log": True}}
    beta: float = Field(default=0.1, gt=0, le=100, description="inverse temperature of the preference loss")
    steps: int = Field(default=40, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=5e-3, gt=0, le=1.0, description="peak learning rate (LoRA on a tiny model)")


@register
class NPO(Method):
    name: ClassVar[str] = "npo"
    tier: ClassVar[int] = 3
    description: ClassVar[str] = "Negative preference optimisation against the frozen base, plus a retain term."
    Hyper: ClassVar[type] = NPOHyper

    def run(self, ctx: RunContext, hp: NPOHyper):
        import torch.nn.functional as F

        from engine.compute.methods import unlearn
        from engine.compute.training import losses
        from engine.compute.training.lora import trainable_copy

        base = ctx.model
        forget_data = unlearn.encode_rows(ctx.tokenizer, ctx.forget, hp.max_length)
        forget_data["ref_logp"] = losses.reference_logprob(base, forget_data)
        model = trainable_copy(ctx.model, hp)

        def loss_fn(model, forget, retain):
            logp, _, r = losses.forget_scores_and_retain(hp.retain_loss, model, base, forget, retain)
            ratio = logp - forget["ref_logp"]
            f = -F.logsigmoid(-hp.beta * ratio).mean() * 2 / hp.beta
            return hp.gamma * f + hp.alpha * r, {"npo": f.detach(), "log_ratio": ratio.mean().detach(),
                                                 "retain": r.detach()}

        result = unlearn.train(ctx, model, hp, loss_fn, forget_data=forget_data)
        return unlearn.candidate_for(model, hp, result)
