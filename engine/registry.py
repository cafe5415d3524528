"""Registered target models: validated once when added, then named in request specs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.errors import SpecError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def weights_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def inspect_source(source: str) -> dict:
    """Cheap checks of a model source (no framework import): kind, weight files, their hash, parameters."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return {"kind": "gguf", "source": str(path.resolve()), "weights_sha256": weights_sha256([path]), "params": 0}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpecError(f"model source {source}: no config.json in that directory")
        files = [f for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES]
        if not files:
            raise SpecError(f"model source {source}: no weight files (*.safetensors) in that directory")
        params = _count_params(path)
        return {"kind": "hf", "source": str(path.resolve()), "weights_sha256": weights_sha256(files), "params": params}
    raise SpecError(f"model source {source}: not a model directory or .gguf file")


def _count_params(path: Path) -> int:
    """Parameters from the safetensors headers, without loading a tensor."""
    total = 0
    for f in path.glob("*.safetensors"):
        with f.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= d
            total += n
    return total
