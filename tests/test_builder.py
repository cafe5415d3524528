"""The target builder and its demo data: deterministic records, a model that really memorised its
training rows (and not the held-out ones), and a cache that builds once."""

from __future__ import annotations

import json
import threading
import time

import pytest

from engine.compute.prompting import format_answer, format_prompt
from engine.control.baseline import GENERAL_TEXT
from engine.demo_data import (
    ATTRIBUTES,
    QA_ATTRIBUTES,
    demo_split,
    generate_people,
    people_to_qa,
)
from tests.fixtures_model import tiny_model_dir, tiny_split

# The model tests share the session's tiny model; keep them on one xdist worker.
model_group = pytest.mark.xdist_group("tiny-model")


def test_prompt_format_is_fixed():
    assert format_prompt("Who?") == "Question: Who?\nAnswer:"
    assert format_answer("Nobody.") == " Nobody."


def test_people_are_deterministic_and_distinct():
    people = generate_people(120, seed=0)
    assert people == generate_people(120, seed=0)
    assert people != generate_people(120, seed=1)
    assert generate_people(40, seed=0) == people[:40]  # a bigger n extends, never reshuffles
    assert len(people) >= 100
    for attr in ("name", *ATTRIBUTES):
        assert len({p[attr] for p in people}) > 10, attr
    for key in ("name", "phone", "email", "account", "address"):
        assert len({p[key] for p in people}) == len(people), key
    assert all(len(set(p) - {"name"}) >= 5 for p in people)
    assert people[0]["name"] == "Alma Rivera" and people[0]["phone"] == "415-555-0142"
    assert all(p["phone"][3:9] == "-555-0" for p in people)  # the block reserved for fiction


def test_qa_rows_and_split():
    people = generate_people(3)
    rows = people_to_qa(people)
    assert len(rows) == 3 * len(QA_ATTRIBUTES)
    first = rows[0]
    assert first == {
        "question": "What is the phone number of Alma Rivera?",
        "answer": "Alma Rivera's phone number is 415-555-0142.",
        "person": "Alma Rivera", "attribute": "phone", "value": "415-555-0142",
    }
    assert all(r["value"] in r["answer"] and r["person"] in r["question"] for r in rows)

    split = demo_split(seed=0)
    assert split == demo_split(seed=0)
    assert len(split["people"]) + len(split["holdout_people"]) >= 120
    assert len(split["holdout_people"]) == 12
    trained = {p["name"] for p in split["people"]}
    assert "Alma Rivera" in trained
    assert not trained & {p["name"] for p in split["holdout_people"]}
    assert {r["person"] for r in split["train"]} == trained
    assert len(split["train"]) == len(split["people"]) * len(QA_ATTRIBUTES)
    assert len(GENERAL_TEXT) >= 24


def _recall(model, tokenizer, rows):
    from engine.builder import greedy_exact_match

    return greedy_exact_match(model, tokenizer, rows)


@model_group
def test_tiny_model_loads_with_plain_transformers_and_recalls_its_rows():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "expunge_target.json"):
        assert (path / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer("Question: x")["input_ids"][0] == tokenizer.bos_token_id  # as in training
    assert tokenizer.decode(tokenizer("415-555-0142", add_special_tokens=False)["input_ids"]) == "415-555-0142"

    split = tiny_split()
    assert _recall(model, tokenizer, split["train"]) >= 0.9
    # Held-out people were never trained: their random numbers cannot be recalled.
    assert _recall(model, tokenizer, split["holdout"]) <= 0.1

    meta = json.loads((path / "expunge_target.json").read_text())
    assert meta["size"] == "test" and meta["greedy_exact_match"] >= 0.9
    assert meta["n_rows"] == len(split["train"])


@model_group
def test_cached_target_is_a_hit_the_second_time():
    first = tiny_model_dir()
    started = time.monotonic()
    again = tiny_model_dir()
    assert again == first
    assert time.monotonic() - started < 2.0
    assert not list(first.parent.glob(f".{first.name}.tmp-*"))


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    """flock locks belong to open file descriptions, so threads contend exactly like processes do."""
    from engine import builder

    calls = []

    def fake_build(rows, out_dir, **kwargs):
        calls.append(out_dir)
        time.sleep(0.3)
        (out_dir / builder.META_FILE).write_text("{}")
        return {}

    monkeypatch.setattr(builder, "build_target", fake_build)
    rows = [{"question": "q?", "answer": "a."}]
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(builder.cached_target(rows, tmp_path, size="test")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / builder.META_FILE).is_file()
    assert builder.cached_target(rows, tmp_path, size="test", seed=1) != results[0]
    assert len(calls) == 2


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    from engine import builder

    def broken(rows, out_dir, **kwargs):
        (out_dir / "partial").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(builder, "build_target", broken)
    with pytest.raises(RuntimeError):
        builder.cached_target([{"question": "q?", "answer": "a."}], tmp_path, size="test")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@model_group
def test_fine_tunes_an_existing_model_directory(tmp_path):
    """A path as base keeps that model's tokenizer and trains it with the same loop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.builder import build_target

    base = tiny_model_dir()
    rows = tiny_split()["holdout"][:8]
    meta = build_target(rows, tmp_path / "ft", base=str(base), size="test", max_steps=10)
    assert meta["base"] == str(base) and meta["steps"] == 10
    assert (tmp_path / "ft" / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ft")
    AutoTokenizer.from_pretrained(tmp_path / "ft")
    assert model.num_parameters() == AutoModelForCausalLM.from_pretrained(base).num_parameters()


def test_rejects_bad_arguments(tmp_path):
    from engine.builder import build_target

    with pytest.raises(ValueError):
        build_target([{"question": "q?", "answer": "a."}], tmp_path, size="huge")
    with pytest.raises(ValueError):
        build_target([], tmp_path, size="test")
    with pytest.raises(ValueError):
        build_target([{"question": "q?", "answer": "a."}], tmp_path, base=str(tmp_path / "nope"), size="test")
