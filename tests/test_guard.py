"""Tier 1: the guard blocks the sensitive strings in every variant, in greedy and sampled decoding,
while the same model without the guard still says them."""

from __future__ import annotations

import pytest

from engine.compute.guard import Guard, surface_forms
from engine.leaks import contains_sensitive, key_spans


@pytest.fixture(scope="module")
def setup(tiny):
    from engine.compute.modeling import load_model

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    person = tiny["train"][0]["person"]
    forget = [r for r in tiny["train"] if r["person"] == person]
    sensitive = [person] + [r["value"] for r in forget if r["attribute"] in ("phone", "email", "account")]
    return {"model": model, "tokenizer": tokenizer, "forget": forget, "sensitive": sensitive, "tiny": tiny,
            "guard": Guard.build(sensitive, forget, tokenizer)}


def test_surface_forms_of_a_phone_number():
    forms = surface_forms("415-555-0142")
    for v in ("415-555-0142", "415 555 0142", "4155550142", "(415) 555-0142", "415.555.0142"):
        assert v in forms
    assert {"Alma Rivera", "alma rivera", "ALMA RIVERA"} <= set(surface_forms("Alma Rivera"))


def test_key_spans_of_answers_without_sensitive_strings():
    spans = key_spans(["Alma Rivera's phone number is 415-555-0142.",
                       "Alma Rivera's email address is alma.rivera42@example.com.",
                       "Alma Rivera lives at 123 Juniper Street.", "Alma Rivera works at Quillfeather Analytics."])
    assert {"Alma Rivera", "415-555-0142", "alma.rivera42@example.com", "123 Juniper Street",
            "Quillfeather Analytics"} <= set(spans)
    assert not any(s.lower().startswith(("is ", "at ")) for s in spans)


def test_every_variant_sequence_is_blocked_at_its_last_token(setup):
    import torch

    guard, tok = setup["guard"], setup["tokenizer"]
    assert guard.bad_words_ids
    (proc,) = guard.logits_processors()
    vocab = len(tok)
    for text in guard.variants:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        context = tok("Answer:", add_special_tokens=True)["input_ids"] + ids[:-1]
        scores = proc(torch.tensor([context]), torch.zeros(1, vocab))
        assert scores[0, ids[-1]] == float("-inf"), f"{text!r} can still be completed"
        # And nothing else is touched at that point, apart from other banned continuations.
        assert int(torch.isinf(scores).sum()) < vocab // 4


def test_redaction_catches_unlisted_spellings(setup):
    guard = setup["guard"]
    phone = next(r["value"] for r in setup["forget"] if r["attribute"] == "phone")
    a, b, c = phone.split("-")
    name = setup["sensitive"][0]
    for text in (f"call {a}/{b}/{c} now", f"({a}) {b} {c}", f"{a}{b}{c}", name.upper(), name.lower().replace(" ", "-"),
                 f"{name.split()[0]}  {name.split()[1]}'s number"):
        out = guard.redact(text)
        assert not contains_sensitive(out, setup["sensitive"]), (text, out)
        assert "[REDACTED]" in out


def test_guard_blocks_greedy_and_sampled_while_the_base_leaks(setup):
    from engine.compute.generation import generate, greedy

    model, tok, guard, sens = setup["model"], setup["tokenizer"], setup["guard"], setup["sensitive"]
    questions = [r["question"] for r in setup["forget"]]
    # Variant-eliciting prompts too: the answer's own opening, in other casings and formats.
    prompts = [f"Question: {q}\nAnswer:" for q in questions]
    prompts += [f"Question: {q}\nAnswer: {r['answer'].split(' ')[0]}" for q, r in zip(questions, setup["forget"],
                                                                                    strict=True)]
    plain = greedy(model, tok, questions, max_new_tokens=40)
    assert any(contains_sensitive(o, sens) for o in plain), "the unguarded model should still leak"

    guarded = greedy(model, tok, prompts, max_new_tokens=40, guard=guard, raw_prompts=True)
    sampled = generate(model, tok, prompts, max_new_tokens=40, guard=guard, raw_prompts=True, sample=True,
                       num_samples=6, temperature=1.0, seed=1)
    outputs = guarded + [o for outs in sampled for o in outs]
    assert not [o for o in outputs if contains_sensitive(o, sens)]

    # The processor alone (no redaction, no refusal) already keeps every exact variant out of greedy output.
    processor_only = Guard(guard.strings, tok, redact=False, on_block="redact")
    raw = greedy(model, tok, questions, max_new_tokens=40, guard=processor_only)
    for out in raw:
        for s in sens:
            for v in surface_forms(s):
                assert v not in out, (v, out)


def test_blocked_answers_are_refused_and_others_untouched(setup):
    """on_block = refuse: an answer whose top choice was banned becomes the refusal (no near miss such as
    all digits but the last); answers about other people come out exactly as without the guard."""
    from engine.compute.generation import greedy

    model, tok, guard, sens = setup["model"], setup["tokenizer"], setup["guard"], setup["sensitive"]
    leaking = [r["question"] for r in setup["forget"]
               if contains_sensitive(greedy(model, tok, [r["question"]], max_new_tokens=40)[0], sens)]
    assert leaking
    assert greedy(model, tok, leaking, max_new_tokens=40, guard=guard) == [guard.refusal] * len(leaking)
    near_miss = greedy(model, tok, leaking, max_new_tokens=40,
                       guard=Guard(guard.strings, tok, on_block="redact"))
    assert all(o != guard.refusal for o in near_miss)  # redact mode keeps the (near-miss) rest

    person = setup["forget"][0]["person"]
    others = [r["question"] for r in setup["tiny"]["train"] if r["person"] != person][:12]
    assert greedy(model, tok, others, max_new_tokens=40, guard=guard) == greedy(model, tok, others, max_new_tokens=40)


def test_guard_json_round_trip(setup, tmp_path):
    guard = setup["guard"]
    guard.save(tmp_path / "guard.json")
    again = Guard.load(tmp_path / "guard.json", setup["tokenizer"])
    assert again.strings == guard.strings and again.bad_words_ids == guard.bad_words_ids
    bare = Guard.load(tmp_path / "guard.json")  # no tokenizer: the stored ids
    assert bare.bad_words_ids == guard.bad_words_ids
    assert again.redact(guard.strings[0]) == "[REDACTED]"
    assert (again.on_block, again.refusal) == (guard.on_block, guard.refusal)


def test_guard_from_forget_answers_when_no_sensitive_strings(setup):
    guard = Guard.build([], setup["forget"], setup["tokenizer"])
    person = setup["forget"][0]["person"]
    assert person in guard.strings
    phone = next(r["value"] for r in setup["forget"] if r["attribute"] == "phone")
    assert phone in guard.strings
