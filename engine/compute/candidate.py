"""What a method returns: a candidate model, and how it is written to (and read back from) an artifact.

Four kinds, from lightest to heaviest on disk:

- guard:   the base model itself plus a decode-time guard; writes guard.json only.
- adapter: a peft LoRA adapter on a copy of the base; writes adapter/ (adapter weights only).
- delta:   a few changed tensors (tier 2); writes delta.safetensors = after - before, in float32.
- full:    every weight may have changed; writes model/ (save_pretrained).

Every artifact also gets candidate.json (kind and method facts), from which `load_candidate` rebuilds
the candidate on top of a freshly loaded base. The caller makes the write atomic (temporary folder,
then rename); this module only refuses to write inside the base model's own directory."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.compute.guard import Guard

KINDS = ("guard", "adapter", "delta", "full")
META_FILE = "candidate.json"
DELTA_FILE = "delta.safetensors"
ADAPTER_DIR = "adapter"
FULL_DIR = "model"
GUARD_FILE = "guard.json"


@dataclass
class Candidate:
    model: Any
    kind: str  # guard | adapter | delta | full
    guard: Guard | None = None
    # delta: {parameter name: tensor before training} for the tensors the method changed;
    # any kind: a callable(out_dir) -> [{"kind","path"}] that writes extra files.
    files: Any = None
    info: dict = field(default_factory=dict)  # method facts for the manifest (layer chosen, coefficients)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"candidate kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "guard" and self.guard is None:
            raise ValueError("a guard candidate needs its guard")
        if self.kind == "delta" and not isinstance(self.files, dict):
            raise ValueError("a delta candidate needs files={name: tensor before}")

    def save(self, out_dir: Path) -> list[dict]:
        """Write the artifact files into `out_dir`; returns [{"kind", "path"}] with paths relative to it."""
        out_dir = Path(out_dir)
        _refuse_base_dir(self.model, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[dict] = []
        if self.kind == "adapter":
            # A PeftModel saves the adapter weights and config only, never the base.
            self.model.save_pretrained(out_dir / ADAPTER_DIR)
            written += _listing(out_dir, out_dir / ADAPTER_DIR, "adapter")
        elif self.kind == "delta":
            written.append(_save_delta(self.model, self.files, out_dir / DELTA_FILE))
        elif self.kind == "full":
            self.model.save_pretrained(out_dir / FULL_DIR)
            written += _listing(out_dir, out_dir / FULL_DIR, "full")
        if self.guard is not None:
            self.guard.save(out_dir / GUARD_FILE)
            written.append({"kind": "guard", "path": GUARD_FILE})
        if callable(self.files):
            written += list(self.files(out_dir))
        meta = {"kind": self.kind, "info": _jsonable(self.info), "files": [w["path"] for w in written]}
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        written.append({"kind": "meta", "path": META_FILE})
        return written


def delta_tensors(model, before: dict) -> dict:
    """{name: after - before} in float32 for the named tensors."""
    params = dict(model.named_parameters())
    state = None
    out = {}
    for name, old in before.items():
        if name in params:
            new = params[name]
        else:
            state = state if state is not None else model.state_dict()
            new = state[name]
        out[name] = (new.detach().float().cpu() - old.detach().float().cpu()).contiguous()
    return out


def _save_delta(model, before: dict, path: Path) -> dict:
    from safetensors.torch import save_file

    save_file(delta_tensors(model, before), str(path), metadata={"format": "expunge-delta", "op": "after-before"})
    return {"kind": "delta", "path": path.name}


def apply_delta(model, path: Path) -> list[str]:
    """Add a saved delta to `model`'s weights in place; returns the tensor names changed."""
    import torch
    from safetensors.torch import load_file

    deltas = load_file(str(path))
    params = dict(model.named_parameters())
    state = None
    with torch.no_grad():
        for name, d in deltas.items():
            if name in params:
                p = params[name]
            else:
                state = state if state is not None else model.state_dict(keep_vars=True)
                if name not in state:
                    raise KeyError(f"delta names a tensor the model lacks: {name}")
                p = state[name]
            p.copy_((p.float() + d.to(p.device)).to(p.dtype))
    return list(deltas)


def load_candidate(base_model, tokenizer, artifact_dir: Path, inplace: bool = False) -> Candidate:
    """Rebuild a saved candidate on top of `base_model` (copied first unless `inplace`)."""
    from engine.compute.guard import Guard

    artifact_dir = Path(artifact_dir)
    meta_path = artifact_dir / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        kind, info = meta["kind"], meta.get("info", {})
    else:  # infer from the files, for artifacts written without the meta file
        info = {}
        kind = ("adapter" if (artifact_dir / ADAPTER_DIR).is_dir() else "delta" if (artifact_dir / DELTA_FILE).is_file()
                else "full" if (artifact_dir / FULL_DIR).is_dir() else "guard")
    guard = Guard.load(artifact_dir / GUARD_FILE, tokenizer) if (artifact_dir / GUARD_FILE).is_file() else None
    if kind == "guard":
        return Candidate(model=base_model, kind="guard", guard=guard, info=info)
    if kind == "full":
        from transformers import AutoModelForCausalLM

        ref = next(base_model.parameters())
        model = AutoModelForCausalLM.from_pretrained(artifact_dir / FULL_DIR, dtype=ref.dtype).to(ref.device)
        model.eval()
        return Candidate(model=model, kind="full", guard=guard, info=info)
    model = base_model if inplace else copy.deepcopy(base_model)
    if kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, artifact_dir / ADAPTER_DIR)
        model.eval()
        return Candidate(model=model, kind="adapter", guard=guard, info=info)
    from safetensors.torch import load_file

    deltas = load_file(str(artifact_dir / DELTA_FILE))
    state = model.state_dict()
    # `files` keeps the before-tensors so the loaded candidate saves the same delta again.
    before = {n: state[n].detach().float().cpu().clone() for n in deltas}
    apply_delta(model, artifact_dir / DELTA_FILE)
    return Candidate(model=model, kind="delta", guard=guard, files=before, info=info)


def _refuse_base_dir(model, out_dir: Path) -> None:
    base = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not base:
        return
    base_dir = Path(base)
    if base_dir.is_file():
        base_dir = base_dir.parent
    if not base_dir.is_dir():
        return
    target = out_dir.resolve()
    base_dir = base_dir.resolve()
    if target == base_dir or base_dir in target.parents:
        raise ValueError(f"refusing to write an artifact inside the base model's directory {base_dir}")


def _listing(root: Path, folder: Path, kind: str) -> list[dict]:
    return [{"kind": kind, "path": str(p.relative_to(root))} for p in sorted(folder.rglob("*")) if p.is_file()]


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return str(value)
