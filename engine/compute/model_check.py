"""Validating a model source, in a process of its own (`python -m engine.compute.model_check`): it imports
torch and transformers, which the API process never does (tests/test_hygiene.py).

The engine runs it for `expunge models add` (engine.control.registry.inspect_source) and reads one JSON line:
{"ok": true, "kind", "source", "weights_sha256", "params", "chat_template", "converted"?} or
{"ok": false, "error": "<what is wrong, naming the source>"}. It writes nothing except, for a GGUF
file that loads completely, its converted HF copy in the model cache (engine.compute.modeling.convert_gguf),
built in a temporary folder and renamed into place only when complete."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from engine.model_files import converted_dir, count_safetensors_params, weight_files, weights_sha256
from engine.schema.errors import SpecError


def check_source(kind: str, source: str, options: dict, cache_root: Path | None) -> dict:
    """Load the source's config and tokenizer, count its parameters, hash its weights; SpecError naming
    the problem when any of it fails."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.compute.modeling import convert_gguf, converted_is_complete, load_tokenizer, resolve_source

    trust = bool(options.get("trust_remote_code", False))
    try:
        folder, kwargs = resolve_source(source, kind)
    except Exception as exc:
        raise SpecError(f"model source {source}: {_why(exc)}") from None
    info: dict = {"kind": kind, "source": source}
    if kind == "gguf":
        from engine.artifacts import file_sha256

        info["weights_sha256"] = file_sha256(Path(source))
        if cache_root is None:
            raise SpecError("model source: no model cache folder to convert the GGUF file into")
        target = converted_dir(cache_root, info["weights_sha256"])
        if not converted_is_complete(target):
            try:
                convert_gguf(Path(source), target, info["weights_sha256"])
            except Exception as exc:
                raise SpecError(f"model source {source}: cannot load this GGUF file: {_why(exc)}") from None
        info["converted"] = str(target)
        folder, kwargs = target, {}
    else:
        files = weight_files(folder)
        if not files:
            raise SpecError(f"model source {source}: no weight files (*.safetensors, *.bin) in {folder}")
        info["weights_sha256"] = weights_sha256(files)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust, **kwargs)
    except Exception as exc:
        raise SpecError(f"model source {source}: cannot read its config: {_why(exc)}") from None
    try:
        tokenizer = load_tokenizer(folder, trust, **kwargs)
    except Exception as exc:
        raise SpecError(f"model source {source}: cannot load its tokenizer: {_why(exc)}") from None
    try:
        params = count_safetensors_params(folder)
    except Exception as exc:
        raise SpecError(f"model source {source}: unreadable weights file: {_why(exc)}") from None
    if not params:  # *.bin weights only: count on the meta device, no memory taken
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in AutoModelForCausalLM.from_config(
                    config, trust_remote_code=trust).parameters())
        except Exception as exc:
            raise SpecError(f"model source {source}: not a causal language model: {_why(exc)}") from None
    info["params"] = int(params)
    info["chat_template"] = bool(tokenizer.chat_template)
    info["model_type"] = getattr(config, "model_type", None)
    return info


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def main() -> None:
    # One JSON line on the real stdout; whatever the libraries print goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    try:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
        cache = Path(request["cache_root"]) if request.get("cache_root") else None
        result = {"ok": True, **check_source(request["kind"], request["source"], request.get("options") or {}, cache)}
    except SpecError as exc:
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # anything else is still the source's problem, named
        result = {"ok": False, "error": f"model source {request.get('source')}: {_why(exc)}"}
    protocol.write(json.dumps(result) + "\n")
    protocol.flush()


if __name__ == "__main__":
    main()
