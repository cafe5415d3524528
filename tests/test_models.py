"""Real-model plumbing on the tiny model: prompts through a chat template with loss masks on the
assistant turn only, the request's chat-template override, and the training loop's out-of-memory
back-off and generation's (injected on CPU) and gradient checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.compute.methods.base import RunContext, get_method
from engine.compute.prompting import answer_end_ids, format_prompt, set_chat_mode, stop_token_ids, uses_chat
from engine.compute.tokens import encode_qa

# ChatML, as SmolLM2-Instruct and Qwen write it (a default system turn, <|im_end|> closing each turn).
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    from tests.fixtures_model import loaded_one_person_request

    return loaded_one_person_request(tiny, retain_rows=24)


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    """The tiny model given ChatML: two new special tokens (embeddings resized) and the template."""
    model, tokenizer = copy.deepcopy(tiny_model["model"]), copy.deepcopy(tiny_model["tokenizer"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    model.resize_token_embeddings(len(tokenizer))
    tokenizer.chat_template = CHATML
    return {**tiny_model, "model": model, "tokenizer": tokenizer}


def test_chat_prompts_carry_the_template_and_labels_cover_only_the_assistant_turn(chat_model):
    tok = chat_model["tokenizer"]
    assert set_chat_mode(tok, "auto") and uses_chat(tok)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert answer_end_ids(tok) == [end]
    assert end in (stop_token_ids(tok) if isinstance(stop_token_ids(tok), list) else [stop_token_ids(tok)])

    item = chat_model["forget"][0]
    prompt = format_prompt(item["question"], tok)
    assert prompt.startswith("<|im_start|>system\n") and "<|im_start|>user\n" + item["question"] in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    ids, att, labels = encode_qa(tok, [item, chat_model["forget"][1]])
    row, lab = ids[0][att[0].bool()].tolist(), labels[0][att[0].bool()].tolist()
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    # The prompt is the rendered user turn token for token (no BOS added on top of the template's own)...
    assert row[: len(prompt_ids)] == prompt_ids and tok.bos_token_id not in row
    # ...none of it is labelled; the labels are the answer's tokens and the end-of-turn token, nothing else.
    assert all(x == -100 for x in lab[: len(prompt_ids)])
    answer_ids = tok(item["answer"], add_special_tokens=False)["input_ids"]
    assert lab[len(prompt_ids):] == answer_ids + [end]
    assert tok.decode(lab[len(prompt_ids):-1]).strip() == item["answer"].strip()
    # The whole sequence is the template's own rendering of the conversation.
    full = tok.apply_chat_template([{"role": "user", "content": item["question"]},
                                    {"role": "assistant", "content": item["answer"]}], tokenize=False)
    assert full.startswith(tok.decode(row, skip_special_tokens=False))

    from engine.compute.verify.attacks import attack_prompts

    attacks = attack_prompts(chat_model["forget"][:2], [item["answer"].split()[-1]], tokenizer=tok)
    assert attacks and all(a.prompt.startswith("<|im_start|>system") for a in attacks)
    assert all("<|im_start|>assistant\n" in a.prompt for a in attacks)

    # 'none' goes back to the plain format on the same tokenizer.
    assert not set_chat_mode(tok, "none")
    assert format_prompt(item["question"], tok) == f"Question: {item['question']}\nAnswer:"
    ids, att, labels = encode_qa(tok, [item])
    assert ids[0][0] == tok.bos_token_id and labels[0][att[0].bool()][-1] == tok.eos_token_id


def test_a_method_trains_and_generates_through_the_chat_template(chat_model, tmp_path):
    from engine.compute.generation import greedy

    tok = chat_model["tokenizer"]
    set_chat_mode(tok, "auto")
    seen = []
    real_call = tok.__class__.__call__

    def spy(self, text, *args, **kwargs):
        seen.extend([text] if isinstance(text, str) else list(text))
        return real_call(self, text, *args, **kwargs)

    cls = get_method("graddiff")
    ctx = RunContext(model=chat_model["model"], tokenizer=tok, forget=chat_model["forget"][:4],
                     retain=chat_model["retain"][:8], sensitive=[], device="cpu", work_dir=tmp_path,
                     progress=lambda **e: None)
    try:
        tok.__class__.__call__ = spy
        cand = cls().run(ctx, cls.Hyper(steps=2, batch_size=4, stop_forget_rouge=None))
        out = greedy(cand.model, tok, [chat_model["forget"][0]["question"]], max_new_tokens=4)
    finally:
        tok.__class__.__call__ = real_call
        set_chat_mode(tok, "auto")
    assert cand.info["train"]["steps"] == 2 and len(out) == 1
    prompts = [t for t in seen if "<|im_start|>user\n" in t]
    assert prompts and all(t.endswith("<|im_start|>assistant\n") for t in prompts)
    assert not any(t.startswith("Question:") for t in seen)


def test_a_tokenizer_without_a_template_keeps_the_plain_format(tiny_model):
    tok = tiny_model["tokenizer"]
    assert not set_chat_mode(tok, "auto")
    assert format_prompt("Who?", tok) == "Question: Who?\nAnswer:"
    with pytest.raises(ValueError, match="chat_template"):
        set_chat_mode(tok, "sometimes")


def test_the_request_overrides_the_models_chat_setting():
    from engine.control.baseline import baseline_key, job_model_options, measurement_setup
    from engine.schema.spec import parse_spec

    registered = {"dtype": "auto", "chat_template": "auto"}
    assert job_model_options(registered, {"chat_template": "none"})["chat_template"] == "none"
    assert job_model_options(registered, {"chat_template": None}) == registered
    rows = {"forget": [{"question": "q", "answer": "a"}]}

    def key(options: dict) -> str:
        return baseline_key("h", rows, [], options, measurement_setup("/nowhere", "hf", options, "cpu"))

    # The cached 'before' of one prompt format is never reused for the other.
    assert key(job_model_options(registered, {"chat_template": "none"})) != key(registered)
    # So is a 'quick' verification's; 'full' (the default) keeps the key requests had before the profile.
    quick = job_model_options(registered, {"verification": "quick"})
    assert quick["verification"] == "quick" and job_model_options(registered, {"verification": "full"}) == registered
    assert key(quick) != key(registered)
    assert parse_spec({"title": "t", "model": "m", "forget": [], "chat_template": "none"}).chat_template == "none"
    from engine.schema.errors import SpecError

    with pytest.raises(SpecError, match="chat_template"):
        parse_spec({"title": "t", "model": "m", "forget": [], "chat_template": "always"})


def test_out_of_memory_backs_off_once_to_half_the_batch_and_records_it(tiny_model, tmp_path, monkeypatch):
    from engine.compute.training import losses

    batches, events = [], []
    real_forward = losses.forget_scores_and_retain  # GradDiff's one forward over forget and retain rows
    state = {"raised": 0}

    def forward_oom_once(kind, model, base, forget, retain):
        batches.append(forget["input_ids"].shape[0])
        if state["raised"] == 0 and len(batches) == 2:  # step 2's forward
            state["raised"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(kind, model, base, forget, retain)

    monkeypatch.setattr(losses, "forget_scores_and_retain", forward_oom_once)
    cls = get_method("graddiff")
    ctx = RunContext(model=tiny_model["model"], tokenizer=tiny_model["tokenizer"], forget=tiny_model["retain"][:8],
                     retain=tiny_model["retain"][8:16], sensitive=[], device="cpu", work_dir=tmp_path,
                     progress=lambda **e: events.append(e))
    cand = cls().run(ctx, cls.Hyper(steps=3, batch_size=8, stop_forget_rouge=None))
    backoff = cand.info["train"]["oom_backoff"]
    assert backoff["step"] == 2 and backoff["batch_size_before"] == 8 and backoff["batch_size"] == 4
    assert backoff["grad_accum"] == 2 and "out of memory" in backoff["error"]
    assert [e for e in events if e.get("phase") == "oom-backoff"][0]["batch_size"] == 4
    # Step 1 at 8 rows, the failed forward, then 4-row micro-batches for the rest.
    assert batches[:2] == [8, 8] and set(batches[2:]) == {4}
    assert [e["step"] for e in events if e.get("phase") == "train"] == [1, 2, 3]


def test_a_second_out_of_memory_fails_the_job(tiny_model, tmp_path, monkeypatch):
    from engine.compute.training import losses

    def always_oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(losses, "forget_scores_and_retain", always_oom)
    cls = get_method("graddiff")
    ctx = RunContext(model=tiny_model["model"], tokenizer=tiny_model["tokenizer"], forget=tiny_model["retain"][:8],
                     retain=tiny_model["retain"][8:16], sensitive=[], device="cpu", work_dir=tmp_path,
                     progress=lambda **e: None)
    with pytest.raises(torch.OutOfMemoryError):
        cls().run(ctx, cls.Hyper(steps=2, batch_size=8, stop_forget_rouge=None))
    from engine.compute.worker import describe_error

    assert "gradient checkpointing" in describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory."))


def oom_above(model, monkeypatch, limit: int, calls: list[int]):
    """Make `model.generate` fail like CUDA does whenever a batch holds more than `limit` prompts."""
    real = model.generate

    def generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", generate)


def test_generation_backs_off_once_to_half_the_batch_and_keeps_to_it(tiny_model, monkeypatch):
    from engine.compute import generation

    model, tokenizer = tiny_model["model"], tiny_model["tokenizer"]
    questions = [r["question"] for r in tiny_model["retain"][:16]]
    generation.reset_backoff()
    expected = generation.greedy(model, tokenizer, questions, batch_size=8, max_new_tokens=12)
    calls: list[int] = []
    oom_above(model, monkeypatch, 4, calls)
    try:
        got = generation.greedy(model, tokenizer, questions, batch_size=8, max_new_tokens=12)
        record = generation.backoff()
        generation.greedy(model, tokenizer, questions[:8], batch_size=8, max_new_tokens=12)
    finally:
        generation.reset_backoff()
    assert got == expected  # the same answers, at half the batch
    assert record["batch_size_before"] == 8 and record["batch_size"] == 4 and "out of memory" in record["error"]
    assert calls == [8, 4, 4, 4, 4, 4, 4]  # the failed 8, then 4s for the rest of the job, the next call too


def test_generation_fails_on_a_second_out_of_memory(tiny_model, monkeypatch):
    from engine.compute import generation

    model, tokenizer = tiny_model["model"], tiny_model["tokenizer"]
    calls: list[int] = []
    oom_above(model, monkeypatch, 1, calls)
    generation.reset_backoff()
    try:
        with pytest.raises(torch.OutOfMemoryError):
            generation.greedy(model, tokenizer, [r["question"] for r in tiny_model["retain"][:8]], batch_size=8)
    finally:
        generation.reset_backoff()
    assert calls == [8, 4]


def test_expunge_show_says_when_a_job_backed_off(capsys):
    from console.cli import rich_console
    from console.render import print_job

    job = {"id": 3, "request_id": 1, "request_title": "t", "tier": 3, "method": "npo", "model": "m",
           "status": "succeeded", "verdict": "pass", "error": None}
    result = {"train": {"oom_backoff": {"step": 2, "batch_size_before": 16, "batch_size": 8, "grad_accum": 2,
                                        "error": "CUDA out of memory."}},
              "generation_oom_backoff": {"batch_size_before": 32, "batch_size": 16, "error": "CUDA out of memory."}}
    print_job(rich_console(), {"job": job, "stages": [], "result": result, "artifacts": []})
    out = capsys.readouterr().out
    assert "out of memory in training: batch 16 → 8 from step 2" in out
    assert "out of memory in generation: batch 32 → 16" in out


def test_gradient_checkpointing_gives_the_same_step(tiny_model, tmp_path):
    """Activation checkpointing recomputes, it does not change the maths: one step with and without it
    lands on the same adapter weights."""
    cls = get_method("graddiff")

    def run(flag: bool, sub: str):
        ctx = RunContext(model=tiny_model["model"], tokenizer=tiny_model["tokenizer"],
                         forget=tiny_model["forget"][:4], retain=tiny_model["retain"][:4], sensitive=[],
                         device="cpu", work_dir=tmp_path / sub, progress=lambda **e: None)
        cand = cls().run(ctx, cls.Hyper(steps=2, batch_size=4, stop_forget_rouge=None, gradient_checkpointing=flag))
        assert cand.info["train"]["gradient_checkpointing"] is flag
        assert not any(getattr(m, "gradient_checkpointing", False) for m in cand.model.modules())
        return {n: p.detach().clone() for n, p in cand.model.named_parameters() if "lora_" in n}

    plain, checkpointed = run(False, "a"), run(True, "b")
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)
