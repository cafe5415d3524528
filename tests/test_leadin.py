"""Answers scored where the base model says them (engine.compute.verify.leadin): the lead-in candidates, how a
row with a lead-in is encoded, that the demo model's rows keep the bare form, and — on SmolLM2, which answers
in sentences — that the lead-in turns a white-box figure with no signal into one with it."""

from __future__ import annotations

import math

import pytest

from engine.compute.verify.leadin import candidates, find_lead_ins, lead_out, summary, with_lead_ins


def test_candidates_stop_before_the_answer_or_a_sensitive_string():
    said = "The capital of France is Paris, of course."
    assert candidates(said, "Paris", []) == ["", "The", "The capital", "The capital of", "The capital of France",
                                             "The capital of France is"]
    # A sensitive string in the lead-in would hand the erased value to the model as context.
    assert candidates(said, "Paris", ["france"]) == ["", "The", "The capital", "The capital of"]
    # Said bare (the demo's rows, the built neighbours): nothing to lead in with.
    assert candidates("Paris, of course.", "Paris", []) == [""]
    assert candidates("paris", "Paris", []) == [""]
    # A gold sentence that opens as the base's answer does carries its own lead-in (the demo's holdout rows).
    assert candidates("Hollis's phone number is 415-555-0142.", "Hollis's phone number is 303-555-0167.", []) == [""]
    assert len(candidates(" ".join(["word"] * 80), "Paris", [])) == 25  # "" and the first 24 cuts


def test_the_lead_out_is_the_rest_of_the_bases_sentence_after_the_answer():
    assert lead_out("The capital of France is Paris.", "The capital of France is", "Paris") == "."
    assert lead_out("The capital is Paris, a city on the Seine. It is old.", "The capital is", "Paris") == \
        ", a city on the Seine."
    assert lead_out("The capital of Zorvania is a city called Vel.", "The capital of Zorvania is a city called",
                    "Quelmar") == ""  # the base does not say this answer: nothing of its own to end it with
    assert lead_out("Paris.", "", "Paris") == ""


def test_a_lead_in_joins_the_prompt_and_the_answer_follows_it(tiny):
    from engine.compute.modeling import load_model
    from engine.compute.prompting import format_prompt
    from engine.compute.tokens import encode_qa

    _, tok = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    row = {"question": "Where was Alice born?", "answer": "Lisbon"}
    stated = dict(row, lead_in="She was born in", lead_out=".")
    (bare_ids, _, bare_labels), (ids, _, labels) = (encode_qa(tok, [r]) for r in (row, stated))
    prompt = tok(format_prompt(row["question"], tok))["input_ids"]
    lead = tok(" She was born in", add_special_tokens=False)["input_ids"]
    answer = tok(" Lisbon", add_special_tokens=False)["input_ids"]
    # Scored: the answer's tokens alone, after the prompt and the lead-in (no loss on either).
    assert ids[0].tolist() == prompt + lead + answer
    assert labels[0].tolist() == [-100] * (len(prompt) + len(lead)) + answer
    assert bare_labels[0].tolist() == [-100] * len(prompt) + answer + [tok.eos_token_id]
    # Trained: the answer, then the rest of the base's sentence and the closing token.
    ids, _, labels = encode_qa(tok, [stated], train=True)
    end = tok(".", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids[0].tolist() == prompt + lead + answer + end
    assert labels[0].tolist() == [-100] * (len(prompt) + len(lead)) + answer + end
    # A differently said answer (IdkDPO's "I don't know") keeps the bare form.
    _, _, idk = encode_qa(tok, [dict(row, lead_in="She was born in", idk="I do not know")], answer_key="idk")
    assert idk[0].tolist()[: len(prompt)] == [-100] * len(prompt) and tok.eos_token_id in idk[0].tolist()


def test_the_demo_models_rows_keep_the_bare_form(tiny):
    from engine.compute.modeling import load_model

    model, tok = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    rows = tiny["train"][:6] + tiny["holdout"][:4]  # facts it learnt, and facts about people it never saw
    table = find_lead_ins(model, tok, rows, [], max_new_tokens=24)
    assert set(table) == {(r["question"], r["answer"]) for r in rows}
    assert set(table.values()) == {("", "")}  # it answers with the gold sentence itself, or one shaped like it
    assert with_lead_ins(rows, table) == rows
    assert summary({"forget": rows, "holdout": []}) == {"forget": "0 of 10"}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_on_smollm2_the_answer_is_scored_where_the_model_says_it(monkeypatch):
    """SmolLM2 answers "The capital of France is Paris.": the bare "Paris" is unlikely as the first word of its
    answer, "Paris" after its own lead-in is likely, and an invented capital stays unlikely in the same place."""
    from engine.bench_real import smollm2_spec
    from tests.fixtures_model import cache_root

    monkeypatch.setenv("EXPUNGE_CONVERTED_DIR", str(cache_root() / "converted"))  # shared with test_real_model
    from engine.compute.modeling import load_model
    from engine.compute.prompting import set_chat_mode
    from engine.compute.verify.scoring import answer_nlls

    spec = smollm2_spec("quick")
    model, tok = load_model(spec.source, spec.kind, {"dtype": "fp32"}, "cpu", converted=spec.converted)
    set_chat_mode(tok, "auto")
    known = [{"question": "What is the capital of France?", "answer": "Paris"},
             {"question": "What is the capital of Japan?", "answer": "Tokyo"}]
    invented = [{"question": "What is the capital of Zorvania?", "answer": "Quelmar"}]
    table = find_lead_ins(model, tok, known + invented, ["Paris"], max_new_tokens=24)
    assert table[("What is the capital of France?", "Paris")] == ("The capital of France is", ".")
    assert table[("What is the capital of Japan?", "Tokyo")][0] == "The capital of Japan is"

    def prob(rows):
        return [math.exp(-n) for n in answer_nlls(model, tok, rows)]

    bare = prob(known)
    stated = prob(with_lead_ins(known, table))
    made_up = prob(with_lead_ins(invented, table))
    print("bare", bare, "stated", stated, "invented", made_up, "lead-ins", table)
    assert max(bare) < 0.05 and min(stated) > 0.5
    assert made_up[0] < 0.05
