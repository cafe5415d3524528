"""The one tiny target model the whole test session shares (and every xdist worker): built once by the
real builder, cached on disk by content hash, so only the first test run on a machine pays for it."""

from __future__ import annotations

import os
from pathlib import Path

from engine.demo_data import demo_split
from engine.schema.status import TERMINAL

REPO = Path(__file__).resolve().parent.parent
# 36 people: 32 trained (160 facts, ~30 CPU-seconds to memorise at the "test" size), 4 held out.
TEST_PEOPLE = 36


def cache_root() -> Path:
    return Path(os.environ.get("EXPUNGE_TEST_CACHE") or REPO / ".cache" / "test-models")


def tiny_split() -> dict:
    """The rows of the test-size model: {"train", "holdout", "people", "holdout_people"}."""
    return demo_split(seed=0, n_people=TEST_PEOPLE)


def tiny_seed() -> int:
    """The builder's seed for the shared model. EXPUNGE_TEST_SEED runs the suite on another tiny model: the
    tests' margins must hold on any of them, as a different CPU's rounding gives a different model too."""
    return int(os.environ.get("EXPUNGE_TEST_SEED") or 0)


def tiny_model_dir() -> Path:
    from engine.builder import cached_target

    return cached_target(tiny_split()["train"], cache_root(), size="test", seed=tiny_seed())


def loaded_one_person_request(tiny: dict, retain_rows: int) -> dict:
    """The tiny model loaded in fp32 on CPU, the first person's facts to forget and `retain_rows` of the
    others' to retain (the training-loop tests' request)."""
    from engine.compute.modeling import load_model

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    person = tiny["train"][0]["person"]
    forget = [r for r in tiny["train"] if r["person"] == person]
    retain = [r for r in tiny["train"] if r["person"] != person][:retain_rows]
    return {"model": model, "tokenizer": tokenizer, "forget": forget, "retain": retain}


def wait_job(client, job_id: int, timeout: float = 600, until=TERMINAL) -> dict:
    """Poll the engine until the job reaches one of `until`; its detail, or AssertionError after `timeout`."""
    import time

    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        job = client.job(job_id)
        if job["job"]["status"] in until:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job and job['job']}")
