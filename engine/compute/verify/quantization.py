"""The quantization attack (white-box): does rounding the weights bring the forgotten answers back?

Zhang et al., "Catastrophic failure of LLM unlearning via quantization" (ICLR 2025): unlearning by
gradient ascent or NPO at the small learning rates that keep utility moves each weight by less than a
4-bit quantization step, so the quantized unlearned model rounds to (nearly) the quantized original and
answers as it did. Whoever deploys the candidate quantized (as most local deployments do) gets the
forgotten data back.

The attack quantizes a copy of the candidate's weights round-to-nearest, group-wise, and dequantizes
them, with llama.cpp's reference quantizers as the `gguf` package ships them (bit-exact with ggml for
Q8_0): Q8_0 (8-bit, one fp16 scale per block of 32 weights) and Q4_0 (4-bit, the same blocks, levels
-8..7 times max/-8). Every linear layer of the decoder is quantized, as weight-only quantization does
(bitsandbytes, GPTQ, AWQ); the embeddings and the output head stay as they are, and a layer whose input
width is not a multiple of the block is left unquantized (counted in the result); a model with no
quantizable linear layer (GPT-2's Conv1D) gets None. A peft candidate's adapter is folded into the
weights first.

On the quantized copy the unit stage's direct questions are asked again (greedy, no guard: the attacker
owns the weights) and scored as the unit stage scores them:

- quant8_forget_rouge_l / quant4_forget_rouge_l: mean ROUGE-L recall against the gold answers;
- quant8_leak_rate / quant4_leak_rate: share of answers containing a sensitive string.

A guard-only candidate leaves the weights untouched, so it is measured on the quantized base, once
per base model (`engine.compute.verify.basecache`)."""

from __future__ import annotations

import copy
import time

import torch

from engine.compute.verify.stages import EvalInput

# metric prefix -> gguf quantization type name
SCHEMES = {"quant8": "Q8_0", "quant4": "Q4_0"}
BLOCK = 32  # gguf's Q8_0 and Q4_0 block size


def round_trip(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """`weight` quantized with the gguf quantizer of `scheme` ("Q8_0", "Q4_0") and dequantized, in its
    own dtype and device. The last dimension must be a multiple of BLOCK."""
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[scheme]
    array = weight.detach().to(device="cpu", dtype=torch.float32).numpy()
    restored = quants.dequantize(quants.quantize(array, qtype), qtype)
    return torch.from_numpy(restored).reshape(weight.shape).to(device=weight.device, dtype=weight.dtype)


def quantized_copy(model, scheme: str):
    """A plain copy of `model` (adapter folded in) with every decoder linear layer's weight round-tripped
    through `scheme`; returns (copy, {"quantized": n tensors, "skipped": n tensors left as they are})."""
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):
        clone = clone.merge_and_unload()
    head = clone.get_output_embeddings()
    quantized = skipped = 0
    with torch.no_grad():
        for module in clone.modules():
            if not isinstance(module, torch.nn.Linear) or module is head:
                continue
            if module.weight.shape[-1] % BLOCK:
                skipped += 1
                continue
            module.weight.copy_(round_trip(module.weight, scheme))
            quantized += 1
    clone.eval()
    return clone, {"quantized": quantized, "skipped": skipped}


def _measure_scheme(ev: EvalInput, model, scheme: str) -> dict:
    from engine.compute.verify.unit import direct_answers, direct_metrics

    quantized, info = quantized_copy(model, SCHEMES[scheme])
    if not info["quantized"]:  # no layer this attack can quantize (e.g. GPT-2's Conv1D): not measured
        return {"metrics": {"forget_rouge_l": None, "leak_rate": None}, "answers": [], **info}
    answers = direct_answers(ev, quantized, guard=None)
    del quantized
    return {"metrics": direct_metrics(ev, answers), "answers": answers, **info}


def quantized_leak_rate(ev: EvalInput, model, scheme: str) -> float | None:
    """The unit stage's leak rate of `model`'s weights round-tripped through `scheme` (tuning's proxy asks this of
    each trial); None when no layer can be quantized."""
    return _measure_scheme(ev, model, scheme)["metrics"]["leak_rate"]


def measure(ev: EvalInput) -> tuple[dict[str, float], list[dict], dict[str, float]]:
    """(metrics, evidence, timings) of the attack at every scheme, for the reconstruction stage."""
    from engine.compute.prompting import uses_chat
    from engine.compute.verify.basecache import cached, rows_key

    guard_only = ev.base_model is not None and ev.model is ev.base_model
    metrics: dict[str, float] = {}
    evidence: list[dict] = []
    timings: dict[str, float] = {}
    for scheme in SCHEMES:
        started = time.perf_counter()
        key = ("quantized", scheme, rows_key(ev.forget), tuple(ev.sensitive), ev.max_new_tokens,
               uses_chat(ev.tokenizer))
        if guard_only or ev.base_model is None:  # the base's own weights: once per base model
            result = cached(ev.model, key, lambda scheme=scheme: _measure_scheme(ev, ev.model, scheme))
        else:
            result = _measure_scheme(ev, ev.model, scheme)
        timings[scheme] = round(time.perf_counter() - started, 3)
        metrics.update({f"{scheme}_{name}": value for name, value in result["metrics"].items()})
        for row, (answer, spans) in zip(ev.forget if result["answers"] else [], result["answers"], strict=True):
            evidence.append({"attack": scheme, "prompt": row["question"], "output": answer, "leaked": bool(spans),
                             "spans": spans})
    return metrics, evidence, timings
