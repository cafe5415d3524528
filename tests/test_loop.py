"""The shared training loop: schedule, progress events, atomic checkpoints, and resume-after-kill that
ends with exactly the weights of an uninterrupted run with the same seed."""

from __future__ import annotations

import pytest

from engine.compute.methods.base import RunContext, get_method
from engine.compute.methods.unlearn import CHECKPOINT_DIR, CHECKPOINT_FILE, SCHEDULE_NAMES


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tiny):
    from tests.fixtures_model import loaded_one_person_request

    return loaded_one_person_request(tiny, retain_rows=40)


def _run(setup, name, work_dir, *, resume=False, kill_at=None, events=None, **hyper):
    def progress(**e):
        if events is not None:
            events.append(e)
        if kill_at is not None and e.get("phase") == "train" and e["step"] == kill_at:
            raise Killed

    cls = get_method(name)
    ctx = RunContext(model=setup["model"], tokenizer=setup["tokenizer"], forget=setup["forget"],
                     retain=setup["retain"], sensitive=[], device="cpu", work_dir=work_dir, progress=progress,
                     resume=resume)
    return cls().run(ctx, cls.Hyper(**hyper))


def _trained(cand) -> dict:
    return {n: p.detach().clone() for n, p in cand.model.named_parameters()}


@pytest.mark.parametrize("name,hyper", [
    ("graddiff", {"batch_size": 4, "grad_accum": 2}),  # LoRA, data cycling over several epochs
    ("npo", {"lora": False, "lr": 1e-4, "batch_size": 3}),  # full weights, precomputed reference data
    ("rmu", {"batch_size": 4}),
])
def test_resume_after_kill_matches_uninterrupted(setup, tmp_path, name, hyper):
    hp = dict(steps=9, checkpoint_every=4, seed=3, **hyper)
    straight = _trained(_run(setup, name, tmp_path / "a", **hp))

    with pytest.raises(Killed):
        _run(setup, name, tmp_path / "b", kill_at=6, **hp)  # last checkpoint: step 4
    ckpt = tmp_path / "b" / CHECKPOINT_DIR / CHECKPOINT_FILE
    assert ckpt.is_file()
    assert [p.name for p in ckpt.parent.iterdir()] == [CHECKPOINT_FILE], "a temporary file was left behind"
    events: list[dict] = []
    resumed = _trained(_run(setup, name, tmp_path / "b", resume=True, events=events, **hp))

    assert [e for e in events if e["phase"] == "resume"] == [{"phase": "resume", "step": 4, "total": 9}]
    assert [e["step"] for e in events if e["phase"] == "train"] == list(range(5, 10))
    assert straight.keys() == resumed.keys()
    for n in straight:
        assert (straight[n] == resumed[n]).all(), f"{name}: {n} differs after resume"


def test_resume_ignores_a_checkpoint_of_other_hyperparameters(setup, tmp_path):
    with pytest.raises(Killed):
        _run(setup, "ga", tmp_path, kill_at=2, steps=4, checkpoint_every=1)
    events: list[dict] = []
    _run(setup, "ga", tmp_path, resume=True, events=events, steps=4, checkpoint_every=1, lr=2e-3)
    resume = [e for e in events if e["phase"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 0 and "starting over" in resume[0]["note"]
    assert [e["step"] for e in events if e["phase"] == "train"] == [1, 2, 3, 4]


def test_progress_events_every_step(setup, tmp_path):
    events: list[dict] = []
    _run(setup, "graddiff", tmp_path, events=events, steps=5, checkpoint_every=100)
    train = [e for e in events if e["phase"] == "train"]
    assert [e["step"] for e in train] == [1, 2, 3, 4, 5]
    assert all(e["total"] == 5 and e["eta"] >= 0 and "forget_nll" in e and "retain" in e for e in train)
    assert train[-1]["eta"] == 0
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def _lr_factors(schedule: str, total: int, warmup: float) -> list[float]:
    """The share of the peak learning rate at each optimizer step under a method's schedule."""
    from engine.compute.training.loop import LoopConfig, lr_curve

    curve = lr_curve(LoopConfig(steps=total, lr=1.0, warmup_steps=int(round(warmup * total)),
                                schedule=SCHEDULE_NAMES[schedule]))
    return [curve(s) for s in range(total)]


def test_lr_schedule():
    total = 100
    f = _lr_factors("cosine", total, 0.1)
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:], strict=False))
    assert f[-1] < 0.01
    lin = _lr_factors("linear", total, 0.0)
    assert lin[0] == 1.0 and lin[50] == pytest.approx(0.5)
    assert _lr_factors("constant", total, 0.2)[99] == 1.0


def test_early_stop_rule_ends_the_run_and_says_so(setup, tmp_path):
    """The stop rule waits for the unit stage's targets: at 1.0 x before, the first check at which no
    greedy forget answer leaks any more ends the run, and the event says why."""
    from engine.compute.generation import greedy
    from engine.compute.verify.attacks import is_leak

    events: list[dict] = []
    cand = _run(setup, "graddiff", tmp_path, events=events, steps=40, lr=2e-3, stop_forget_rouge=1.0, stop_every=1)
    (stop,) = [e for e in events if e["phase"] == "stop"]
    steps = [e["step"] for e in events if e["phase"] == "train"]
    assert 1 < stop["step"] < 40 and steps == list(range(1, stop["step"] + 1))  # not at once: step 1 still leaks
    assert stop["forget_rouge"] <= stop["forget_rouge_before"] and stop["forget_prob"] <= stop["forget_prob_before"]
    assert "nothing leaks" in stop["reason"]
    answers = greedy(cand.model, setup["tokenizer"], [r["question"] for r in setup["forget"]], max_new_tokens=40)
    assert not any(is_leak(a, r["answer"], []) for a, r in zip(answers, setup["forget"], strict=True))
    assert cand.info["train"]["steps"] == stop["step"] and cand.info["train"]["stopped_early"]
