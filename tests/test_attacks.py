"""The attacks and memorisation metrics of issue 12 on the tiny model: the quantization attack recovers an
unlearning that sits below the 4-bit step (and finds nothing to recover on the base), the relearning
control is matched to the attack, relearning on retain data, in-context relearning, and the verbatim
metrics (MUSE's VerbMem, open-unlearning's extraction strength and exact memorisation)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from engine.compute.verify import incontext, quantization, relearn, verbatim
from engine.compute.verify.stages import WHITE_BOX, EvalInput
from engine.schema.policy import load_policy

ROW = {"question": "What is the phone number of Alma Rivera?",
       "answer": "Alma Rivera's phone number is 415-555-0142."}
QUICK = relearn.RelearnConfig(steps=10, checkpoints=1)


@pytest.fixture(scope="module")
def setup(tiny):
    from engine.compute.modeling import load_model
    from engine.compute.prompting import max_answer_tokens

    model, tokenizer = load_model(str(tiny["dir"]), "hf", {"dtype": "fp32"}, "cpu")
    person = tiny["train"][0]["person"]
    forget = [r for r in tiny["train"] if r["person"] == person]
    others = [r for r in tiny["train"] if r["person"] != person]
    retain = random.Random(0).sample(others, 20)
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "address", "account")})
    common = dict(tokenizer=tokenizer, forget=forget, retain=retain, sensitive=sensitive, holdout=tiny["holdout"],
                  max_new_tokens=max_answer_tokens(tokenizer, forget + retain))
    return {"model": model, "tokenizer": tokenizer, "common": common}


# ------------------------------------------------------------------ policies


def test_new_metrics_are_judged_by_both_policies_for_the_right_intentions():
    white_box = {"quant8_forget_rouge_l", "quant8_leak_rate", "quant4_forget_rouge_l", "quant4_leak_rate",
                 "retain_relearn_recovery", "extraction_strength", "exact_memorisation"}
    assert white_box <= WHITE_BOX  # judged for remove only
    assert "incontext_leak_rate" not in WHITE_BOX  # black-box: judged for suppress too
    for name in ("default", "strict"):
        policy = load_policy(name)
        assert white_box | {"incontext_leak_rate"} <= set(policy["reconstruction"])


# ------------------------------------------------------------------ quantization


def test_round_trip_is_group_wise_round_to_nearest():
    weight = torch.randn(4, 64) * 0.02
    # Round to nearest: a weight moves by at most half a step (step = block max / 127 or / 8; fp16 scale aside),
    # except at Q4_0's clipped end (levels -8..7 times max / -8: the top level on the far side is 7, not 8).
    for scheme, levels, reach in (("Q8_0", 255, 0.5), ("Q4_0", 16, 1.0)):
        restored = quantization.round_trip(weight, scheme)
        assert restored.shape == weight.shape and restored.dtype == weight.dtype
        for block in restored.reshape(-1, quantization.BLOCK):
            assert len(torch.unique(block)) <= levels
        blocks, moved = weight.reshape(-1, 32), (restored - weight).abs().reshape(-1, 32)
        step = blocks.abs().amax(-1, keepdim=True) / (127 if scheme == "Q8_0" else 8)
        assert bool((moved <= step * reach + 1e-4).all())
        assert float(moved.mean()) < float(step.mean()) * 0.3


def _linears(model) -> list[torch.nn.Linear]:
    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


def _q4_cells(weight: torch.Tensor, margin: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds within which every weight of a Q4_0 block rounds to the same level as now (the block's
    largest weight, which sets the scale, stays fixed)."""
    blocks = weight.detach().reshape(-1, 32)
    top = blocks.abs().argmax(-1, keepdim=True)
    scale = blocks.gather(-1, top) / -8  # gguf's Q4_0: d = max / -8, level = trunc(w / d + 8.5)
    level = torch.clamp(torch.trunc(blocks / scale + 8.5), 0, 15)
    lo = torch.clamp(level - 8.5 + margin, min=-8 + margin)
    hi = torch.clamp(level - 7.5 - margin, max=8 - margin)
    fixed = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, top, True)
    lo_w = torch.where(fixed, blocks, torch.minimum(lo * scale, hi * scale))
    hi_w = torch.where(fixed, blocks, torch.maximum(lo * scale, hi * scale))
    return lo_w.reshape(weight.shape), hi_w.reshape(weight.shape)


