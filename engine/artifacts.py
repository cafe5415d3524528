"""Artifacts: written into a temporary folder beside their final place, then renamed in one step,
so a reader never sees a half-written artifact; each carries a manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

# Libraries whose versions a manifest records and a cached 'before' measurement is keyed on (generation,
# tokenisation, scores, the relearning LoRA).
LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "safetensors", "numpy", "scipy", "rouge-score")


def library_versions() -> dict[str, str]:
    """The installed versions of LIBRARIES, from package metadata (nothing is imported)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        digest.update(str(f.relative_to(folder)).encode())
        digest.update(file_sha256(f).encode())
    return digest.hexdigest()


def replace_dir(final: Path, fill):
    """fill(tmp) builds a private folder beside `final`, which then replaces `final` in one rename;
    if fill fails, nothing is left behind. Returns what fill returns."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        result = fill(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def write_atomically(final: Path, fill, manifest: dict) -> dict:
    """fill(tmp_dir) writes the files; the folder appears at `final` only once complete, with its manifest."""

    def fill_and_seal(tmp: Path) -> dict:
        fill(tmp)
        sealed = {**manifest, "artifact_sha256": tree_sha256(tmp),
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / "manifest.json").write_text(json.dumps(sealed, indent=2, sort_keys=True, default=str))
        for f in tmp.rglob("*"):
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        return sealed

    return replace_dir(final, fill_and_seal)
