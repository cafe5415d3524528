"""RMU, representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark", section 5).

At decoder block l, the forget activations are pushed toward a fixed random direction scaled by a
steering coefficient, while the retain activations are held where the frozen base has them:

    loss = MSE(h_l(forget), c * u) + alpha * MSE(h_l(retain), h_l^base(retain))

Only the MLP output projections (down_proj) of blocks l-2..l change, as in the paper. u is a seeded
random unit vector; like the reference code it is drawn uniformly from [0, 1)^d and normalised.

The steering coefficient: the paper uses c = 6.5 (Zephyr-7B) to 300, a multiple of the activation
scale of those models. Tiny models have tiny activation norms, so here c = steer * mean ||h_l|| over
the forget positions (measured once on the base), which makes `steer` mean the same on any model.

Forget positions: by default those that predict answer tokens (after the question, so after the
subject's name): the question's opening words are shared with retain questions and cannot be told
apart there. The artifact is a weight delta (after - before of the changed matrices)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.compute.methods.base import (
    Method,
    RunContext,
    TrainHyper,
    register,
    stop_every_field,
    stop_forget_rouge_field,
)

# The MLP output projection under the names common architectures give it.
DOWN_PROJ_NAMES = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h", "feed_forward.w2",
                   "mlp.experts.down_proj")


class RMUHyper(TrainHyper):
    # The layer steered is searched over the model's decoder blocks, as well as how hard and how much retain.
    tune_space: ClassVar[dict[str, dict]] = {"layer": {"type": "layer"},
                                             "steer": {"type": "float", "low": 1.0, "high": 20.0, "log": True},
                                             "alpha": {"type": "float", "low": 1.0, "high": 200.0, "log": True}}
    layer: int | None = Field(default=None, ge=0, le=1000,
                              description="decoder block to steer (0-based); None = picked by locate")
    steer: float = Field(default=4.0, gt=0, le=1000,
                         description="steering coefficient as a multiple of the mean activation norm at the layer")
    alpha: float = Field(default=50.0, ge=0, le=1e6, description="weight of the retain activation loss")
    forget_positions: Literal["answer", "all"] = Field(
        default="answer", description="forget positions steered: those predicting answer tokens, or every token")
    # At most 80 steps, ended once the forget answers are gone: a fixed 40 left forget ROUGE-L at 0.59-0.65 on
    # two of three tiny models (each CPU's rounding builds a slightly different one); 80 took 24-80.
    steps: int = Field(default=80, ge=1, le=100_000, description="optimizer steps (at most)")
    stop_forget_rouge: float | None = stop_forget_rouge_field(0.45)
    stop_every: int = stop_every_field(2)
    lr: float = Field(default=1e-3, gt=0, le=1.0, description="peak learning rate")


def decoder_blocks(model):
    """The model's list of decoder blocks (the ModuleList as long as config.num_hidden_layers)."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers",
                 "model.language_model.layers"):
        mod = model
        for part in name.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if isinstance(mod, torch.nn.ModuleList):
            return mod
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def down_proj(block):
    for name in DOWN_PROJ_NAMES:
        mod = block
        for part in name.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is not None and hasattr(mod, "weight"):
            return mod
    raise ValueError(f"cannot find the MLP output projection of {type(block).__name__}")


class _Stop(Exception):
    pass


class _Capture:
    """Run the model only up to block `index` and return that block's output hidden states."""

    def __init__(self, model, index: int) -> None:
        self.model, self.block = model, decoder_blocks(model)[index]
        self.out = None

    def _hook(self, module, args, output):
        self.out = output[0] if isinstance(output, tuple) else output
        raise _Stop

    def __call__(self, input_ids, attention_mask):
        handle = self.block.register_forward_hook(self._hook)
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        out, self.out = self.out, None
        return out


