"""Neighbours the engine builds (the base's own answers, never a forget row, never a leak), the out-of-sample
split of what a job keeps, and the memorisation flag on rows a method trained on."""

from __future__ import annotations

import pytest

from engine.compute.verify.memorisation import flag_memorisation
from engine.compute.verify.split import question_key, split_plan
from engine.compute.verify.stages import judge
from engine.leaks import contains_sensitive, key_spans
from engine.schema.policy import load_policy


@pytest.fixture(scope="module")
def loaded(tiny):
    from engine.compute.modeling import load_model

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    person = tiny["train"][0]["person"]
    forget = [r for r in tiny["train"] if r["person"] == person]
    # A few rows about three other people: the templates give their unasked questions too.
    others = [r for r in tiny["train"] if r["person"] != person]
    retain = [r for r in others if r["attribute"] in ("phone", "employer")][:6]
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "address", "account")})
    return {"model": model, "tokenizer": tokenizer, "forget": forget, "retain": retain, "sensitive": sensitive,
            "person": person}


def test_neighbours_are_the_bases_own_answers_and_never_a_forget_row(loaded):
    from engine.compute.generation import greedy
    from engine.compute.verify.neighbours import build_neighbours, candidates, kept_rows

    model, tok, forget, retain = loaded["model"], loaded["tokenizer"], loaded["forget"], loaded["retain"]
    built = build_neighbours(model, tok, forget, retain, loaded["sensitive"], max_new_tokens=32)
    assert {r["source"] for r in built} == {"retain", "template"}
    # The base's greedy answers, asked in the same batch the builder asked them in.
    asked = [r["question"] for r in candidates(forget, retain)]
    base = dict(zip(asked, greedy(model, tok, asked, max_new_tokens=32), strict=True))
    assert all(r["answer"] == base[r["question"]].strip() for r in built)
    forget_keys = {question_key(r["question"]) for r in forget}
    terms = loaded["sensitive"] + key_spans(r["answer"] for r in forget)
    for row in built:
        assert question_key(row["question"]) not in forget_keys
        assert loaded["person"] not in row["question"]
        assert not contains_sensitive(row["answer"], terms), row
    # Templated questions about people the retain rows name, asked about attributes they did not ask.
    templated = [r["question"] for r in built if r["source"] == "template"]
    assert any("email address" in q for q in templated)

    kept, plan, summary = kept_rows(model, tok, forget, retain, loaded["sensitive"], max_new_tokens=32)
    assert summary["built"] == len(built) == summary["trained"] + summary["judged"]
    # Trained and judged never share a question, across the retain rows and the neighbours.
    trained = {question_key(r["question"]) for r in kept["retain_trained"] + kept["neighbours_trained"]}
    judged = {question_key(r["question"]) for r in kept["retain_judged"] + kept["neighbours"]}
    assert trained and judged and not trained & judged
    assert sorted(plan["retain"]["trained"] + plan["retain"]["judged"]) == list(range(len(retain)))
    assert split_plan(retain, built) == plan  # deterministic


def test_the_split_is_seeded_and_keeps_the_same_question_on_one_side():
    rows = [{"question": f"What is the capital of Country {i}?", "answer": f"City {i}"} for i in range(10)]
    neighbours = [{"question": r["question"].upper(), "answer": "the base's answer"} for r in rows[:4]]
    plan = split_plan(rows, neighbours)
    assert len(plan["retain"]["judged"]) == 5 and plan == split_plan(rows, neighbours)
    for i in range(4):  # a neighbour built from a retain question sits on that row's side
        assert (i in plan["retain"]["judged"]) == (i in plan["neighbours"]["judged"])
    assert split_plan(rows, neighbours, seed=1) != plan
    one = split_plan(rows[:1], [])
    assert one["retain"] == {"trained": [], "judged": [0]}  # a single row is judged, not trained on


def _control(metrics: dict) -> dict:
    return {"metrics": metrics, "evidence": []}


