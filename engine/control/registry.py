"""Registered target models: validated once when added, then named in request specs.

Three kinds of source:

- hf:   a local Hugging Face model directory (config.json, tokenizer files, *.safetensors or *.bin);
- gguf: a local .gguf file (transformers' `gguf_file=`, dequantised); converted once into an HF copy
        in the model cache, keyed by the file's sha256, which the workers then load;
- hub:  a model id ("org/name") already in the local Hugging Face cache; nothing is downloaded.

This module is imported by the API process and never imports torch: the checks that need it (config,
tokenizer, parameters) run in a subprocess, `python -m engine.compute.model_check`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from engine.model_files import weight_files
from engine.schema.errors import SpecError

OPTION_VALUES = {"dtype": ("auto", "bf16", "fp16", "fp32"), "chat_template": ("auto", "none")}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
CHECK_TIMEOUT_S = float(os.environ.get("EXPUNGE_MODEL_CHECK_TIMEOUT", 1800))


def classify_source(source: str) -> tuple[str, str]:
    """(kind, source as stored) from cheap checks of the file system alone; SpecError naming the problem."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise SpecError(f"model source {source}: a file, but not a .gguf file (give a model directory, "
                            "a .gguf file or a cached hub id)")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise SpecError(f"model source {source}: not a GGUF file (it does not start with the GGUF magic)")
        return "gguf", str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpecError(f"model source {source}: no config.json in that directory")
        if not weight_files(path):
            raise SpecError(f"model source {source}: no weight files (*.safetensors) in that directory")
        return "hf", str(path.resolve())
    if HUB_ID.match(source) and not source.startswith("."):
        return "hub", source
    raise SpecError(f"model source {source}: not a model directory, a .gguf file, or a model id "
                    "('org/name') in the local Hugging Face cache")


def check_options(options: dict | None) -> dict:
    options = dict(options or {})
    for key, allowed in OPTION_VALUES.items():
        if key in options and options[key] not in allowed:
            raise SpecError(f"model option {key}: must be one of {', '.join(allowed)}, not {options[key]!r}")
    if "trust_remote_code" in options and not isinstance(options["trust_remote_code"], bool):
        raise SpecError("model option trust_remote_code: must be true or false")
    unknown = sorted(set(options) - set(OPTION_VALUES) - {"trust_remote_code"})
    if unknown:
        raise SpecError(f"model options: unknown {', '.join(unknown)} (known: dtype, chat_template, "
                        "trust_remote_code)")
    return options


def inspect_source(source: str, options: dict | None = None, cache_root: Path | None = None) -> dict:
    """Validate a model source: kind, weight hash, parameters, whether it has a chat template.

    The cheap file-system checks run here; loading the config and tokenizer (and converting a GGUF
    file) runs in a subprocess that imports torch. Nothing is written unless it all succeeds."""
    options = check_options(options)
    kind, resolved = classify_source(source)
    request = {"kind": kind, "source": resolved, "options": options,
               "cache_root": str(cache_root) if cache_root else None}
    try:
        proc = subprocess.run([sys.executable, "-m", "engine.compute.model_check"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    except subprocess.TimeoutExpired:
        raise SpecError(f"model source {source}: checking it took more than {CHECK_TIMEOUT_S:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SpecError(f"model source {source}: the check process failed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if not result.pop("ok"):
        raise SpecError(result["error"])
    return result
