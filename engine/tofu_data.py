"""Where the TOFU benchmark's data comes from: a folder the operator names (`--data DIR` or EXPUNGE_TOFU_DIR)
holding the release's JSON Lines files, else the copy shipped in the package (engine/data/tofu: gzip-compressed,
MIT licence and provenance beside it). Torch-free."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "data" / "tofu"
# The release's retainNN files are the first rows of full.jsonl; the shipped copy derives them.
RETAIN_ROWS = {"retain99": 3960, "retain95": 3800, "retain90": 3600}


def default_data_dir() -> Path:
    env = os.environ.get("EXPUNGE_TOFU_DIR")
    return Path(env) if env else SHIPPED


def has_split(data_dir: Path, name: str) -> bool:
    return any((Path(data_dir) / f"{name}{suffix}").is_file() for suffix in (".jsonl", ".jsonl.gz"))


def read_split(data_dir: Path, name: str) -> list[dict]:
    """The rows of one split: `name.jsonl`, else `name.jsonl.gz`, else (retainNN) the first rows of full."""
    data_dir = Path(data_dir)
    plain, packed = data_dir / f"{name}.jsonl", data_dir / f"{name}.jsonl.gz"
    if plain.is_file():
        return _rows(plain.read_text(encoding="utf-8"))
    if packed.is_file():
        return _rows(gzip.decompress(packed.read_bytes()).decode("utf-8"))
    if name in RETAIN_ROWS and has_split(data_dir, "full"):
        return read_split(data_dir, "full")[: RETAIN_ROWS[name]]
    raise FileNotFoundError(f"TOFU split {name!r} not found in {data_dir} (neither {plain.name} nor {packed.name})")


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