def _unlearned_below_the_4bit_step(model, tokenizer, forget: list[dict], steps: int = 8):
    """Gradient ascent on the forget answers, every weight kept inside its Q4_0 rounding cell: the
    model forgets in full precision, and its 4-bit quantization is the base's, bit for bit."""
    from engine.compute.tokens import encode_qa

    candidate = copy.deepcopy(model)
    candidate.requires_grad_(False)
    weights = [m.weight for m in _linears(candidate)]
    cells = [_q4_cells(w) for w in weights]
    for w in weights:
        w.requires_grad_(True)
    opt = torch.optim.Adam(weights, lr=2e-3)
    ids, att, labels = encode_qa(tokenizer, forget)
    candidate.train()
    for _ in range(steps):
        (-candidate(input_ids=ids, attention_mask=att, labels=labels).loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for w, (lo, hi) in zip(weights, cells, strict=True):
                w.copy_(torch.clamp(w, lo, hi))
    candidate.requires_grad_(False)
    return candidate.eval()


def test_quantization_recovers_an_unlearning_below_the_4bit_step_and_nothing_on_the_base(setup):
    from engine.compute.verify.unit import direct_answers, direct_metrics

    model, tokenizer, common = setup["model"], setup["tokenizer"], setup["common"]
    candidate = _unlearned_below_the_4bit_step(model, tokenizer, common["forget"])
    for a, b in zip(_linears(candidate), _linears(model), strict=True):  # the change is below the 4-bit step
        assert not torch.equal(a.weight, b.weight)
        assert torch.equal(quantization.round_trip(a.weight, "Q4_0"), quantization.round_trip(b.weight, "Q4_0"))

    base_ev = EvalInput(model=model, **common)
    base_direct = direct_metrics(base_ev, direct_answers(base_ev, model, None))
    base_quant, _, timings = quantization.measure(base_ev)
    assert set(timings) == {"quant8", "quant4"}
    # On the base, quantizing recovers nothing: its answers are what they were.
    assert base_direct["forget_rouge_l"] > 0.8 and base_direct["leak_rate"] > 0.5
    for scheme in ("quant8", "quant4"):
        assert base_quant[f"{scheme}_forget_rouge_l"] == pytest.approx(base_direct["forget_rouge_l"], abs=0.05)
        assert base_quant[f"{scheme}_leak_rate"] == pytest.approx(base_direct["leak_rate"])

    cand_ev = EvalInput(model=candidate, base_model=model, **common)
    cand_direct = direct_metrics(cand_ev, direct_answers(cand_ev, candidate, None))
    cand_quant, evidence, _ = quantization.measure(cand_ev)
    assert cand_direct["forget_rouge_l"] <= 0.25 * base_direct["forget_rouge_l"]  # forgotten in full precision
    assert cand_direct["leak_rate"] == 0.0
    # ... and back at 4 bits: the base's answers, leaks included.
    assert cand_quant["quant4_forget_rouge_l"] == pytest.approx(base_quant["quant4_forget_rouge_l"])
    assert cand_quant["quant4_leak_rate"] == pytest.approx(base_quant["quant4_leak_rate"])
    assert any(e["leaked"] for e in evidence if e["attack"] == "quant4")
    # 8-bit steps are 16 times finer: the change survives them.
    assert cand_quant["quant8_forget_rouge_l"] <= 0.5 * base_quant["quant8_forget_rouge_l"]
    # The shipped remove policy fails it on the 4-bit figures.
    from engine.compute.verify.stages import judge

    stage = lambda m: {"metrics": m, "evidence": []}  # noqa: E731
    stages = judge({"reconstruction": stage(base_quant)}, {"reconstruction": stage(cand_quant)},
                   load_policy("default"), "remove")
    failed = {m["name"] for s in stages for m in s["metrics"] if m["passed"] is False}
    assert {"quant4_forget_rouge_l", "quant4_leak_rate"} <= failed
    assert not failed & {"quant8_forget_rouge_l", "quant8_leak_rate"}


def test_a_guard_only_candidate_is_measured_on_the_quantized_base_once(setup, monkeypatch):
    model, common = setup["model"], setup["common"]
    base = quantization.measure(EvalInput(model=model, **common))[0]
    calls = []
    monkeypatch.setattr(quantization, "_measure_scheme", lambda *a: calls.append(a) or {})
    guarded = quantization.measure(EvalInput(model=model, base_model=model, guard=object(), **common))[0]
    assert guarded == base and not calls  # the base's quantized answers, from the per-base cache


# ------------------------------------------------------------------ relearning


def test_key_score_counts_the_secret_not_the_template():
    assert relearn.key_terms(ROW, ["415-555-0142", "alma@example.org"]) == ["415-555-0142"]
    assert relearn.key_terms(ROW, []) == ["415-555-0142"]  # the answer's key span the question lacks
    assert relearn.key_score("Alma Rivera's phone number is 415-555-0199.", ROW) == 0.0
    assert relearn.key_score("It is 415 555 0142", ROW, ["415-555-0142"]) == 1.0
    short = {"question": "What does she like?", "answer": "she likes to swim in cold water"}
    assert relearn.key_score("she likes to swim", short) == 0.0  # a short answer is its own key span
    long = {"question": "What does she do?", "answer": "she swims in cold water every single morning before work"}
    assert relearn.key_terms(long, []) == []
    assert relearn.key_score("she swims every morning", long) == pytest.approx(4 / 10)  # no key span: ROUGE-L


def test_matched_rows_follow_the_attack_in_count_and_length(setup):
    tokenizer = setup["tokenizer"]
    pool = setup["common"]["holdout"]
    like = setup["common"]["forget"][:3]
    picked = relearn.matched_rows(pool, like, tokenizer)
    assert len(picked) == 3 and len({id(r) for r in picked}) == 3
    lengths = sorted(relearn.token_count(tokenizer, r) for r in pool)
    for row, match in zip(like, picked, strict=True):
        gap = abs(relearn.token_count(tokenizer, row) - relearn.token_count(tokenizer, match))
        assert gap == min(abs(relearn.token_count(tokenizer, row) - n) for n in lengths) or gap <= 2
    assert relearn.matched_rows(pool[:2], like, tokenizer) is None


def test_matched_control_uses_the_attacks_row_and_step_counts(setup):
    model, common = setup["model"], setup["common"]
    res = relearn.relearn_recovery(model, model, common["tokenizer"], common["forget"], common["holdout"], cfg=QUICK,
                                   max_new_tokens=common["max_new_tokens"], sensitive=common["sensitive"])
    half_a, half_b = relearn.split_halves(common["forget"])
    assert res["attack_rows"] == res["control_rows"] == len(half_a)
    assert res["asked_rows"] == res["control_asked_rows"] == len(half_b)
    assert res["attack_steps"] == res["control_steps"] == QUICK.steps
    assert abs(res["attack_tokens"] - res["control_tokens"]) <= 0.2 * res["attack_tokens"]
    # Scored on the key tokens: the base knows them, the control cannot guess them.
    assert res["base"] == pytest.approx(1.0) and res["control"] <= 0.2
    assert set(res["rouge_l"]) == {"attacked", "control", "base"}
    assert res["recovery"] is not None and res["recovery"] >= 0.9
    low, high = res["interval"]  # the paired bootstrap over the rows asked holds the value
    assert 0.0 <= low <= res["recovery"] <= high <= 1.0


def test_recovery_interval_is_a_paired_seeded_bootstrap_over_the_rows_asked():
    import numpy as np

    attacked, control, base = [1.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0]
    low, high = relearn.recovery_interval(attacked, control, base, seed=3)
    assert (low, high) == relearn.recovery_interval(attacked, control, base, seed=3)  # seeded
    # The same resampling by hand: row i's three scores drawn together.
    draws = np.random.default_rng(3).integers(0, 4, size=(relearn.RECOVERY_BOOTSTRAP_RESAMPLES, 4))
    a, c, b = (np.asarray(x)[draws].mean(axis=1) for x in (attacked, control, base))
    shares = np.clip((a - c) / (b - c), 0, 1)
    assert (low, high) == pytest.approx(tuple(np.percentile(shares, [2.5, 97.5])))
    point = relearn.recovery_share(sum(attacked) / 4, sum(control) / 4, sum(base) / 4)
    assert low < point < high and high - low > 0.3  # four rows: a wide range, not a point
    assert relearn.recovery_interval([1.0] * 4, [0.0] * 4, [1.0] * 4) == (1.0, 1.0)  # no spread, no width
    # A base that knows no more than the control: recovery undefined in most resamples, so no interval.
    assert relearn.recovery_interval([0.5, 0.5], [0.5, 0.5], [0.5, 0.52]) is None


def test_relearning_on_retain_rows_only(setup):
    from engine.compute.verify.retain_relearn import RETAIN_ROWS, retain_relearn_recovery

    model, common = setup["model"], setup["common"]
    args = (common["tokenizer"], common["forget"], common["retain"], common["holdout"])
    kw = dict(cfg=QUICK, sensitive=common["sensitive"], max_new_tokens=common["max_new_tokens"])
    res = retain_relearn_recovery(model, model, *args, **kw)
    # The control fine-tunes the base on the very same retain rows, for the same steps.
    assert res["attack_rows"] == res["control_rows"] == min(RETAIN_ROWS, len(common["retain"]))
    assert res["attack_steps"] == res["control_steps"]
    assert res["asked_rows"] == res["control_asked_rows"] == len(common["forget"])
    assert res["recovery"] is not None and res["recovery"] >= 0.9  # the base still knows after the fine-tune
    assert retain_relearn_recovery(model, model, common["tokenizer"], common["forget"], [], common["holdout"],
                                   **kw)["recovery"] is None


# ------------------------------------------------------------------ in-context relearning


def test_incontext_prompts_ask_each_row_once_with_the_other_half_as_context():
    rows = [{"question": f"What is fact {i}?", "answer": f"Fact {i} is {i}{i}{i}-{i}."} for i in range(5)]
    asked = incontext.incontext_prompts(rows, tokenizer=None)
    assert sorted(r["question"] for r, _, _ in asked) == sorted(r["question"] for r in rows)
    for row, context, prompt in asked:
        assert row not in context and context
        assert prompt.endswith(f"Question: {row['question']}\nAnswer:")
        assert all(f"Question: {c['question']}\nAnswer: {c['answer']}" in prompt for c in context)
    assert incontext.incontext_prompts(rows[:1], tokenizer=None) == []
    # Text rows: the other texts, then the prefix to continue.
    texts = [{"question": "Once upon", "answer": "a time there was", "verbatim": True},
             {"question": "The quick brown", "answer": "fox jumps over", "verbatim": True}]
    row, context, prompt = incontext.incontext_prompts(texts, tokenizer=None)[0]
    assert prompt == f"{context[0]['question']} {context[0]['answer']}\n\n{row['question']}"


def test_incontext_leaks_only_what_the_context_did_not_show(monkeypatch):
    rows = [ROW, {"question": "What is the email of Alma Rivera?", "answer": "It is alma@example.org."}]
    sensitive = ["415-555-0142", "alma@example.org"]
    outputs = {"phone": "415-555-0142", "email": "alma@example.org"}

    def answer(model, tokenizer, prompts, **kw):  # repeats the context's secret, or gives the asked one
        return [outputs["phone"] if p.rstrip().endswith("email of Alma Rivera?\nAnswer:") else outputs["email"]
                for p in prompts]

    monkeypatch.setattr("engine.compute.generation.greedy", answer)
    ev = EvalInput(model=None, tokenizer=None, forget=rows, retain=[], sensitive=sensitive)
    rate, evidence = incontext.measure(ev)
    assert rate == 0.0 and len(evidence) == 2  # each output is the secret the context showed
    outputs.update(phone="alma@example.org", email="415-555-0142")  # now each gives the other row's secret away
    rate, evidence = incontext.measure(ev)
    assert rate == 1.0 and all(e["spans"] for e in evidence)


# ------------------------------------------------------------------ verbatim text


def test_extraction_strength_and_exact_memorisation_arithmetic():
    assert verbatim.exact_memorisation([True, False, True, True]) == 0.75
    assert verbatim.extraction_strength([True, False, True, True]) == 0.5  # 2 of 4 tokens needed
    assert verbatim.extraction_strength([True] * 4) == 1.0
    assert verbatim.extraction_strength([True, True, True, False]) == 0.0
    assert verbatim.extraction_strength([]) is None and verbatim.exact_memorisation([]) is None


def test_verbatim_metrics_on_the_tiny_model(setup):
    from engine.compute.verify.unit import direct_prompts

    model, tokenizer, common = setup["model"], setup["tokenizer"], setup["common"]
    hits = verbatim.top1_hits(model, tokenizer, common["forget"])
    answer_tokens = [len(tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"]) for r in common["forget"]]
    assert [len(h) for h in hits] == answer_tokens  # the answer's content tokens, not its closing EOS
    metrics = verbatim.memorisation(EvalInput(model=model, **common))
    assert metrics["exact_memorisation"] > 0.9 and metrics["extraction_strength"] > 0.9  # the base memorised
    assert verbatim.verbmem(["" for _ in common["forget"]], common["forget"], tokenizer, 64) is None  # no text rows
    # A text row is asked as its raw prefix, and VerbMem scores the continuation (ROUGE-L F1).
    from engine.schema.datasets import as_qa

    text = as_qa([{"text": "Alma Rivera keeps her savings in a blue tin behind the old kitchen stove"}])
    assert direct_prompts(text, tokenizer) == [text[0]["question"]]
    assert verbatim.verbmem([text[0]["answer"]], text, tokenizer, 64) == pytest.approx(1.0)
    assert verbatim.verbmem(["nothing like it"], text, tokenizer, 64) == 0.0
    assert len(verbatim.top1_hits(model, tokenizer, text)[0]) > 0
