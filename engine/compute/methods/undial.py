"""UNDIAL, self-distillation with adjusted logits (Dong et al., NAACL 2025, arXiv 2402.10052): the
frozen base is the teacher; on every forget answer token its logits are lowered by beta on the token
the answer has there, and the model is trained towards that softened distribution:
forget = mean over answer tokens of CE(model logits, softmax(base logits - beta * onehot(answer token))).
The target keeps everything the base predicts there except the one answer token, so the loss is bounded
(it is met once the answer token is beta nats less likely than under the base) and the model is not
pushed anywhere else: the paper reports it gentler on utility than GA and NPO. Plus alpha * retain term
(the paper uses none; open-unlearning's UNDIAL: beta 10, gamma 1, alpha 0, lr 1e-4).

The loss reads the teacher's logits on the forget rows each step: with a LoRA adapter the teacher is
the base itself, whose weights the adapter's copy shares (no second model); on full weights it is the
warm base the worker holds anyway. Tokens are the answer's (the labelled ones), not the question's."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.compute.methods.base import Method, RetainMixin, RunContext, register


class UndialHyper(RetainMixin):
    # beta bounds the forget term (it is met once the answer token is beta nats less likely than under the base).
    # Past ~15 the target gives the answer token no mass to speak of and nothing changes (on SmolLM2 beta 15 and 40
    # trained to the same losses, to 3 decimals): the range stops at 20.
    tune_space: ClassVar[dict[str, dict]] = {"beta": {"type": "float", "low": 2.0, "high": 20.0, "log": True}}

    beta: float = Field(default=10.0, gt=0, le=1000,
                        description="how far (in logits) the teacher lowers each forget answer token")
    steps: int = Field(default=40, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=5e-3, gt=0, le=1.0, description="peak learning rate (LoRA on a tiny model)")
    # The loss acts where the answer stands; the model then says it elsewhere in the sentence (SmolLM2: "The
    # language spoken in France is a blend of French"): engine.compute.methods.retarget.
    retarget_leaks: bool = Field(
        default=True, description="every stop_every steps, a forget answer that still names a sensitive string "
                                  "becomes a forget row where it names it (needs sensitive strings)")


@register
class Undial(Method):
    name: ClassVar[str] = "undial"
    tier: ClassVar[int] = 3
    description: ClassVar[str] = ("UNDIAL: self-distil from the base with the forget answer tokens' logits "
                                  "lowered by beta (bounded; gentle on the rest), plus a retain term.")
    Hyper: ClassVar[type] = UndialHyper

    def run(self, ctx: RunContext, hp: UndialHyper):
        from engine.compute.methods import unlearn
        from engine.compute.training.lora import trainable_copy

        model = trainable_copy(ctx.model, hp)
        result = unlearn.train(ctx, model, hp, undial_loss(hp, ctx.model))
        return unlearn.candidate_for(model, hp, result)


def undial_loss(hp: UndialHyper, base):
    """UNDIAL's loss_fn(model, forget, retain); forget and (NLL retain term) retain rows in one forward."""
    import torch

    from engine.compute.modeling import evaluating
    from engine.compute.training import losses

    def loss_fn(model, forget, retain):
        with evaluating(base):
            teacher, _, targets = losses.packed_logits(base, forget)
            teacher = teacher.float()
            teacher[torch.arange(len(targets)), targets] -= hp.beta
            soft = torch.softmax(teacher, -1)
        nf = forget["input_ids"].shape[0]
        if retain is not None and hp.retain_loss == "nll":
            both, (_, r_rows) = losses.joint(forget, retain)
            logits, rows, all_targets = losses.packed_logits(model, both)
            on_forget = rows < nf
            s, n = losses.row_scores(logits[~on_forget], rows[~on_forget] - nf, all_targets[~on_forget],
                                     r_rows.stop - r_rows.start)
            r = (-(s / n)).mean()
            student = logits[on_forget]
        else:
            student, _, _ = losses.packed_logits(model, forget)
            r = losses.retain_term(hp.retain_loss, model, base, retain)
        f = torch.nn.functional.cross_entropy(student.float(), soft)
        return hp.gamma * f + hp.alpha * r, {"undial": f.detach(), "retain": r.detach()}

    return loss_fn
