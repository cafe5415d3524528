"""What a model folder holds, read without torch: its weight files, their hash, the parameter count from the
safetensors headers, and where a GGUF file's converted copy lives. Used by the API process (registering a
model, the scheduler) and by the model check and the workers alike."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")  # of an HF directory


def weights_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    return sorted(f for f in Path(folder).iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def converted_dir(cache_root: Path, gguf_sha256: str) -> Path:
    return Path(cache_root) / f"gguf-{gguf_sha256}"


def count_safetensors_params(path: Path) -> int:
    """Parameters from the safetensors headers, without loading a tensor (0 when there are none)."""
    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with f.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or header_len > 100_000_000:
                raise ValueError(f"{f.name}: not a safetensors file (header length {header_len})")
            header = json.loads(fh.read(header_len))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= d
            total += n
    return total
