"""Where the TOFU benchmark's data comes from: a folder the operator names (`--data DIR` or EXPUNGE_TOFU_DIR)
holding the release's JSON Lines files, else a local Hugging Face cache of `locuslab/TOFU` (found by
huggingface_hub's own cache rules: HF_HUB_CACHE, HF_HOME; never downloaded), else the copy shipped in the package
(engine/data/tofu: gzip-compressed, MIT licence and provenance beside it). Torch-free."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "data" / "tofu"
HUB_REPO = "locuslab/TOFU"
SUFFIXES = (".jsonl", ".jsonl.gz", ".json")  # .json: the Hub release's name for the same JSON Lines
# The release's retainNN files are the first rows of full.jsonl; the shipped copy derives them.
RETAIN_ROWS = {"retain99": 3960, "retain95": 3800, "retain90": 3600}


def default_data_dir() -> Path:
    env = os.environ.get("EXPUNGE_TOFU_DIR")
    if env:
        return Path(env)
    return hub_cache_dir() or SHIPPED


def hub_cache_dir() -> Path | None:
    """The snapshot folder of a Hugging Face cache of locuslab/TOFU on this machine, when it holds the release's
    files (a user who ran `datasets.load_dataset("locuslab/TOFU", ...)` or `hf download` has one); else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(HUB_REPO, "forget01_perturbed.json", repo_type="dataset")
    # Not a str: not cached, or the sentinel for "known missing on the Hub".
    return Path(found).parent if isinstance(found, str) else None


def has_split(data_dir: Path, name: str) -> bool:
    return any((Path(data_dir) / f"{name}{suffix}").is_file() for suffix in SUFFIXES)


def read_split(data_dir: Path, name: str) -> list[dict]:
    """The rows of one split: `name.jsonl`, `name.jsonl.gz` or `name.json`, else (retainNN) the first rows of full."""
    data_dir = Path(data_dir)
    plain, packed, hub = (data_dir / f"{name}{suffix}" for suffix in SUFFIXES)
    if plain.is_file():
        return _rows(plain.read_text(encoding="utf-8"))
    if hub.is_file():
        return _rows(hub.read_text(encoding="utf-8"))
    if packed.is_file():
        return _rows(gzip.decompress(packed.read_bytes()).decode("utf-8"))
    if name in RETAIN_ROWS and has_split(data_dir, "full"):
        return read_split(data_dir, "full")[: RETAIN_ROWS[name]]
    raise FileNotFoundError(f"TOFU split {name!r} not found in {data_dir} (neither {plain.name} nor {packed.name})")


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
