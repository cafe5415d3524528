"""Build a target model that has memorised question/answer rows (TOFU's "finetune on full").

With base "tiny" it trains a byte-level BPE tokenizer and a small Llama from scratch; with a path to
an HF model directory it fine-tunes that model with the same loop. Either way the result is an
ordinary HF directory that plain `AutoModelForCausalLM` / `AutoTokenizer` load.

Sizes: "demo" (0.56M parameters, the 540 demo facts, ~2 CPU-minutes) and "test" (0.37M, 160 facts,
~30 CPU-seconds). `cached_target` builds each distinct (rows, size, seed, base) once per cache."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.artifacts import replace_dir
from engine.compute.prompting import format_answer, format_prompt
from engine.control.baseline import GENERAL_TEXT
from engine.schema.datasets import rows_sha256

# Part of every cache key: bump it whenever a change here changes what a build produces.
BUILDER_VERSION = "3"
META_FILE = "expunge_target.json"


@dataclass(frozen=True)
class SizeSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    lr: float
    batch_size: int
    warmup_steps: int
    max_steps: int
    eval_every: int
    target_recall: float


# Tuned on a 2-core CPU. The vocabulary is small on purpose (a big one makes memorisation several times
# slower, DESIGN.md section 5) and digits are one token each. Two layers beat four here: 4 x 128 with a
# 512-wide MLP needed ~1,300 steps at 0.33 CPU-s each for the demo facts; 2 x 128 with 384 reaches 97%
# in ~800 steps at 0.15 CPU-s. max_steps is a realistic cap, so the cosine decay (which is what settles
# the last few numbers) happens inside the run rather than after it.
SIZES = {
    "demo": SizeSpec(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=384,
                     lr=3e-3, batch_size=32, warmup_steps=100, max_steps=1500, eval_every=100,
                     target_recall=0.97),
    "test": SizeSpec(vocab_size=768, hidden_size=96, num_layers=2, num_heads=4, intermediate_size=384,
                     lr=3e-3, batch_size=32, warmup_steps=50, max_steps=600, eval_every=50,
                     target_recall=0.95),
}
# Fine-tuning an existing model: a pretrained network needs a far smaller step than one from scratch.
FINETUNE_LR = 1e-4

Progress = Callable[[dict], None]


def build_target(
    rows: list[dict],
    out_dir: Path,
    base: str = "tiny",
    size: str = "demo",
    seed: int = 0,
    progress: Progress | None = None,
    num_threads: int | None = None,
    device: str | None = None,
    max_steps: int | None = None,
) -> dict:
    """Train a model on `rows` until it recalls them greedily (or the step cap), save it to `out_dir`
    and return the metadata also written to `out_dir/expunge_target.json`.

    `progress` receives dicts with a "phase" (tokenizer, train, eval, save, done) and, while
    training, step/total/loss or recall. The tiny model trains on the CPU unless `device` says
    otherwise, so a cached build is the same on every machine; a base model uses CUDA if present."""
    import torch

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    if not rows or any(not r.get("question") or not r.get("answer") for r in rows):
        raise ValueError("build_target needs non-empty question/answer rows")
    spec = SIZES[size]
    if max_steps is not None:
        spec = replace(spec, max_steps=max_steps, warmup_steps=min(spec.warmup_steps, max(1, max_steps // 5)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda event: None)
    started, cpu_started = time.monotonic(), time.process_time()

    old_threads = torch.get_num_threads()
    threads = num_threads or _default_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        if base == "tiny":
            emit({"phase": "tokenizer"})
            tokenizer = _train_tokenizer(rows, spec.vocab_size)
            model = _tiny_model(tokenizer, spec)
            lr = spec.lr
            device = device or "cpu"
        else:
            model, tokenizer = _load_base(Path(base))
            lr = FINETUNE_LR
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        # A model from scratch knows no language but its facts: it learns the control stage's general text
        # beside them, so the perplexity there measures what unlearning does to the rest of what it knows
        # (a never-seen text's perplexity, ~10^4 and worse than uniform over its vocabulary, measured noise).
        # A pretrained base already has its language.
        result = _train(model, tokenizer, rows, spec, lr, seed, emit, general=GENERAL_TEXT if base == "tiny" else None)
        emit({"phase": "save"})
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(old_threads)

    meta = {
        "rows_sha256": rows_sha256(rows),
        "n_rows": len(rows),
        "base": base,
        "size": size,
        "seed": seed,
        "builder_version": BUILDER_VERSION,
        "parameters": sum(p.numel() for p in model.parameters()),
        "spec": asdict(spec),
        **result,
        "seconds": round(time.monotonic() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "threads": threads,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    emit({"phase": "done", **meta})
    return meta


def cached_target(
    rows: list[dict],
    cache_root: Path,
    size: str = "demo",
    seed: int = 0,
    base: str = "tiny",
    progress: Progress | None = None,
) -> Path:
    """The model `build_target` would produce for these arguments, built at most once per cache.

    Concurrent callers (pytest-xdist workers, two consoles) serialise on a lock file; the winner builds
    into a temporary directory that is renamed into place, so nobody ever sees a half-written model."""
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        json.dumps({"rows": rows_sha256(rows), "size": size, "seed": seed, "base": base,
                    "version": BUILDER_VERSION}, sort_keys=True).encode()
    ).hexdigest()
    final = cache_root / f"{size}-{key[:16]}"
    if (final / META_FILE).is_file():
        return final
    with open(cache_root / f".{final.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (final / META_FILE).is_file():
                return final
            # Only the lock holder builds, so any temporary directory left now is from a killed build.
            for stale in cache_root.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            # A leftover `final` without metadata is never a finished build: replace_dir replaces it.
            replace_dir(final, lambda tmp: build_target(rows, tmp, base=base, size=size, seed=seed,
                                                        progress=progress))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _default_threads() -> int:
    """Threads for the idle cores only. OpenMP threads that wait for a busy core spin: on a loaded
    2-core machine two threads ran one step 9x slower than one thread did."""
    if os.environ.get("EXPUNGE_THREADS"):  # the same cap the workers honour
        return max(1, int(os.environ["EXPUNGE_THREADS"]))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    # A model this small gains little beyond a few threads.
    return max(1, min(4, round(cpus - os.getloadavg()[0])))


def _train_tokenizer(rows: list[dict], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # One token per digit: numbers are the hard part to memorise, and a digit vocabulary of ten lets
    # the model share what it learns about each position instead of learning arbitrary digit chunks.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2, show_progress=False,
    )
    # General English goes in too, so perplexity text and paraphrase attacks don't fall apart into bytes.
    corpus = [format_prompt(r["question"]) + format_answer(r["answer"]) for r in rows] + list(GENERAL_TEXT)
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id("<s>")
    # Like Llama's tokenizers: every encoded text starts with BOS.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left",
        model_max_length=512,
    )


def _tiny_model(tokenizer, spec: SizeSpec):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    _set_generation_defaults(model, tokenizer)
    return model


def _load_base(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise ValueError(f"base must be 'tiny' or an HF model directory; {path} has no config.json")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    model.float()
    _set_generation_defaults(model, tokenizer)
    return model, tokenizer


def _set_generation_defaults(model, tokenizer) -> None:
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.bos_token_id
    gc.do_sample = False
    for name in ("temperature", "top_p", "top_k"):
        if hasattr(gc, name):
            setattr(gc, name, None)


def _teacher_forced_exact(model, data: dict, batch_size: int = 256) -> float:
    """Share of rows whose every answer token (and EOS) is the argmax given the gold prefix. That is
    exactly the condition for greedy decoding to reproduce the answer, at the cost of one forward pass."""
    from engine.compute.modeling import evaluating

    ids, mask, labels = data["input_ids"], data["attention_mask"], data["labels"]
    device = next(model.parameters()).device
    hits = 0
    with evaluating(model, inference=True):
        for s in range(0, ids.shape[0], batch_size):
            m = mask[s : s + batch_size]
            w = int(m.sum(1).max())
            x, m, y = (t[s : s + batch_size, :w].to(device) for t in (ids, mask, labels))
            pred = model(input_ids=x, attention_mask=m).logits[:, :-1].argmax(-1)
            gold = y[:, 1:]
            ok = (pred == gold) | (gold == -100)
            hits += int(ok.all(dim=1).sum())
    return hits / ids.shape[0]


def greedy_exact_match(model, tokenizer, rows: list[dict]) -> float:
    """Share of rows whose greedy answer equals the gold answer exactly (after stripping)."""
    from engine.compute.generation import greedy

    longest = max(len(tokenizer(format_answer(r["answer"]), add_special_tokens=False)["input_ids"]) for r in rows)
    got = greedy(model, tokenizer, [r["question"] for r in rows], max_new_tokens=longest + 4, batch_size=64)
    return sum(g == r["answer"].strip() for g, r in zip(got, rows, strict=True)) / len(rows)


class _Memorised:
    """The build's stop rule: ends the run once the model recalls spec.target_recall of its rows
    (teacher-forced), and keeps the loss EMA the progress events report."""

    def __init__(self, data: dict, spec: SizeSpec, emit: Progress) -> None:
        self.data, self.spec, self.emit = data, spec, emit
        self.ema: float | None = None
        self.recall = 0.0

    def __call__(self, model, step: int, loss: float) -> dict | None:
        spec = self.spec
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        if step % 25 == 0:
            self.emit({"phase": "train", "step": step, "total": spec.max_steps, "loss": round(self.ema, 4)})
        # Checking recall is only worth a forward pass once the loss says most answers are nearly right.
        if step % spec.eval_every or self.ema >= 0.3:
            return None
        self.recall = _teacher_forced_exact(model, self.data)
        self.emit({"phase": "eval", "step": step, "total": spec.max_steps, "recall": round(self.recall, 4)})
        return {"recall": self.recall} if self.recall >= spec.target_recall else None


def _train(model, tokenizer, rows, spec: SizeSpec, lr: float, seed: int, emit: Progress,
           general: list[str] | None = None) -> dict:
    from engine.compute.tokens import encode_qa, encode_texts
    from engine.compute.training import loop
    from engine.compute.training.losses import token_nll

    ids, mask, labels = encode_qa(tokenizer, rows, max_length=None)
    data = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    sources = [loop.Cycler(data, spec.batch_size, seed)]
    if general:
        ids, mask, labels = encode_texts(tokenizer, general)
        sources.append(loop.Cycler({"input_ids": ids, "attention_mask": mask, "labels": labels}, spec.batch_size,
                                   seed + 1))

    def loss_fn(m, facts, text=None):
        if text is None:
            return token_nll(m, facts), {}
        text_nll = token_nll(m, text)
        return token_nll(m, facts) + text_nll, {"general_nll": text_nll.detach()}

    # Linear warmup, then cosine down to a tenth: early stopping usually ends training part-way.
    # Clipping is required: without it the loss sits at chance for ~1,000 steps before it collapses.
    cfg = loop.LoopConfig(steps=spec.max_steps, lr=lr, seed=seed, warmup_steps=spec.warmup_steps,
                          schedule="cosine_with_min_lr", min_lr_rate=0.1, betas=(0.9, 0.98), max_grad_norm=1.0)
    memorised = _Memorised(data, spec, emit)
    result = loop.train(model, loss_fn, sources, cfg, stop=memorised)
    recall = greedy_exact_match(model, tokenizer, rows)
    return {
        "steps": result["steps"],
        "final_loss": round(memorised.ema if memorised.ema is not None else float("nan"), 5),
        "teacher_forced_exact_match": round(memorised.recall, 4),
        "greedy_exact_match": round(recall, 4),
        "reached_target": recall >= spec.target_recall,
    }
