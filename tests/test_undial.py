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
