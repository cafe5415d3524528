"""Artifacts round-trip: a saved candidate loads back to the same model, and an exported directory
loaded by plain transformers answers exactly like the candidate."""

from __future__ import annotations

import pytest

from engine.artifacts import write_atomically
from engine.compute.methods.base import RunContext, get_method


@pytest.fixture(scope="module")
def setup(tiny):
    from engine.compute.modeling import load_model

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    people = list(dict.fromkeys(r["person"] for r in tiny["train"]))
    forget = [r for r in tiny["train"] if r["person"] == people[0]]
    retain = [r for r in tiny["train"] if r["person"] != people[0]][:40]
    questions = [r["question"] for r in forget + retain[:10]]
    return {"dir": tiny["dir"], "model": model, "tokenizer": tokenizer, "forget": forget, "retain": retain,
            "questions": questions, "sensitive": sorted({r["value"] for r in forget})}


def _candidate(setup, name, tmp_path, **hyper):
    cls = get_method(name)
    ctx = RunContext(model=setup["model"], tokenizer=setup["tokenizer"], forget=setup["forget"],
                     retain=setup["retain"], sensitive=setup["sensitive"], device="cpu", work_dir=tmp_path / "work",
                     progress=lambda **e: None)
    return cls().run(ctx, cls.Hyper(**hyper))


@pytest.mark.parametrize("name,hyper", [
    ("graddiff", {"steps": 15}),
    ("rmu", {"steps": 15}),
    ("graddiff", {"steps": 8, "lora": False, "lr": 3e-4}),
    ("guard", {}),
])
def test_save_load_and_export_round_trip(setup, tmp_path, name, hyper):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.compute.candidate import load_candidate
    from engine.compute.export import export
    from engine.compute.generation import greedy
    from engine.compute.guard import Guard

    cand = _candidate(setup, name, tmp_path, **hyper)
    tok, qs = setup["tokenizer"], setup["questions"]
    expected = greedy(cand.model, tok, qs, max_new_tokens=32, guard=cand.guard)
    if name != "guard":
        assert expected != greedy(setup["model"], tok, qs, max_new_tokens=32), "the method changed nothing"

    art = tmp_path / "artifact"
    write_atomically(art, cand.save, {"method": name})
    meta_kinds = {f["kind"] for f in cand.save(tmp_path / "again")}
    assert cand.kind in meta_kinds or name == "guard"

    loaded = load_candidate(setup["model"], tok, art)
    assert loaded.kind == cand.kind
    assert greedy(loaded.model, tok, qs, max_new_tokens=32, guard=loaded.guard) == expected

    out = export(setup["dir"], art, tmp_path / "exported")
    assert (out / "README.txt").is_file() and (out / "config.json").is_file()
    plain = AutoModelForCausalLM.from_pretrained(out)
    plain_tok = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in n for n, _ in plain.named_parameters())
    guard = Guard.load(out / "guard.json", plain_tok) if name == "guard" else None
    assert greedy(plain, plain_tok, qs, max_new_tokens=32, guard=guard) == expected
    with pytest.raises(FileExistsError):
        export(setup["dir"], art, out)


def test_exported_guard_works_with_transformers_alone(setup, tmp_path):
    """README.txt's recipe: NoBadWordsLogitsProcessor from guard.json, the blocked check on the raw
    logits, re.sub with its patterns; it answers exactly as the guard inside expunge does."""
    import json
    import re

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LogitsProcessorList,
        NoBadWordsLogitsProcessor,
    )

    from engine.compute.export import export
    from engine.compute.generation import greedy
    from engine.leaks import contains_sensitive

    cand = _candidate(setup, "guard", tmp_path)
    write_atomically(tmp_path / "art", cand.save, {})
    out = export(setup["dir"], tmp_path / "art", tmp_path / "exported")
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    guard = json.loads((out / "guard.json").read_text())
    procs = LogitsProcessorList([NoBadWordsLogitsProcessor(guard["bad_words_ids"], eos_token_id=tok.eos_token_id)])
    texts = []
    for r in setup["forget"]:
        enc = tok(f"Question: {r['question']}\nAnswer:", return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**enc, logits_processor=procs, max_new_tokens=32, do_sample=False,
                                 pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                                 output_logits=True, output_scores=True)
        text = tok.decode(gen.sequences[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        blocked = any(torch.isneginf(s.gather(1, lg.argmax(-1, keepdim=True))).any()
                      for lg, s in zip(gen.logits, gen.scores, strict=True))
        redacted = text
        for pattern in guard["redact_patterns"]:
            redacted = re.sub(pattern, guard["replacement"], redacted, flags=re.IGNORECASE)
        text = guard["refusal"] if guard["on_block"] == "refuse" and (blocked or redacted != text) else redacted
        assert not contains_sensitive(text, setup["sensitive"]), text
        texts.append(text.strip())
    assert guard["refusal"] in texts
    inside = greedy(cand.model, setup["tokenizer"], [r["question"] for r in setup["forget"]], max_new_tokens=32,
                    guard=cand.guard)
    assert texts == inside


def test_never_writes_into_the_base_directory(setup, tmp_path):
    cand = _candidate(setup, "graddiff", tmp_path, steps=1)
    with pytest.raises(ValueError, match="base model"):
        cand.save(setup["dir"] / "artifact")
    assert not (setup["dir"] / "artifact").exists()
