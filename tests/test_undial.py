"""UNDIAL's loss is the paper's (and open-unlearning's) self-distillation target on the answer tokens:
cross-entropy from the model to softmax(base logits - beta on the answer token), computed densely here
as a check of the packed form; one step lowers the forget answers' probability. (That its defaults
forget the forget set and keep the retain set on the tiny model is tests/test_methods.py.)"""

from __future__ import annotations

import torch

from engine.compute.methods.undial import UndialHyper, undial_loss
from engine.compute.methods.unlearn import encode_rows
from engine.compute.training import losses
from engine.compute.training.lora import trainable_copy


def test_undial_loss_is_the_adjusted_logit_distillation(tiny):
    from tests.fixtures_model import loaded_one_person_request

    req = loaded_one_person_request(tiny, retain_rows=6)
    base, tok = req["model"], req["tokenizer"]
    f, r = encode_rows(tok, req["forget"], 128), encode_rows(tok, req["retain"], 128)
    hp = UndialHyper(beta=3.0, alpha=0.5, lora_rank=4)
    model = trainable_copy(base, hp)
    model.train()
    loss, parts = undial_loss(hp, base)(model, f, r)

    # Dense, as open-unlearning writes it, restricted to the labelled (answer) positions.
    with torch.no_grad():
        teacher = base(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits[:, :-1]
    student = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits[:, :-1]
    gold = f["labels"][:, 1:]
    onehot = torch.nn.functional.one_hot(gold.clamp(min=0), teacher.shape[-1]).float()
    soft = torch.softmax(teacher - 3.0 * onehot, -1)
    keep = gold != -100
    dense = -(soft[keep] * torch.log_softmax(student[keep], -1)).sum(-1).mean()
    torch.testing.assert_close(parts["undial"], dense.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, dense + 0.5 * losses.nll(model, r), rtol=1e-5, atol=1e-5)

    # One step down the loss makes the forget answers less likely.
    before, _ = losses.answer_scores(model, f)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after, _ = losses.answer_scores(model, f)
    assert float(after.sum()) < float(before.sum())


def test_a_leaking_answer_becomes_a_forget_row_where_it_names_the_string(tiny):
    """Leak retargeting (engine.compute.methods.retarget): the base still says every forget fact, so every forget
    question gives one row, its lead-in the greedy answer up to the leak, its answer the leaked span; a string the
    model never says gives none."""
    from engine.compute.generation import greedy
    from engine.compute.methods.retarget import leak_rows
    from tests.fixtures_model import loaded_one_person_request

    req = loaded_one_person_request(tiny, retain_rows=2)
    base, tok, forget = req["model"], req["tokenizer"], req["forget"]
    sensitive = sorted({r["value"] for r in forget})
    said = greedy(base, tok, [r["question"] for r in forget], max_new_tokens=24)
    rows = leak_rows(base, tok, forget, sensitive, 24)
    assert [r["question"] for r in rows] == [r["question"] for r in forget]
    for row, answer in zip(rows, said, strict=True):
        # The leak check's span: a sensitive string, or its key part (the digits of an account number).
        assert any(row["answer"].lower() in s.lower() for s in sensitive)
        lead = row.get("lead_in", "")
        assert answer.startswith(lead) and row["answer"].lower() in answer[len(lead):].lower()
    assert leak_rows(base, tok, forget, ["a string nobody says"], 24) == []


def test_the_loop_takes_rows_added_mid_run():
    """Cycler.extend: the new rows are padded to the wider width (labels with -100), the batch grows back to
    what was asked, and the next batch draws from every row."""
    from engine.compute.training import loop

    def rows(n: int, width: int, first: int) -> dict:
        ids = torch.arange(first, first + n).repeat_interleave(width).view(n, width)
        return {"input_ids": ids, "attention_mask": torch.ones(n, width, dtype=torch.long), "labels": ids.clone()}

    cycler = loop.Cycler(rows(2, 3, 0), batch_size=5, seed=0)
    assert cycler.batch == 2
    cycler.next("cpu")
    cycler.extend(rows(3, 5, 10))
    assert cycler.n == 5 and cycler.batch == 5 and cycler.data["input_ids"].shape == (5, 5)
    assert (cycler.data["labels"][:2, 3:] == -100).all() and (cycler.data["attention_mask"][:2, 3:] == 0).all()
    assert sorted(cycler.next("cpu")["input_ids"][:, 0].tolist()) == [0, 1, 10, 11, 12]  # one batch, every row


def test_undial_retargets_the_answers_that_still_leak(tiny, tmp_path):
    """In a run: the forget answers that still name a sensitive string at the checks join the batches, each
    (question, lead-in, string) once (the run's info counts them: at least one per forget row here, every answer
    still leaking); without sensitive strings nothing is retargeted."""
    from engine.compute.methods.base import RunContext
    from engine.compute.methods.retarget import MAX_ROWS
    from engine.compute.methods.undial import Undial
    from tests.fixtures_model import loaded_one_person_request

    req = loaded_one_person_request(tiny, retain_rows=6)
    sensitive = sorted({r["value"] for r in req["forget"]})

    def run(sens: list[str]) -> dict:
        ctx = RunContext(model=req["model"], tokenizer=req["tokenizer"], forget=req["forget"], retain=req["retain"],
                         sensitive=sens, device="cpu", work_dir=tmp_path / str(len(sens)), progress=lambda **e: None)
        # A learning rate too small to forget in 4 steps: the answers still leak at the checks.
        return Undial().run(ctx, UndialHyper(steps=4, stop_every=2, lr=1e-6)).info["train"]

    assert len(req["forget"]) <= run(sensitive)["retargeted_rows"] <= MAX_ROWS
    assert "retargeted_rows" not in run([])
