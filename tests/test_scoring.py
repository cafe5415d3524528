"""The torch scorers on a tiny random Llama with a tiny BPE tokenizer built here (no files, no hub)."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine.compute.prompting import format_answer, format_prompt  # noqa: E402
from engine.compute.verify import scoring  # noqa: E402

ITEMS = [
    {"question": "What is the phone number of Alma Rivera?", "answer": "It is 415 555 0142."},
    {"question": "Where does Alma live?", "answer": "In Oakland."},
    {"question": "Who is the account manager for the customer with the long history of late payments?",
     "answer": "The account manager is Bob Stone, who joined the company in 2019 and covers the west region."},
    {"question": "Name?", "answer": "Ann"},
    {"question": "What colour is the sky?", "answer": "The sky is blue on a clear day."},
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A short one.",
    "General text about the weather, the city and the people who live in it, for perplexity.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: with several threads on a busy 2-core machine every op waits on thread
    # hand-offs and the module runs ~30x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [format_prompt(i["question"]) + format_answer(i["answer"]) for i in ITEMS] + TEXTS
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side="left")


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    m = LlamaForCausalLM(config)
    with torch.no_grad():
        # Random init leaves every norm weight at 1; make them not, so that applying the final norm
        # twice (or not at all) in the logit lens would show.
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 2.0)
        m.lm_head.weight.mul_(10)  # init logits are near-uniform; sharpen so that differences show
    return m.eval()


def _manual_nll(model, tokenizer, item):
    p = tokenizer(format_prompt(item["question"]))["input_ids"]
    a = tokenizer(format_answer(item["answer"]), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + a])).logits[0].float()
    lp = torch.log_softmax(logits[len(p) - 1 : -1], dim=-1)
    return -lp.gather(-1, torch.tensor(a).unsqueeze(-1)).mean().item()


def test_answer_nlls_match_a_manual_computation(model, tokenizer):
    got = scoring.answer_nlls(model, tokenizer, ITEMS[:2])
    for item, nll in zip(ITEMS[:2], got, strict=True):
        assert nll == pytest.approx(_manual_nll(model, tokenizer, item), abs=1e-4)


def test_answer_nlls_are_batch_invariant(model, tokenizer):
    batched = scoring.answer_nlls(model, tokenizer, ITEMS, batch_size=3)
    alone = [scoring.answer_nlls(model, tokenizer, [it], batch_size=1)[0] for it in ITEMS]
    assert len(batched) == len(ITEMS)
    assert batched == pytest.approx(alone, abs=1e-4)
    assert all(math.isfinite(x) and x > 0 for x in batched)


def test_token_logprobs_count_answer_tokens_and_eos(model, tokenizer):
    lps = scoring.answer_token_logprobs(model, tokenizer, ITEMS)
    for item, row in zip(ITEMS, lps, strict=True):
        n = len(tokenizer(format_answer(item["answer"]), add_special_tokens=False)["input_ids"]) + 1
        assert len(row) == n
        assert all(v <= 0 for v in row)


def test_text_nll_matches_the_models_own_loss(model, tokenizer):
    got = scoring.text_nll(model, tokenizer, TEXTS, batch_size=2)
    for text, nll in zip(TEXTS, got, strict=True):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        assert nll == pytest.approx(loss, abs=1e-4)


def test_training_mode_is_restored(model, tokenizer):
    model.train()
    try:
        scoring.answer_nlls(model, tokenizer, ITEMS[:1])
        assert model.training
    finally:
        model.eval()


def test_mixed_rows_are_refused(model, tokenizer):
    with pytest.raises(ValueError):
        scoring.min_k_plus_plus(model, tokenizer, [TEXTS[0], ITEMS[0]])


def test_kl_to_itself_is_zero_and_to_a_perturbed_copy_positive(model, tokenizer):
    assert scoring.mean_token_kl(model, model, tokenizer, ITEMS, batch_size=2) == pytest.approx(0.0, abs=1e-6)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.model.layers[-1].mlp.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    kl = scoring.mean_token_kl(other, model, tokenizer, ITEMS, batch_size=2)
    assert kl > 1e-4 and math.isfinite(kl)


def test_min_k_plus_plus_shape_finiteness_and_formula(model, tokenizer):
    scores = scoring.min_k_plus_plus(model, tokenizer, ITEMS, k=0.2, batch_size=2)
    assert len(scores) == len(ITEMS) and all(math.isfinite(s) for s in scores)
    text_scores = scoring.min_k_plus_plus(model, tokenizer, TEXTS, k=0.5)
    assert len(text_scores) == len(TEXTS) and all(math.isfinite(s) for s in text_scores)
    # k=1 is the mean z over all answer tokens: check against the formula written out.
    item = ITEMS[1]
    p = tokenizer(format_prompt(item["question"]))["input_ids"]
    a = tokenizer(format_answer(item["answer"]), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].double(), dim=-1)
    mu = (logp.exp() * logp).sum(-1)
    sigma = ((logp.exp() * logp**2).sum(-1) - mu**2).sqrt()
    z = (logp.gather(-1, torch.tensor(a).unsqueeze(-1)).squeeze(-1) - mu) / sigma
    full = scoring.min_k_plus_plus(model, tokenizer, [item], k=1.0)[0]
    assert full == pytest.approx(z.mean().item(), abs=1e-4)
    # The lowest 20% can only be lower than the mean of all.
    assert scoring.min_k_plus_plus(model, tokenizer, [item], k=0.2)[0] <= full + 1e-6


def _answer_prob_without_eos(model, tokenizer, items):
    per_item = []
    for row in scoring.answer_token_logprobs(model, tokenizer, items):
        answer = row[:-1]  # the lens leaves EOS out
        per_item.append(sum(math.exp(v) for v in answer) / len(answer))
    return sum(per_item) / len(per_item)


def test_logit_lens_rows_and_last_layer_is_the_real_output(model, tokenizer):
    rows = scoring.logit_lens(model, tokenizer, ITEMS, batch_size=2)
    n_layers = model.config.num_hidden_layers
    assert [r["layer"] for r in rows] == list(range(n_layers + 1))  # embeddings + each block
    for r in rows:
        assert 0.0 <= r["prob"] <= 1.0 and 0.0 <= r["top1"] <= 1.0
        assert 1.0 <= r["rank"] <= len(tokenizer)
    assert rows[-1]["prob"] == pytest.approx(_answer_prob_without_eos(model, tokenizer, ITEMS), rel=1e-4)
    # Batch size changes nothing.
    again = scoring.logit_lens(model, tokenizer, ITEMS, batch_size=1)
    for a, b in zip(rows, again, strict=True):
        assert a == pytest.approx(b, rel=1e-4)


def test_logit_lens_decodes_intermediate_layers_with_the_final_norm(model, tokenizer):
    # With the last block turned into an identity, the block before it must decode to exactly the
    # model's output: only true if intermediate states go through the final norm once, then the head.
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.model.layers[-1].self_attn.o_proj.weight.zero_()
        m.model.layers[-1].mlp.down_proj.weight.zero_()
    rows = scoring.logit_lens(m, tokenizer, ITEMS)
    assert rows[-2]["prob"] == pytest.approx(rows[-1]["prob"], rel=1e-4)
    assert rows[-2]["rank"] == pytest.approx(rows[-1]["rank"], rel=1e-6)
    assert rows[-2]["top1"] == rows[-1]["top1"]


def test_final_norm_is_found(model):
    assert scoring.final_norm(model) is model.model.norm
