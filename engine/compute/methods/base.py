"""The method registry and what every method shares: typed hyperparameters, a tier, a description."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.schema.errors import SpecError

if TYPE_CHECKING:
    from collections.abc import Callable


class Hyper(BaseModel):
    """Hyperparameters shared by every method; a method subclasses this with its own fields and ranges."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="random seed")


class TrainHyper(Hyper):
    """The shared training loop's knobs (tiers 2 and 3)."""

    steps: int = Field(default=60, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(default=1e-3, gt=0, le=1.0, description="peak learning rate")
    batch_size: int = Field(default=16, ge=1, le=1024, description="rows per micro-batch (forget and retain each)")
    grad_accum: int = Field(default=1, ge=1, le=256, description="micro-batches per optimizer step")
    warmup: float = Field(default=0.1, ge=0, le=0.9, description="share of steps spent warming up the learning rate")
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    checkpoint_every: int = Field(default=20, ge=1, le=100_000, description="steps between checkpoints")
    max_length: int = Field(default=128, ge=8, le=8192, description="tokens per row at most")


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


def _load_all() -> None:
    if REGISTRY:
        return
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.name not in ("base", "loop"):
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
                    "defaults": cls.Hyper().model_dump(), "schema": cls.Hyper.model_json_schema()})
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