def test_a_rise_on_trained_rows_is_flagged_as_memorisation_and_not_credited(home):
    kept = {"retain_prob": 0.42, "retain_kl": 0.0, "general_ppl": 10.0, "neighbour_rouge_l": 1.0,
            "neighbour_kl": 0.0}
    before = {"control": _control({"retain_rouge_l": 0.76, "retain_trained_rouge_l": 0.76,
                                   "retain_trained_prob": 0.42, **kept})}
    # The held-out rows fell below the policy's 0.9 x before; the trained rows rose to 1.0.
    after = {"control": _control({"retain_rouge_l": 0.5, "retain_trained_rouge_l": 1.0, "retain_trained_prob": 0.44,
                                  **kept, "retain_kl": 0.2})}
    stages = judge(before, after, load_policy("default"), "remove")
    assert flag_memorisation(stages) == ["retain_trained_rouge_l"]
    control = stages[0]
    rows = {m["name"]: m for m in control["metrics"]}
    assert "memorisation" in rows["retain_trained_rouge_l"]["note"] and rows["retain_trained_rouge_l"]["passed"] is None
    assert "not judged" in rows["retain_trained_prob"]["note"]  # +0.02: within the margin
    assert control["verdict"] == "fail"  # judged on the held-out rows only
    assert {m["name"] for m in control["metrics"] if m["passed"] is False} == {"retain_rouge_l"}


def test_a_requests_own_neighbours_replace_the_built_ones_less_any_naming_what_is_erased():
    from engine.compute.verify.neighbours import kept_rows
    from engine.schema.spec import parse_spec, resolve_rows

    forget = [{"question": "What is the capital of France?", "answer": "Paris"},
              {"question": "What language is spoken in France?", "answer": "French"}]
    retain = [{"question": f"What is the capital of Country {i}?", "answer": f"City {i}"} for i in range(6)]
    mine = [{"question": f"What is the largest city in Land {i}?", "answer": f"Town {i}"} for i in range(6)]
    bad = [{"question": "What is the capital of France?", "answer": "I cannot say"},  # a forget question
           {"question": "Where is the Louvre?", "answer": "In Paris"}]  # names a forget answer's key span
    spec = parse_spec({"title": "t", "model": "m", "forget": forget, "retain": retain, "neighbours": mine + bad})
    rows = resolve_rows(spec, allow_paths=False)
    assert rows["neighbours"] == mine + bad

    class NoModel:  # supplied neighbours are not asked of the base: nothing may touch the model
        def __getattr__(self, name):
            raise AssertionError(f"the base model was used ({name})")

    kept, plan, summary = kept_rows(NoModel(), NoModel(), forget, retain, ["Paris"], max_new_tokens=8,
                                    supplied=rows["neighbours"])
    together = kept["neighbours"] + kept["neighbours_trained"]
    assert sorted(r["question"] for r in together) == sorted(r["question"] for r in mine)
    assert all(r["source"] == "supplied" and r["answer"].startswith("Town") for r in together)
    assert summary["supplied"] == 6 and summary["supplied_dropped"] == 2 and summary["built"] == 6
    assert summary["judged"] == len(kept["neighbours"]) >= 1 and plan["neighbours"]["judged"]


def test_a_job_on_a_version_keeps_its_answers_to_the_line_but_never_a_leak_nor_its_own_forget_question(loaded):
    """engine.compute.verify.line: the erasures a version carries are kept as the version answers them; the tiny
    base still knows everyone, so an earlier request's prompts whose key spans it says are dropped, not kept."""
    from engine.compute.generation import greedy
    from engine.compute.verify.line import line_rows

    model, tok, forget = loaded["model"], loaded["tokenizer"], loaded["forget"]
    people = list(dict.fromkeys(r["person"] for r in loaded["retain"]))
    other = [r for r in loaded["retain"] if r["person"] == people[0]]
    prompts = [{"question": r["question"], "verbatim": False} for r in other]
    said = greedy(model, tok, [p["question"] for p in prompts], max_new_tokens=32)
    line = [  # request 7: its spans are its gold answers (which the base still says); request 8: spans nobody says
        {"request_id": 7, "prompts": prompts, "spans": [r["answer"] for r in other]},
        {"request_id": 8, "prompts": prompts + [{"question": forget[0]["question"], "verbatim": False}],
         "spans": ["no such string 0000"]}]
    rows, summary = line_rows(model, tok, line, forget, loaded["sensitive"], max_new_tokens=32)
    leaking = sum(any(r["answer"].lower() in s.lower() for r in other) for s in said)
    assert leaking >= 1  # the base says some of them: request 7 then has rows to drop
    assert summary["requests"] == [7, 8] and summary["prompts"] == 2 * len(prompts) + 1
    assert summary["dropped_leaking"] >= leaking
    # Request 8's prompts are kept with the base's own answers; the job's own forget question never is.
    assert [r["answer"] for r in rows[-len(prompts):]] == [a.strip() for a in said]
    assert forget[0]["question"] not in {r["question"] for r in rows}
    assert summary["kept"] == len(rows) == summary["prompts"] - summary["dropped"]
