"""The real-knowledge requests (engine/real_data.py) behind `expunge demo --model smollm2` and `expunge bench
real`: their shape, the CLI's refusals before anything loads, and (slow) that SmolLM2 really knows the demo's
facts and the demo files a valid request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.leaks import contains_sensitive
from engine.real_data import ENTITIES, request_rows

EXPUNGE = str(Path(sys.executable).parent / "expunge")


def test_each_request_is_entity_level_with_clean_neighbours():
    assert len(ENTITIES) >= 6
    for entity, sensitive in ENTITIES.items():
        rows = request_rows(entity)
        assert 3 <= len(rows["forget"]) <= 5 and all(entity in r["question"] for r in rows["forget"])
        assert len(rows["retain"]) >= 8 and len(rows["holdout"]) >= 4
        # Neighbours of the same kind about other countries; none of their answers is a fact being erased.
        assert not any(entity in r["question"] for r in rows["retain"])
        assert not any(contains_sensitive(r["answer"], sensitive) for r in rows["retain"])


def test_bench_real_refuses_what_it_cannot_run_before_loading_anything(home):
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    for args, words in ((["--tiers", "4"], "tiers are 1, 2 and 3"),
                        (["--entity", "Atlantis"], "unknown entity Atlantis")):
        res = subprocess.run([EXPUNGE, "bench", "real", *args], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode != 0 and words in res.stderr, (args, res.stderr)


@pytest.mark.slow
def test_smollm2_knows_the_demo_facts_and_the_demo_request_is_valid(home, monkeypatch):
    from console.demo import prepare_smollm2_demo
    from engine.bench_real import known_rows, smollm2_spec
    from engine.compute.jobrunner import WarmModel
    from engine.schema.spec import load_spec_file
    from tests.fixtures_model import cache_root

    monkeypatch.setenv("EXPUNGE_CONVERTED_DIR", str(cache_root() / "converted"))
    demo = prepare_smollm2_demo(home)
    spec = load_spec_file(demo["spec_path"])
    assert spec["model"] == "smollm2" and spec["intention"] == "remove"
    model, tokenizer = WarmModel().get(smollm2_spec("quick"), "cpu")
    rows = request_rows("France")
    assert all(known_rows(model, tokenizer, rows["forget"]))
    assert sum(known_rows(model, tokenizer, rows["retain"])) >= 8
