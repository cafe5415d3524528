"""Loading target models (the worker only): local HF directories, GGUF files (through a converted copy)
and models in the local Hugging Face cache; a base model is never written to."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if requested in table:
        return table[requested]
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


CONVERTED_MARK = "expunge_converted.json"


def resolve_source(source: str, kind: str = "hf") -> tuple[Path, dict]:
    """(folder, from_pretrained kwargs) of a model source. A hub id is looked up in the local Hugging
    Face cache only (never downloaded)."""
    if kind == "gguf":
        path = Path(source)
        return path.parent, {"gguf_file": path.name}
    if kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=source, local_files_only=True)), {}
        except Exception as exc:
            raise FileNotFoundError(f"no such file or directory, and no model '{source}' in the local Hugging "
                                    f"Face cache ({type(exc).__name__}); expunge never downloads models") from None
    return Path(source), {}


def load_tokenizer(folder: Path, trust: bool = False, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, **kwargs)


def converted_is_complete(folder: Path) -> bool:
    return (Path(folder) / CONVERTED_MARK).is_file()


def convert_gguf(gguf: Path, target: Path, sha256: str) -> Path:
    """Dequantise a GGUF file once into an HF directory (safetensors, fp32, tokenizer files) at `target`.

    Parsing a GGUF file takes tens of seconds on a CPU (transformers reads its metadata three times);
    the converted copy loads in about a second. Built in a temporary folder and renamed into place, so a
    reader never sees half of it; the GGUF file itself is only read."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.artifacts import library_versions, replace_dir

    gguf = Path(gguf)
    kwargs = {"gguf_file": gguf.name}
    tokenizer = load_tokenizer(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model is dequantised in memory; drop the quantizer so it can be saved.
    model.config.quantization_config = None
    model.hf_quantizer = None

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_MARK).write_text(json.dumps(
            {"from": str(gguf), "gguf_sha256": sha256, "libraries": library_versions()}, indent=2) + "\n")

    replace_dir(Path(target), fill)
    return Path(target)


def load_model(source: str, kind: str = "hf", options: dict | None = None, device: str | None = None,
               converted: str | None = None):
    """(model, tokenizer) in eval mode with gradients off; the tokenizer pads on the left for generation.

    A GGUF source loads from its converted copy (`converted`, made on first use when missing)."""
    from transformers import AutoModelForCausalLM

    options = options or {}
    device = device or pick_device()
    dtype = pick_dtype(device, options.get("dtype", "auto"))
    trust = bool(options.get("trust_remote_code", False))
    if kind == "gguf" and converted:
        target = Path(converted)
        if not converted_is_complete(target):
            from engine.artifacts import file_sha256

            convert_gguf(Path(source), target, file_sha256(Path(source)))
        path, kwargs = target, {}
    else:
        path, kwargs = resolve_source(source, kind)
    if kind != "gguf" or converted:
        kwargs["use_safetensors"] = any(path.glob("*.safetensors"))
    tokenizer = load_tokenizer(path, trust, **{k: v for k, v in kwargs.items() if k == "gguf_file"})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust, **kwargs)
    if kind == "gguf" and not converted:
        # A GGUF-loaded model is dequantised in memory; drop the quantizer so it can be copied and saved.
        model.config.quantization_config = None
        model.hf_quantizer = None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


@contextmanager
def evaluating(*models, inference: bool = False):
    """`models` in eval mode (dropout off) without autograd, each one's train/eval state restored after.
    no_grad by default: its outputs may serve as targets of a loss; `inference` is faster, but its
    tensors can never enter a backward pass."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode() if inference else torch.no_grad():
            yield
    finally:
        for m, w in zip(models, was, strict=True):
            if w:
                m.train()
