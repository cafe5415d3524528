"""The method registry and what every method shares: typed hyperparameters, a tier, a description.

Torch-free: the API server validates methods and hyperparameters with it. The training itself is
engine.compute.training."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.schema.errors import SpecError

if TYPE_CHECKING:
    from collections.abc import Callable


class Hyper(BaseModel):
    """Hyperparameters shared by every method; a method subclasses this with its own fields and ranges.

    `tune_space` declares the sensitive ones and the range `expunge escalate --tune` searches for each (one
    class's entries add to, or override, its parents'): {"type": "float", "low", "high", "log"},
    {"type": "int", "low", "high", "step"}, {"type": "categorical", "choices"}, or {"type": "layer"} (a
    decoder block of the model being tuned)."""

    model_config = ConfigDict(extra="forbid")
    tune_space: ClassVar[dict[str, dict]] = {}
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="random seed")

    @classmethod
    def search_space(cls) -> dict[str, dict]:
        """The ranges tuning searches, merged from the base class down."""
        space: dict[str, dict] = {}
        for klass in reversed(cls.__mro__):
            space.update(klass.__dict__.get("tune_space", {}))
        return space


def stop_forget_rouge_field(default: float | None):
    """The early-stop rule's share (engine/compute/methods/stop.py), for a method to set its own default."""
    return Field(default=default, gt=0, le=1,
                 description="stop early once the forget answers' greedy ROUGE-L recall and gold-answer probability "
                             "are at most this share of their values before training and no answer leaks "
                             "(None: run every step)")


def stop_every_field(default: int):
    return Field(default=default, ge=1, le=10_000, description="steps between early-stop checks")


class TrainHyper(Hyper):
    """The shared training loop's knobs (tiers 2 and 3)."""

    # Every method is sensitive to these (open-unlearning issues #141, #167); steps is the most a trial may
    # take: the early stop ends it once the unit targets are met.
    tune_space: ClassVar[dict[str, dict]] = {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "steps": {"type": "int", "low": 10, "high": 120, "step": 10},
    }

    steps: int = Field(default=60, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=1e-3, gt=0, le=1.0, description="peak learning rate")
    batch_size: int = Field(default=16, ge=1, le=1024, description="rows per micro-batch (forget and retain each)")
    grad_accum: int = Field(default=1, ge=1, le=256, description="micro-batches per optimizer step")
    warmup: float = Field(default=0.1, ge=0, le=0.9, description="share of steps spent warming up the learning rate")
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    checkpoint_every: int = Field(default=20, ge=1, le=100_000, description="steps between checkpoints")
    max_length: int = Field(default=128, ge=8, le=8192, description="tokens per row at most")
    # Off by default: the methods' defaults were tuned on uniform batches, and grouped retain batches move
    # them (tiny model, SimNPO: forget ROUGE-L 0.61 instead of 0.0); packing already drops most padding.
    length_grouped: bool = Field(
        default=False, description="batch rows of similar length together (less padding); False: uniform batches")


class GradientHyper(TrainHyper):
    """Knobs of every tier-3 method: the shared loop's, plus the LoRA adapter (the default) or full weights."""

    tune_space: ClassVar[dict[str, dict]] = {"lora_rank": {"type": "categorical", "choices": [4, 8, 16, 32]}}

    lora: bool = Field(default=True, description="train a LoRA adapter (False: update every weight)")
    lora_rank: int = Field(default=8, ge=1, le=1024, description="LoRA rank r")
    lora_alpha: float = Field(default=16.0, gt=0, le=4096, description="LoRA scaling alpha (scale = alpha / r)")
    lora_targets: str | list[str] = Field(
        default="all-linear",
        description="modules that get an adapter; 'all-linear' = every linear projection of attention "
                    "and MLP (peft's rule: all nn.Linear except the output head)")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="learning-rate decay after the warmup")
    stop_forget_rouge: float | None = stop_forget_rouge_field(None)
    stop_every: int = stop_every_field(2)
    gradient_checkpointing: bool = Field(
        default=False, description="recompute activations in the backward pass: less memory, ~30% slower")

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names or any(not n.strip() or len(n) > 200 for n in names):
            raise ValueError("lora_targets must name at least one module (or be 'all-linear')")
        return value


