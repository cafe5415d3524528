"""Every ladder method with its defaults on the shared tiny model: the forget set is forgotten as the
default policy's unit stage judges it (forget ROUGE-L recall and gold-answer probability at most half of
before, no answer leaks a sensitive string) and the rest is kept (retain ROUGE-L recall at least 0.9 of
before), the base model is never modified, and absurd hyperparameters are refused by name."""

from __future__ import annotations

import hashlib

import pytest

from engine.compute.methods.base import RunContext, get_method, list_methods, validate_hyper
from engine.schema.errors import SpecError

GRADIENT_METHODS = ["ga", "graddiff", "npo", "simnpo", "idkdpo", "undial"]


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def target(tiny):
    """The tiny model, a demo-like request (two people forgotten, everybody else retained) and 'before'."""
    from engine.compute.generation import greedy
    from engine.compute.modeling import load_model
    from engine.compute.verify.metrics import mean_rouge_l_recall

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    # Like the demo request: one person's every fact forgotten, everybody else's retained.
    people = list(dict.fromkeys(r["person"] for r in tiny["train"]))
    forget_people = set(people[:1])
    forget = [r for r in tiny["train"] if r["person"] in forget_people]
    retain = [r for r in tiny["train"] if r["person"] not in forget_people]
    sensitive = sorted({r["value"] for r in forget})

    # Room for the longest answer and a little more: a collapsed model never stops, so this bounds the cost.
    budget = max(len(tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"]) for r in tiny["train"]) + 4

    def score(m, guard=None):
        fa = greedy(m, tokenizer, [r["question"] for r in forget], guard=guard, max_new_tokens=budget, batch_size=64)
        ra = greedy(m, tokenizer, [r["question"] for r in retain], guard=guard, max_new_tokens=budget, batch_size=64)
        return (mean_rouge_l_recall(fa, [r["answer"] for r in forget]),
                mean_rouge_l_recall(ra, [r["answer"] for r in retain]))

    def unit(m) -> dict:
        """The unit stage's other two metrics: leak rate and the gold answers' probability."""
        from engine.compute.verify.metrics import answer_probability
        from engine.compute.verify.scoring import answer_nlls
        from engine.leaks import leak_rate

        fa = greedy(m, tokenizer, [r["question"] for r in forget], max_new_tokens=budget, batch_size=64)
        nlls = answer_nlls(m, tokenizer, forget)
        return {"leak_rate": leak_rate(fa, sensitive),
                "forget_prob": sum(answer_probability(n) for n in nlls) / len(nlls)}

    before = score(model)
    assert before[0] > 0.8 and before[1] > 0.8, f"the tiny model should know its facts first: {before}"
    return {"model": model, "tokenizer": tokenizer, "forget": forget, "retain": retain,
            "sensitive": sensitive, "score": score, "before": before, "digest": weights_digest(model),
            "unit": unit, "unit_before": unit(model)}


def run_method(target, name: str, tmp_path, events=None, **hyper):
    cls = get_method(name)
    ctx = RunContext(model=target["model"], tokenizer=target["tokenizer"], forget=target["forget"],
                     retain=target["retain"], sensitive=target["sensitive"], device="cpu", work_dir=tmp_path,
                     progress=(lambda **e: events.append(e)) if events is not None else (lambda **e: None))
    return cls().run(ctx, cls.Hyper(**hyper)), ctx


@pytest.mark.parametrize("name", GRADIENT_METHODS + ["rmu"])
def test_method_defaults_forget_and_retain(target, name, tmp_path):
    events: list[dict] = []
    cand, _ = run_method(target, name, tmp_path, events)
    forget, retain = target["score"](cand.model)
    f0, r0 = target["before"]
    unit, u0 = target["unit"](cand.model), target["unit_before"]
    print(f"{name}: forget {f0:.3f} -> {forget:.3f}, retain {r0:.3f} -> {retain:.3f}, "
          f"leak {u0['leak_rate']:.2f} -> {unit['leak_rate']:.2f}, prob {u0['forget_prob']:.3f} -> {unit['forget_prob']:.3f}")
    # The unit stage as the default policy judges it: ROUGE-L and probability halved, nothing leaks.
    assert forget <= 0.5 * f0, f"{name} did not forget: {f0:.3f} -> {forget:.3f}"
    assert unit["leak_rate"] <= 0.05, f"{name} still leaks: {unit}"
    assert unit["forget_prob"] <= 0.5 * u0["forget_prob"], f"{name}: forget probability {u0} -> {unit}"
    # GA has no retain term and is not selective on this model (see engine/methods/ga.py): it is held
    # to a floor that catches a total collapse, every other method to the ladder's 0.9.
    keep = 0.6 if name == "ga" else 0.9
    assert retain >= keep * r0, f"{name} damaged the retain set: {r0:.3f} -> {retain:.3f}"
    assert cand.kind == {"rmu": "delta", "ga": "full"}.get(name, "adapter")
    train = [e for e in events if e["phase"] == "train"]
    stops = [e for e in events if e["phase"] == "stop"]
    assert [e["step"] for e in train] == list(range(1, len(train) + 1))
    # Every step is reported, up to the last one or the early stop (GradDiff's default rule).
    assert train[-1]["step"] == train[-1]["total"] or (stops and stops[0]["step"] == train[-1]["step"])
    assert all({"loss", "eta", "step", "total"} <= set(e) for e in train)
    assert weights_digest(target["model"]) == target["digest"], "the base model was modified"


@pytest.mark.slow
def test_graddiff_full_weights_and_kl(target, tmp_path):
    cand, _ = run_method(target, "graddiff", tmp_path, lora=False, retain_loss="kl", lr=5e-5, steps=150)
    forget, retain = target["score"](cand.model)
    f0, r0 = target["before"]
    print(f"graddiff full+kl: forget {f0:.3f} -> {forget:.3f}, retain {r0:.3f} -> {retain:.3f}")
    assert cand.kind == "full"
    assert forget <= 0.5 * f0 and retain >= 0.9 * r0
    assert weights_digest(target["model"]) == target["digest"]


def test_rmu_edits_only_down_projections(target, tmp_path):
    from engine.compute.candidate import delta_tensors

    cand, ctx = run_method(target, "rmu", tmp_path, steps=3)
    names = sorted(cand.files)
    assert names and all("down_proj" in n for n in names)
    assert ctx.extra["rmu_layer"] == cand.info["layer"] and ctx.extra["locate"]
    deltas = delta_tensors(cand.model, cand.files)
    assert any(float(d.abs().max()) > 0 for d in deltas.values())
    base = dict(target["model"].named_parameters())
    for n, p in cand.model.named_parameters():
        if n not in cand.files:
            assert p.data_ptr() != base[n].data_ptr() and bool((p == base[n]).all()), n


def test_guard_method_keeps_weights(target, tmp_path):
    cand, _ = run_method(target, "guard", tmp_path)
    assert cand.kind == "guard" and cand.model is target["model"] and cand.guard is not None
    forget, retain = target["score"](cand.model, guard=cand.guard)
    assert forget < target["before"][0] and retain >= 0.9 * target["before"][1]


def test_registry_lists_the_ladder():
    by_name = {m["name"]: m for m in list_methods()}
    assert {"guard", "rmu", *GRADIENT_METHODS} <= set(by_name)
    assert by_name["guard"]["tier"] == 1 and by_name["rmu"]["tier"] == 2
    assert all(by_name[n]["tier"] == 3 for n in GRADIENT_METHODS)
    assert by_name["graddiff"]["defaults"]["lora"] is True


@pytest.mark.parametrize("name,values,field", [
    ("graddiff", {"lr": 0}, "lr"),
    ("graddiff", {"lr": 10}, "lr"),
    ("npo", {"steps": 10**7}, "steps"),
    ("npo", {"beta": 0}, "beta"),
    ("simnpo", {"beta": -1}, "beta"),
    ("idkdpo", {"beta": 0.0}, "beta"),
    ("ga", {"lora_rank": 0}, "lora_rank"),
    ("graddiff", {"retain_loss": "mse"}, "retain_loss"),
    ("graddiff", {"alpha": -1}, "alpha"),
    ("rmu", {"steer": 0}, "steer"),
    ("rmu", {"layer": -1}, "layer"),
    ("ga", {"batch_size": 0}, "batch_size"),
    ("guard", {"no_such_knob": 1}, "no_such_knob"),
])
def test_absurd_hyperparameters_name_the_field(name, values, field):
    with pytest.raises(SpecError, match=field):
        validate_hyper(name, values)


def test_defaults_validate():
    for m in list_methods():
        assert validate_hyper(m["name"], {}) == m["defaults"]
