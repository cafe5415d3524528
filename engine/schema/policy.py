"""Named threshold profiles (TOML): shipped ones in engine/policies, the operator's in the config dir."""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine.schema.errors import SpecError
from engine.schema.status import STAGES
from store.paths import get_paths

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
RULES = ("max", "min", "ratio_max", "ratio_min")


def _policy_files() -> dict[str, Path]:
    files = {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}
    user_dir = get_paths().policies
    if user_dir.is_dir():
        files.update({p.stem: p for p in sorted(user_dir.glob("*.toml"))})
    return files


def load_policy(name: str) -> dict:
    files = _policy_files()
    if name not in files:
        raise SpecError(f"policy: unknown policy '{name}' (known: {', '.join(sorted(files))})")
    try:
        content = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"policy {name} ({files[name]}): {exc}") from None
    for stage in STAGES:
        for metric, spec in content.get(stage, {}).items():
            if not isinstance(spec, dict) or spec.get("rule") not in RULES or not isinstance(
                    spec.get("threshold"), int | float):
                raise SpecError(f"policy {name}: {stage}.{metric} needs a rule ({', '.join(RULES)}) and a threshold")
    return {"name": name, **content}


def list_policies() -> list[dict]:
    return [load_policy(name) for name in _policy_files()]


def passes(rule: str, threshold: float, before: float | None, after: float) -> bool:
    if rule == "max":
        return after <= threshold
    if rule == "min":
        return after >= threshold
    if before is None:
        return False
    if rule == "ratio_max":
        return after <= threshold * before + 1e-12
    return after >= threshold * before - 1e-12