class RetainMixin(GradientHyper):
    """Loss weights of methods with a retain term: gamma * forget + alpha * retain."""

    # The retain term too: an NLL term sharpens the retain answers (on SmolLM2 NPO's held-out retain KL rose to 3.2
    # while their ROUGE-L stayed 1.0), where the KL term holds the base's distribution, which control judges.
    tune_space: ClassVar[dict[str, dict]] = {"alpha": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
                                             "retain_loss": {"type": "categorical", "choices": ["nll", "kl"]}}

    gamma: float = Field(default=1.0, ge=0, le=1e4, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, le=1e4, description="weight of the retain term")
    retain_loss: Literal["nll", "kl"] = Field(
        default="nll", description="retain term: NLL of the retain answers, or token KL to the frozen base")


REGISTRY: dict[str, type[Method]] = {}


@dataclass
class RunContext:
    """What a method gets from the worker for one job."""

    model: Any  # the warm base model: never modified in place
    tokenizer: Any
    forget: list[dict]
    retain: list[dict]
    sensitive: list[str]
    device: str
    work_dir: Path  # this job's private folder: checkpoints, scratch
    progress: Callable[..., None]
    holdout: list[dict] = field(default_factory=list)
    resume: bool = False
    extra: dict = field(default_factory=dict)  # e.g. {"locate": [...]} from an earlier phase
    # A stop rule the caller imposes on the training loop (tuning's watch on the unit targets and on the
    # validation retain slice); it replaces the hyperparameters' own stop rule.
    stop: Callable | None = None


class Method:
    name: ClassVar[str]
    tier: ClassVar[int]
    description: ClassVar[str]
    Hyper: ClassVar[type[Hyper]] = Hyper

    def run(self, ctx: RunContext, hp: Hyper):  # -> engine.compute.candidate.Candidate
        raise NotImplementedError


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


# Modules of this package that hold what the methods share, not a method: never imported to register one.
SHARED_MODULES = ("base", "unlearn", "stop", "retarget")


def _load_all() -> None:
    # Every module, even when one was imported directly first (and so is the only one registered yet).
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.name not in SHARED_MODULES:
            importlib.import_module(f"engine.compute.methods.{info.name}")


def get_method(name: str) -> type[Method]:
    _load_all()
    if name not in REGISTRY:
        raise SpecError(f"unknown method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def list_methods() -> list[dict]:
    _load_all()
    out = []
    for cls in sorted(REGISTRY.values(), key=lambda c: (c.tier, c.name)):
        out.append({"name": cls.name, "tier": cls.tier, "description": cls.description,
                    "default": cls.name == default_method_for_tier(cls.tier),
                    "defaults": cls.Hyper().model_dump(), "schema": cls.Hyper.model_json_schema(),
                    "tune_space": cls.Hyper.search_space()})
    return out


def validate_hyper(name: str, values: dict | None) -> dict:
    """Full hyperparameters with defaults filled in; an unknown field or an absurd value names the field."""
    cls = get_method(name)
    try:
        return cls.Hyper.model_validate(values or {}).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"method {name}: bad hyperparameters: {problems}") from None


# What escalation runs when the operator names no method. Tier 3: NPO, the one gradient method that passes
# every stage (reconstruction included) on the demo request with its literature defaults; GradDiff stops
# at half the forget ROUGE-L and leaves the knowledge relearnable (bench/methods.py, README "The ladder").
TIER_DEFAULTS = {1: "guard", 2: "rmu", 3: "npo"}


def default_method_for_tier(tier: int) -> str:
    _load_all()
    name = TIER_DEFAULTS.get(tier)
    if name in REGISTRY:
        return name
    for cls in sorted(REGISTRY.values(), key=lambda c: c.name):
        if cls.tier == tier:
            return cls.name
    raise SpecError(f"no method is registered for tier {tier}")
