"""Export a candidate as a standalone HF model directory: plain `transformers` loads it, no expunge needed.

adapter -> merged into the weights (peft merge_and_unload); delta -> added to the weights; full -> as
saved; guard -> the base weights unchanged. A guard.json travels along whenever the candidate has one,
with README.txt explaining how to apply it with transformers alone. Written into a temporary folder
beside `out_dir` and renamed into place, so `out_dir` is either absent or complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from store.files import replace_folder

README = """\
Exported by expunge: {kind} candidate{method}.

Load it with plain transformers (no expunge needed):

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("{name}")
    tokenizer = AutoTokenizer.from_pretrained("{name}")
{guard}"""

GUARD_README = """
This model comes with a decode-time guard (guard.json): {n} sensitive strings, {m} banned token
sequences. Apply it at every generation, or the model may still say what the guard suppresses:

    import json, re, torch
    from transformers import LogitsProcessorList, NoBadWordsLogitsProcessor
    guard = json.load(open("{name}/guard.json"))
    processors = LogitsProcessorList([NoBadWordsLogitsProcessor(guard["bad_words_ids"],
                                                                eos_token_id=tokenizer.eos_token_id)])
    out = model.generate(**inputs, logits_processor=processors, return_dict_in_generate=True,
                         output_logits=True, output_scores=True)
    text = tokenizer.decode(out.sequences[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    # Blocked: at some step the model's first choice was a banned token.
    blocked = any(torch.isneginf(s.gather(1, l.argmax(-1, keepdim=True))).any()
                  for l, s in zip(out.logits, out.scores))
    redacted = text
    for pattern in guard["redact_patterns"]:  # the backstop: mask whatever slipped through
        redacted = re.sub(pattern, guard["replacement"], redacted, flags=re.IGNORECASE)
    if guard["on_block"] == "refuse" and (blocked or redacted != text):
        text = guard["refusal"]  # a blocked answer's rest is a near miss: refuse it whole
    else:
        text = redacted

What the banned sequences guarantee: those exact token sequences are never generated. A banned
multi-token sequence only blocks its last token, so other spellings or tokenisations can get
through; the redaction patterns (case-, space- and punctuation-insensitive) catch those. The
guard.json file itself contains the sensitive strings: keep it as confidential as the request.
"""


def _load_base(base_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = Path(base_dir)
    kwargs = {}
    if base_dir.is_file() and base_dir.suffix == ".gguf":
        kwargs, base_dir = {"gguf_file": base_dir.name}, base_dir.parent
    tokenizer = AutoTokenizer.from_pretrained(base_dir, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if kwargs:  # dequantised in memory; save_pretrained refuses until the quantizer is dropped
        model.config.quantization_config = None
        model.hf_quantizer = None
    model.eval()
    return model, tokenizer


def export(base_dir: Path, artifact_dir: Path, out_dir: Path) -> Path:
    """Write the merged, standalone model for the artifact in `artifact_dir` to `out_dir` (must not exist)."""
    from engine.compute.candidate import GUARD_FILE, load_candidate

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    base, tokenizer = _load_base(Path(base_dir))
    # The freshly loaded base is private to this call, so the candidate may be built on it in place.
    cand = load_candidate(base, tokenizer, Path(artifact_dir), inplace=True)
    model = cand.model
    if cand.kind == "adapter":
        model = model.merge_and_unload()
    manifest_path = Path(artifact_dir) / "manifest.json"
    method = ""
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        method = f" from method {manifest.get('method')}" if manifest.get("method") else ""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        guard_text = ""
        if cand.guard is not None:
            shutil.copyfile(Path(artifact_dir) / GUARD_FILE, tmp / GUARD_FILE)
            guard_text = GUARD_README.format(n=len(cand.guard.strings), m=len(cand.guard.bad_words_ids),
                                             name=out_dir.name)
        (tmp / "README.txt").write_text(README.format(kind=cand.kind, method=method, name=out_dir.name,
                                                      guard=guard_text))
        (tmp / "expunge_export.json").write_text(json.dumps(
            {"kind": cand.kind, "base": str(base_dir), "artifact": str(artifact_dir)}, indent=2) + "\n")

    replace_folder(out_dir, fill)
    return out_dir
