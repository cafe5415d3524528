"""What a cached 'before' measurement depends on besides the model's weights and the request's rows.

A 'before' is reused only where it would come out the same: the same measuring code, libraries, device and
dtype, tokenizer and config files, and prompt format. Torch-free (the API process computes it): library
versions come from package metadata, the measuring code from reading the sources.

The measuring code is not a hand-kept list: it is every module of the `engine` package that the stages
(engine/compute/verify) and the model loader (engine/compute/modeling.py: dtype, padding side, pad token)
import, directly or through each other, found by parsing their imports (`ast`, nothing is executed)."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parents[1]
# Where measuring starts, relative to the engine package; their imports within `engine` are followed.
MEASURING_ROOTS = ("compute/verify", "compute/modeling.py")
# Libraries whose behaviour the numbers depend on (generation, tokenisation, scores, the relearning LoRA).
LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "safetensors", "numpy", "scipy", "rouge-score")
# A model folder's files besides the weights that change what is measured: tokenizer, chat template, config.
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
               "chat_template.jinja", "chat_template.json")


def _module_file(engine_root: Path, dotted: str) -> Path | None:
    """engine.a.b -> <root>/a/b.py or <root>/a/b/__init__.py, if it exists."""
    parts = dotted.split(".")
    if parts[0] != "engine":
        return None
    base = engine_root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(engine_root: Path, path: Path) -> list[str]:
    rel = path.relative_to(engine_root).with_suffix("")
    parts = ["engine", *rel.parts]
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imported_files(engine_root: Path, path: Path) -> set[Path]:
    """The files of the `engine` package that `path` imports anywhere in its body (absolute or relative;
    `from engine.a import b` counts engine/a and, where b is a module, engine/a/b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[Path] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(engine_root, path)
                package = package[: len(package) - (node.level - 1)]
                module = ".".join(package + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # the packages on the way are imported too
                file = _module_file(engine_root, ".".join(parts[:i]))
                if file is not None:
                    found.add(file)
    return found


def measuring_modules(engine_root: Path = ENGINE_ROOT, roots: tuple[str, ...] = MEASURING_ROOTS) -> list[Path]:
    """Every module the measuring roots reach through their imports within `engine`, sorted."""
    todo = []
    for root in roots:
        path = engine_root / root
        todo += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [p for p in imported_files(engine_root, path) if p not in seen]
    return sorted(seen)


@functools.cache
def code_version(engine_root: Path = ENGINE_ROOT) -> str:
    digest = hashlib.sha256()
    for path in measuring_modules(engine_root):
        digest.update(path.relative_to(engine_root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def model_files_sha256(source: str, kind: str) -> str:
    """The tokenizer, chat-template and config files of a model folder (a GGUF file carries its own, and its
    weight hash covers them); a hub id is looked up in the local Hugging Face cache."""
    if kind == "gguf":
        return "in-weights"
    folder = Path(source)
    if kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(source, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - not cached: the job will fail to load it anyway
            return f"unresolved:{type(exc).__name__}"
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def measurement_setup(source: str, kind: str, options: dict, device: str) -> dict:
    """Everything besides weights and rows a 'before' depends on. `device`: the slot's ('cpu', 'cuda:0');
    only its type counts. The dtype is the one asked for on that device type ('auto' resolves per type)."""
    device_type = device.split(":")[0]
    return {"code": code_version(), "libraries": library_versions(), "device": device_type,
            "dtype": f"{options.get('dtype', 'auto')}@{device_type}",
            "prompt_format": options.get("chat_template", "auto"), "model_files": model_files_sha256(source, kind)}


def setup_sha256(setup: dict) -> str:
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
