"""Loading target models (the worker only): local HF directories and GGUF files, never written to."""

from __future__ import annotations

import json
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


def load_model(source: str, kind: str = "hf", options: dict | None = None, device: str | None = None):
    """(model, tokenizer) in eval mode with gradients off; the tokenizer pads on the left for generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = options or {}
    device = device or pick_device()
    dtype = pick_dtype(device, options.get("dtype", "auto"))
    trust = bool(options.get("trust_remote_code", False))
    path = Path(source)
    if kind == "gguf":
        kwargs = {"gguf_file": path.name}
        path = path.parent
    else:
        kwargs = {"use_safetensors": any(path.glob("*.safetensors"))}
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust, **kwargs)
    if kind == "gguf":
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


def library_versions() -> dict:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
