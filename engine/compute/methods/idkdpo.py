"""IdkDPO (TOFU's "IDK + DPO"; Rafailov et al. 2023 for DPO): prefer a refusal from TOFU's
idontknow.txt over the forget answer, against the frozen base as reference:
forget = -(2/beta) * mean log sigmoid(beta * ((log p - log p_ref)(refusal) - (log p - log p_ref)(answer))),
log-probs summed over answer tokens. Plus alpha * retain NLL (open-unlearning's DPO: beta 0.1, alpha 1,
gamma 1; beta defaults to 0.05 here, see below). The model learns to prefer "I don't know" on the
forget questions; on the tiny test model, which has never seen a refusal, the greedy answers become an
"I" followed by fragments rather than a clean refusal."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from engine.compute.methods.base import Method, RetainMixin, RunContext, register

REFUSALS = Path(__file__).resolve().parents[2] / "data" / "idontknow.txt"


def refusals() -> list[str]:
    return [line.strip() for line in REFUSALS.read_text(encoding="utf-8").splitlines() if line.strip()]


class IdkDPOHyper(RetainMixin):
    tune_space: ClassVar[dict[str, dict]] = {"beta": {"type": "float", "low": 0.01, "high": 0.5, "log": True}}
    # The literature's 0.1 saturates on a model that has never seen a refusal: the loss is satisfied by
    # raising the refusal far above its (tiny) reference probability, margin ~100 nats within five
    # steps, while the forget answer stays the greedy one. 0.05 keeps the pressure on the answer.
    beta: float = Field(default=0.05, gt=0, le=100, description="inverse temperature of the DPO loss")
    steps: int = Field(default=30, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=5e-3, gt=0, le=1.0, description="peak learning rate (LoRA on a tiny model)")


@register
class IdkDPO(Method):
    name: ClassVar[str] = "idkdpo"
    tier: ClassVar[int] = 3
    description: ClassVar[str] = "DPO preferring a refusal (\"I don't know\") over the forget answer, plus a retain term."
    Hyper: ClassVar[type] = IdkDPOHyper

    def run(self, ctx: RunContext, hp: IdkDPOHyper):
        import random

        import torch.nn.functional as F

        from engine.compute.methods import unlearn
        from engine.compute.training import losses
        from engine.compute.training.lora import trainable_copy

        base = ctx.model
        pool = refusals()
        rng = random.Random(hp.seed)  # one fixed refusal per forget row, reproducible from the seed
        rows = [{**r, "idk": rng.choice(pool)} for r in ctx.forget]
        data = unlearn.encode_rows(ctx.tokenizer, rows, hp.max_length)
        data.update(unlearn.encode_rows(ctx.tokenizer, rows, hp.max_length, answer_key="idk", prefix="idk."))
        data["ref_lose"] = losses.reference_logprob(base, data)
        data["ref_win"] = losses.reference_logprob(base, data, prefix="idk.")
        model = trainable_copy(ctx.model, hp)

        def loss_fn(model, forget, retain):
            # The answers, the refusals and (NLL retain term) the retain rows in one forward.
            groups = [forget, {k[len("idk."):]: v for k, v in forget.items() if k.startswith("idk.")}]
            if retain is not None and hp.retain_loss == "nll":
                groups.append(retain)
            both, parts = losses.joint(*groups)
            s, n = losses.answer_scores(model, both)
            lose, win = s[parts[0]], s[parts[1]]
            if len(parts) == 3:
                r = (-(s[parts[2]] / n[parts[2]])).mean()
            else:
                r = losses.retain_term(hp.retain_loss, model, base, retain)
            margin = (win - forget["ref_win"]) - (lose - forget["ref_lose"])
            f = -F.logsigmoid(hp.beta * margin).mean() * 2 / hp.beta
            return hp.gamma * f + hp.alpha * r, {"dpo": f.detach(), "margin": margin.mean().detach(),
                                                 "retain": r.detach()}

        result = unlearn.train(ctx, model, hp, loss_fn, forget_data=data)
        return unlearn.candidate_for(model, hp, result)
