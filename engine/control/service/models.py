"""Registered base models."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from engine.control.registry import inspect_source
from engine.schema.errors import SpecError
from engine.schema.views import ModelView
from store import audit
from store.models import ModelEntry
from store.paths import get_paths


def register_model(s: Session, name: str, source: str, options: dict | None = None,
                   retain_path: str | None = None, holdout_path: str | None = None,
                   report: dict | None = None, inspect=None, actor: str = "engine") -> ModelEntry:
    """Validate the source (in a subprocess: config, tokenizer, parameters, weights hash; a GGUF file is
    converted once into the model cache) and register it. Nothing is written when the check fails.
    `report` receives what the check found (chat template, model type); `inspect` replaces the check
    (engine.control.registry.inspect_source) for test fixtures whose model files are never loaded."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SpecError(f"model name '{name}': use letters, digits, '-', '_' and '.' only")
    info = (inspect or inspect_source)(source, options, converted_root())
    if report is not None:
        report.update({k: info.get(k) for k in ("chat_template", "model_type", "converted")})
    entry = s.exec(select(ModelEntry).where(ModelEntry.name == name)).first() or ModelEntry(name=name, source="")
    entry.source, entry.kind = info["source"], info["kind"]
    entry.weights_sha256, entry.params = info["weights_sha256"], info["params"]
    entry.options = dict(sorted((options or {}).items()))
    entry.retain_path, entry.holdout_path = retain_path, holdout_path
    s.add(entry)
    s.flush()
    audit.append(s, "model.register", f"model:{name}", {"source": entry.source, "sha256": entry.weights_sha256},
                 actor=actor)
    s.commit()
    return entry


def converted_root() -> Path:
    """Where GGUF sources are converted to HF directories, one folder per GGUF sha256."""
    return get_paths().converted


def get_model(s: Session, name: str) -> ModelEntry:
    entry = s.exec(select(ModelEntry).where(ModelEntry.name == name)).first()
    if entry is None:
        known = ", ".join(m.name for m in s.exec(select(ModelEntry))) or "none registered"
        raise SpecError(f"model: unknown model '{name}' (known: {known})")
    return entry


def list_models(s: Session) -> list[ModelEntry]:
    return list(s.exec(select(ModelEntry).order_by(ModelEntry.name)))


def model_view(m: ModelEntry) -> ModelView:
    return ModelView.model_validate(m)
