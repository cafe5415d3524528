"""The 'before' measurement's identity: what a cached measurement of the untouched base model depends on (the
cache key), and the general-text corpus every job's control stage measures perplexity on. The scheduler keys
the cache with it when it hands a job out; closing a request finds the cached rows of its data by it.

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
from pathlib import Path

from engine.artifacts import library_versions
from engine.schema.datasets import rows_sha256

# Plain English the control stage measures perplexity on (the demo builder trains its tokenizer on it too).
GENERAL_TEXT = [
    "The library opens at nine in the morning and closes at six in the evening.",
    "Rain is expected for most of the week, so bring an umbrella when you go out.",
    "She planted tomatoes, beans and a row of sunflowers along the garden fence.",
    "The train to the coast was late because of work on the tracks near the bridge.",
    "He learned to play the piano as a child and still practises every weekend.",
    "Most birds build their nests in spring, when food is easy to find.",
    "The museum has a new room for old maps, coins and letters from sailors.",
    "Water boils at a lower temperature high in the mountains than by the sea.",
    "Our team meets on Monday mornings to plan the work for the rest of the week.",
    "The bakery on the corner sells fresh bread, rolls and a very good apple cake.",
    "A good night of sleep helps people remember what they learned during the day.",
    "The children built a small boat out of wood and sailed it on the pond.",
    "Please turn off the lights and close the windows before you leave the office.",
    "The river froze in January, and people skated on it for almost two weeks.",
    "Cooking rice takes about twenty minutes, and it should rest before serving.",
    "The old lighthouse still stands on the cliff, although its lamp went out long ago.",
    "Many people walk or cycle to work when the weather is warm and dry.",
    "The teacher asked the class to write a short story about their favourite animal.",
    "A map and a compass are useful when you hike in an unfamiliar forest.",
    "The market in the square is busiest on Saturday, when farmers bring their vegetables.",
    "He wrote a letter to his grandmother and posted it on the way home.",
    "The film was long, but the music and the photography made it worth watching.",
    "Bees carry pollen from flower to flower, which helps fruit and seeds to grow.",
    "The kitchen smelled of onions, garlic and the soup that was cooking on the stove.",
    "After the storm, the streets were covered with leaves and broken branches.",
    "She keeps a notebook by her bed to write down ideas before she forgets them.",
    "The moon looks larger when it is close to the horizon than when it is high in the sky.",
    "Our neighbours painted their house blue and planted roses by the front door.",
    "The bus stops outside the school every fifteen minutes during the day.",
    "Reading in a quiet room is easier than reading on a crowded train.",
    "The cat slept in the sun on the windowsill for most of the afternoon.",
    "Fresh snow covered the hills, and the valley was silent in the early morning.",
    "The shop closes early on Sundays, so we bought everything we needed on Saturday.",
    "A cup of tea and a slice of toast make a simple and pleasant breakfast.",
    "The bridge was built more than a hundred years ago and is still in daily use.",
    "They counted the stars from the roof and tried to name the brightest ones.",
]


def job_model_options(options: dict, spec: dict) -> dict:
    """The model's registered options with the request's overrides (chat_template: auto | none) and,
    when not 'full', its verification profile: what the 'before' measurement depends on besides the data."""
    out = dict(options)
    if spec.get("chat_template"):
        out["chat_template"] = spec["chat_template"]
    if spec.get("verification", "full") != "full":
        out["verification"] = spec["verification"]
    return out


def baseline_key(weights_sha256: str, rows: dict, general_text: list[str], options: dict, setup: dict) -> str:
    """The cached 'before' measurement's key: weights, rows, options and the measurement setup
    (`measurement_setup`: code, libraries, device, dtype, prompt format, model files)."""
    parts = [setup_sha256(setup), weights_sha256, json.dumps(options, sort_keys=True), rows_sha256(general_text)]
    parts += [rows_sha256(rows.get(k)) for k in ("forget", "retain", "holdout", "probes", "sensitive")]
    if rows.get("neighbours"):  # the operator's neighbours replace the built ones (keys without them unchanged)
        parts.append(rows_sha256(rows["neighbours"]))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# The measurement setup

ENGINE_ROOT = Path(__file__).resolve().parents[1]
# Where measuring starts, relative to the engine package; their imports within `engine` are followed.
MEASURING_ROOTS = ("compute/verify", "compute/modeling.py")
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
