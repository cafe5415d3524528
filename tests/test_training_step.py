"""The cheap training step gives the losses of the plain one: packed rows with the output head only on
answer positions equal a full forward's answer log-probs (values and gradients), forget and retain rows
in one forward equal two, a LoRA copy shares the base's weights and leaves them untouched, a model whose
logits are not its head's output falls back to the full forward, and length-grouped batches cover every
row once per pass with less padding than uniform ones."""

from __future__ import annotations

import pytest
import torch

from engine.compute.methods.unlearn import encode_rows
from engine.compute.training import loop, losses
from engine.compute.training.lora import trainable_copy


@pytest.fixture(scope="module")
def setup(tiny):
    from tests.fixtures_model import loaded_one_person_request

    req = loaded_one_person_request(tiny, retain_rows=40)
    tok = req["tokenizer"]
    req["f"] = encode_rows(tok, req["forget"], 128)
    req["r"] = encode_rows(tok, req["retain"][:7], 128)
    return req


def lora_model(base, seed=1):
    """A LoRA copy whose adapter is not zero (a fresh adapter's B is 0: it would equal the base trivially)."""
    from engine.compute.methods.graddiff import GradDiffHyper

    model = trainable_copy(base, GradDiffHyper(seed=seed, lora_rank=4))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.train()
    return model


def grads_of(model, loss) -> dict:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_scores_equal_a_full_forward(setup):
    model = lora_model(setup["model"])
    batch = setup["f"]
    s_full, n_full = losses.answer_logprob(losses.logits_of(model, batch), batch["labels"])
    g_full = grads_of(model, -s_full.sum())
    s_fast, n_fast = losses.answer_scores(model, batch)
    g_fast = grads_of(model, -s_fast.sum())
    assert model.get_base_model()._expunge_packing is True  # the fast path ran, not its fallback
    assert torch.equal(n_full, n_fast)
    torch.testing.assert_close(s_fast, s_full, rtol=1e-5, atol=1e-4)
    assert g_full.keys() == g_fast.keys() and g_full
    for name in g_full:
        torch.testing.assert_close(g_fast[name], g_full[name], rtol=1e-4, atol=1e-5)


def test_forget_and_retain_in_one_forward_equal_two(setup):
    from engine.compute.methods.graddiff import GradDiffHyper, graddiff_loss

    model = lora_model(setup["model"], seed=2)
    f, r = setup["f"], setup["r"]
    hp = GradDiffHyper(gamma=0.7, alpha=1.3)
    loss, parts = graddiff_loss(hp, setup["model"])(model, f, r)
    g_one = grads_of(model, loss)
    # GradDiff as it was written before: one forward per source, the head on every position.
    plain = -0.7 * losses.nll(model, f) + 1.3 * losses.nll(model, r)
    g_two = grads_of(model, plain)
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(float(parts["retain"])), losses.nll(model, r).detach(), rtol=1e-5, atol=1e-5)
    for name in g_two:
        torch.testing.assert_close(g_one[name], g_two[name], rtol=1e-4, atol=1e-5)


def test_lora_copy_shares_the_base_and_leaves_it_alone(setup):
    base = setup["model"]
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = lora_model(base, seed=3)
    shared = {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}
    assert {p.data_ptr() for p in base.parameters()} == shared, "the copy holds its own base weights"
    assert not any("lora" in n for n, _ in base.named_modules()), "the adapter went into the base's modules"
    loss, _ = losses.answer_scores(model, setup["f"])
    loss.sum().backward()
    assert all(p.grad is None for p in base.parameters())
    for n, p in base.named_parameters():
        assert torch.equal(p, before[n]), n
    # The base is the exact reference: the copy with its adapter switched off computes the base's logits.
    with torch.no_grad(), model.disable_adapter():
        off = losses.logits_of(model, setup["f"])
    assert torch.equal(off, losses.logits_of(base, setup["f"]))


class ScaledLogits(torch.nn.Module):
    """A model whose logits are twice its head's output (as models that scale logits after the head)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits * 2
        return out

    def get_decoder(self):
        return self.inner.get_decoder()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


def test_a_model_the_packed_path_does_not_fit_falls_back(setup):
    model = ScaledLogits(setup["model"])
    batch = setup["f"]
    s, _ = losses.answer_scores(model, batch)
    assert model._expunge_packing is False
    s_full, _ = losses.answer_logprob(losses.logits_of(model, batch), batch["labels"])
    torch.testing.assert_close(s, s_full, rtol=1e-5, atol=1e-4)


def test_length_grouped_batches_cover_every_row_with_less_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 60, (203,), generator=gen)
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    data = {"input_ids": torch.arange(203)[:, None].expand(-1, 64).clone(), "attention_mask": mask}

    def pass_of(source, steps):
        rows, padding = [], 0
        for _ in range(steps):
            b = source.next("cpu")
            rows += b["input_ids"][:, 0].tolist()
            padding += int((b["attention_mask"] == 0).sum())
        return rows, padding

    grouped_rows, grouped_pad = pass_of(loop.LengthGroupedCycler(data, 8, seed=1), 203 // 8)
    plain_rows, plain_pad = pass_of(loop.Cycler(data, 8, seed=1), 203 // 8)
    assert len(set(grouped_rows)) == len(grouped_rows) == 203 // 8 * 8  # no row twice in a pass
    assert grouped_pad < plain_pad / 3, (grouped_pad, plain_pad)
    # Resumable: a saved state replays the same batches.
    a = loop.LengthGroupedCycler(data, 8, seed=4)
    a.next("cpu")
    state = a.state()
    expect = [a.next("cpu")["input_ids"][:, 0].tolist() for _ in range(40)]
    b = loop.LengthGroupedCycler(data, 8, seed=99)
    b.load(state)
    assert [b.next("cpu")["input_ids"][:, 0].tolist() for _ in range(40)] == expect