def _positions(batch: dict, kind: str):
    """Boolean mask of the positions the forget loss steers."""
    if kind == "all":
        return batch["attention_mask"].bool()
    labels = batch["labels"]
    pos = (labels != -100).clone()
    # Position t predicts token t+1: shift left so the last prompt token (which predicts the answer's
    # first token) is included and the EOS position is not.
    pos[:, :-1] = pos[:, 1:].clone()
    pos[:, -1] = False
    return pos


def _masked_mse(x, target, mask):
    diff = (x.float() - target.float()) ** 2
    return diff[mask].mean()


@register
class RMU(Method):
    name: ClassVar[str] = "rmu"
    tier: ClassVar[int] = 2
    description: ClassVar[str] = ("Representation misdirection: steer forget activations at the located layer to a "
                                  "random direction, keep retain activations; edits 3 MLP matrices.")
    Hyper: ClassVar[type] = RMUHyper

    def run(self, ctx: RunContext, hp: RMUHyper):
        import copy

        import torch

        from engine.compute.candidate import Candidate
        from engine.compute.locate import locate, pick_layer
        from engine.compute.methods import unlearn
        from engine.compute.modeling import evaluating

        n_blocks = len(decoder_blocks(ctx.model))
        if hp.layer is None:
            rows = ctx.extra.get("locate")
            if not rows:
                ctx.progress(phase="locate", step=0, total=1)
                rows = locate(ctx.model, ctx.tokenizer, ctx.forget, batch_size=hp.batch_size)
                ctx.extra["locate"] = rows
            layer = pick_layer(rows)
        else:
            if hp.layer >= n_blocks:
                raise ValueError(f"layer {hp.layer} does not exist: the model has {n_blocks} blocks (0-{n_blocks - 1})")
            layer = hp.layer
        edited = list(range(max(0, layer - 2), layer + 1))
        ctx.extra["rmu_layer"] = layer

        model = copy.deepcopy(ctx.model)
        model.requires_grad_(False)
        blocks = decoder_blocks(model)
        named = {id(p): n for n, p in model.named_parameters()}
        params = []
        for i in edited:
            w = down_proj(blocks[i]).weight
            w.requires_grad_(True)
            params.append(w)
        before = {named[id(p)]: p.detach().clone().cpu() for p in params}

        forget_data = unlearn.encode_rows(ctx.tokenizer, ctx.forget, hp.max_length)
        base_capture, capture = _Capture(ctx.model, layer), _Capture(model, layer)
        device = next(ctx.model.parameters()).device

        # The steering scale, measured once on the base at the steered positions.
        with evaluating(ctx.model):
            batch = {k: v.to(device) for k, v in forget_data.items()}
            h = base_capture(batch["input_ids"], batch["attention_mask"])
            mean_norm = float(h[_positions(batch, hp.forget_positions)].float().norm(dim=-1).mean())
        coeff = hp.steer * mean_norm
        gen = torch.Generator().manual_seed(hp.seed)
        u = torch.rand(h.shape[-1], generator=gen)
        control = (u / u.norm() * coeff).to(device)

        def loss_fn(model, forget, retain):
            hf = capture(forget["input_ids"], forget["attention_mask"])
            mask = _positions(forget, hp.forget_positions)
            f = _masked_mse(hf, control.expand_as(hf), mask)
            if retain is None:
                r = torch.zeros((), device=hf.device)
            else:
                hr = capture(retain["input_ids"], retain["attention_mask"])
                with evaluating(ctx.model):
                    target = base_capture(retain["input_ids"], retain["attention_mask"])
                r = _masked_mse(hr, target, retain["attention_mask"].bool())
            return f + hp.alpha * r, {"forget_mse": f.detach(), "retain_mse": r.detach()}

        result = unlearn.train(ctx, model, hp, loss_fn, params, forget_data=forget_data)
        info = unlearn.run_info(result, layer=layer, edited_blocks=edited, steering_coeff=round(coeff, 6),
                             mean_norm=round(mean_norm, 6))
        return Candidate(model=model, kind="delta", files=before, info=info)
