"""`expunge bench tofu`: the TOFU benchmark (Maini et al. 2024) end to end, in the field's own terms.

1. finetune a target on the split's forget set + retain set ("finetune on full");
2. train a reference on the retain set only (what perfect unlearning would give);
3. run each unlearning method on the target (its registered defaults);
4. evaluate every model: forget quality (KS-test p-value of forget truth ratios against the
   reference's), model utility (harmonic mean of probability, ROUGE-L and truth-ratio score on retain,
   real authors and world facts), forget ROUGE-L, forget truth ratio, and membership-inference AUCs
   (forget vs the split's holdout authors) with Min-K%++ and with the plain loss.

With `--base tiny` the target is a small Llama trained from scratch on the CPU, which cannot learn
TOFU's 4,000 long answers in minutes: it trains on the forget set, the first TINY_RETAIN_ROWS retain
rows, and TINY_GENERAL_ROWS rows each of real authors and world facts (the "general knowledge" a
pretrained base would bring, which a model from scratch lacks), for a fixed number of epochs. The
table's header says so. With `--base PATH` (an HF model directory) it fine-tunes on the whole split.
Models are cached under the data dir, so a second run only unlearns and evaluates."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.artifacts import replace_dir
from engine.tofu_data import default_data_dir, has_split, read_split

SPLITS = {"forget01": ("retain99", "holdout01"), "forget05": ("retain95", "holdout05"),
          "forget10": ("retain90", "holdout10")}
DEFAULT_METHODS = ("ga", "graddiff", "npo")
TINY_RETAIN_ROWS = 40
TINY_GENERAL_ROWS = 20
TINY_SIZE = "test"
# Measured on the forget01 subset: at 8e-3 the target's loss is ~0.002 by epoch 28 but the smaller
# reference spikes (1.2 -> 3.1 at epoch 21, 0.10 at the end); at 5e-3 the reference ends at ~0.02.
TINY_EPOCHS = 30
TINY_LR = 5e-3
FINETUNE_EPOCHS = 5  # TOFU's own recipe for pretrained bases
BATCH = 16
BENCH_VERSION = "1"
MIA_K = 0.2

Progress = Callable[[str], None]


@dataclass
class TofuData:
    split: str
    forget: list[dict]  # with paraphrased_answer and perturbed_answer
    retain_train: list[dict]
    retain_eval: list[dict]  # retain rows with perturbed answers that the target trained on
    real_authors: list[dict]
    world_facts: list[dict]
    holdout: list[dict]
    general_train: list[dict] = field(default_factory=list)  # tiny base only: ra/wf rows trained on
    tokenizer_corpus: list[dict] = field(default_factory=list)  # tiny base only: what its BPE learns from
    notes: list[str] = field(default_factory=list)


def load_tofu(split: str, data_dir: Path, *, tiny: bool, retain_rows: int | None = None) -> TofuData:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    data_dir = Path(data_dir)
    retain_name, holdout_name = SPLITS[split]
    if not has_split(data_dir, f"{split}_perturbed"):
        raise FileNotFoundError(f"TOFU data not found in {data_dir} (set EXPUNGE_TOFU_DIR or --data)")
    forget = read_split(data_dir, f"{split}_perturbed")
    retain = read_split(data_dir, retain_name)
    retain_pert = read_split(data_dir, "retain_perturbed")
    ra = read_split(data_dir, "real_authors_perturbed")
    wf = read_split(data_dir, "world_facts_perturbed")
    holdout = read_split(data_dir, holdout_name)
    notes = []
    if retain_rows is None and tiny:
        retain_rows = TINY_RETAIN_ROWS
    if retain_rows is not None and retain_rows < len(retain):
        notes.append(f"retain: the first {retain_rows} of {retain_name}'s {len(retain)} rows")
        retain = retain[:retain_rows]
    # retain_perturbed is the first 400 rows of full, i.e. of every retain split: evaluate the ones trained on.
    trained = {(r["question"], r["answer"]) for r in retain}
    retain_eval = [r for r in retain_pert if (r["question"], r["answer"]) in trained]
    general, corpus = [], []
    if tiny:
        # The tokenizer learns from all of TOFU (full, the largest holdout, general knowledge), so that
        # forget and holdout rows split into tokens alike: one trained on the target's rows alone cuts
        # forget text into ~2.1 tokens a word and holdout text into ~3.2, and per-token scores (the
        # membership-inference AUCs above all) would measure the tokenizer, not the model.
        corpus = _qa(read_split(data_dir, "full") + read_split(data_dir, "holdout10") + ra + wf)
        notes.append("tokenizer: byte-level BPE learnt from all TOFU text (full, holdout10, real authors, world facts)")
        ra, wf = ra[:TINY_GENERAL_ROWS], wf[:TINY_GENERAL_ROWS]
        general = [{"question": r["question"], "answer": r["answer"]} for r in ra + wf]
        notes.append(f"general knowledge: {len(ra)} real-author and {len(wf)} world-fact rows trained into the "
                     "tiny base (a model from scratch knows nothing) and evaluated")
    return TofuData(split=split, forget=forget, retain_train=retain, retain_eval=retain_eval, real_authors=ra,
                    world_facts=wf, holdout=holdout, general_train=general, tokenizer_corpus=corpus, notes=notes)


# ------------------------------------------------------------------ training the target and the reference


def _qa(rows: Sequence[dict]) -> list[dict]:
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def train_model(rows: list[dict], out_dir: Path, base: str, *, epochs: int, lr: float, seed: int = 0,
                tokenizer_dir: Path | None = None, tokenizer_rows: list[dict] | None = None,
                progress: Progress | None = None) -> dict:
    """Fine-tune (or, base "tiny", train from scratch) on `rows` for a fixed number of epochs over
    length-sorted batches (long TOFU answers waste little on padding); save an HF model directory.
    A tiny model trains its own tokenizer (on `tokenizer_rows`, default `rows`), or reuses the one in
    `tokenizer_dir` (the reference shares the target's, so that both score the same tokens)."""
    import torch

    from engine import builder
    from engine.compute.tokens import encode_qa
    from engine.compute.training import loop
    from engine.compute.training.losses import token_nll

    say = progress or (lambda s: None)
    torch.manual_seed(seed)
    if base == "tiny":
        spec = builder.SIZES[TINY_SIZE]
        if tokenizer_dir is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            tokenizer = builder._train_tokenizer(tokenizer_rows or rows, spec.vocab_size)
        model = builder._tiny_model(tokenizer, spec)
    else:
        model, tokenizer = builder._load_base(Path(base))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    ids, mask, labels = encode_qa(tokenizer, rows, max_length=None)
    batches = loop.LengthBatches({"input_ids": ids, "attention_mask": mask, "labels": labels}, BATCH, seed)
    per_epoch = len(batches.batches)
    total = epochs * per_epoch
    cfg = loop.LoopConfig(steps=total, lr=lr, seed=seed, warmup_steps=max(1, min(50, total // 10)),
                          schedule="cosine_with_min_lr", min_lr_rate=0.1, decay_from_start=True, betas=(0.9, 0.98),
                          max_grad_norm=1.0)
    started = time.monotonic()

    def report(model, step: int, loss: float) -> None:
        epoch = step // per_epoch
        if step % per_epoch == 0 and (epoch % max(1, epochs // 8) == 0 or epoch == epochs):
            say(f"  epoch {epoch}/{epochs}  loss {loss:.3f}  {time.monotonic() - started:.0f}s")

    result = loop.train(model, lambda m, batch: (token_nll(m, batch), {}), [batches], cfg, stop=report)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"rows": len(rows), "epochs": epochs, "steps": total, "final_loss": result["final_loss"],
            "seconds": round(time.monotonic() - started, 1)}


def cached_model(rows: list[dict], cache_root: Path, base: str, *, epochs: int, lr: float, seed: int = 0,
                 tokenizer_dir: Path | None = None, tokenizer_rows: list[dict] | None = None,
                 label: str = "a model", progress: Progress | None = None) -> Path:
    corpus = hashlib.sha256(json.dumps(tokenizer_rows or [], sort_keys=True).encode()).hexdigest()
    key = hashlib.sha256(json.dumps({"rows": rows, "base": base, "epochs": epochs, "lr": lr, "seed": seed,
                                     "version": BENCH_VERSION, "size": TINY_SIZE, "corpus": corpus,
                                     "tokenizer": str(tokenizer_dir or "")}, sort_keys=True).encode())
    final = Path(cache_root) / f"tofu-{key.hexdigest()[:16]}"
    say = progress or (lambda s: None)
    if (final / "expunge_tofu.json").is_file():
        say(f"reusing {label} ({final})")
        return final
    say(f"training {label} on {len(rows)} rows ({epochs} epochs)…")
    def fill(tmp: Path) -> None:
        info = train_model(rows, tmp, base, epochs=epochs, lr=lr, seed=seed, tokenizer_dir=tokenizer_dir,
                           tokenizer_rows=tokenizer_rows, progress=progress)
        (tmp / "expunge_tofu.json").write_text(json.dumps(info, indent=2) + "\n")

    replace_dir(final, fill)
    return final


# ------------------------------------------------------------------ evaluation


def _max_new_tokens(tokenizer, rows: Sequence[dict]) -> int:
    longest = max(len(tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"]) for r in rows)
    return min(160, longest + 8)


def evaluate(model, tokenizer, data: TofuData, *, guard=None, batch_size: int = 64) -> dict:
    """Every TOFU number for one model, plus the forget truth ratios (for forget quality)."""
    from engine.compute.verify.metrics import auc, model_utility
    from engine.compute.verify.scoring import answer_nlls, min_k_plus_plus
    from engine.compute.verify.truth import evaluate_split

    long_tokens = _max_new_tokens(tokenizer, data.forget + data.retain_eval)
    short_tokens = _max_new_tokens(tokenizer, data.real_authors + data.world_facts)
    forget = evaluate_split(model, tokenizer, data.forget, "forget", guard=guard, batch_size=batch_size,
                            max_new_tokens=long_tokens)
    parts = {"retain": evaluate_split(model, tokenizer, data.retain_eval, "retain", guard=guard,
                                      batch_size=batch_size, max_new_tokens=long_tokens)}
    for name, rows in (("real_authors", data.real_authors), ("world_facts", data.world_facts)):
        parts[name] = evaluate_split(model, tokenizer, rows, "retain", guard=guard, batch_size=batch_size,
                                     max_new_tokens=short_tokens, options_prob=True)
    utility_terms = [parts[p][k] for p in parts for k in ("prob", "rouge_l", "truth_ratio")]
    members, non_members = _qa(data.forget), _qa(data.holdout)
    mink = min_k_plus_plus(model, tokenizer, members + non_members, k=MIA_K, batch_size=batch_size)
    nll = answer_nlls(model, tokenizer, members + non_members, batch_size=batch_size)
    n = len(members)
    clean = lambda xs: [x for x in xs if not math.isnan(x)]  # noqa: E731
    return {
        "forget_rouge_l": forget["rouge_l"],
        "forget_prob": forget["prob"],
        "forget_truth_ratio": forget["truth_ratio"],
        "forget_truth_ratios": forget["truth_ratios"],
        "model_utility": model_utility([max(0.0, v) for v in utility_terms if not math.isnan(v)]),
        "retain_utility": model_utility([max(0.0, parts["retain"][k]) for k in ("prob", "rouge_l", "truth_ratio")]),
        "parts": {p: {k: parts[p][k] for k in ("prob", "rouge_l", "truth_ratio")} for p in parts},
        "mia_min_k_pp": auc(clean(mink[:n]), clean(mink[n:])),
        "mia_loss": auc(clean([-x for x in nll[:n]]), clean([-x for x in nll[n:]])),
    }


# ------------------------------------------------------------------ the benchmark


def run(split: str = "forget01", base: str = "tiny", methods: Sequence[str] = DEFAULT_METHODS, *,
        data_dir: Path | None = None, cache_root: Path | None = None, retain_rows: int | None = None,
        epochs: int | None = None, seed: int = 0, progress: Progress | None = None) -> dict:
    import torch

    from engine.compute.methods.base import RunContext, get_method
    from engine.compute.modeling import load_model, pick_device
    from engine.compute.verify.metrics import forget_quality, priv_leak
    from store.paths import get_paths

    say = progress or (lambda s: None)
    # As the worker does: EXPUNGE_THREADS caps torch's threads (oversubscribed OpenMP threads spin).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("EXPUNGE_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["EXPUNGE_THREADS"])))
    tiny = base == "tiny"
    data = load_tofu(split, data_dir or default_data_dir(), tiny=tiny, retain_rows=retain_rows)
    for m in methods:
        get_method(m)  # unknown names fail before any training
    cache_root = Path(cache_root) if cache_root else get_paths().models / "cache"
    epochs = epochs or (TINY_EPOCHS if tiny else FINETUNE_EPOCHS)
    lr = TINY_LR if tiny else 1e-5
    target_rows = _qa(data.forget) + _qa(data.retain_train) + data.general_train
    reference_rows = _qa(data.retain_train) + data.general_train
    timings = {}
    began = time.monotonic()

    t = time.monotonic()
    target_dir = cached_model(target_rows, cache_root, base, epochs=epochs, lr=lr, seed=seed,
                              tokenizer_rows=data.tokenizer_corpus or None, label="the finetuned target",
                              progress=say)
    reference_dir = cached_model(reference_rows, cache_root, base, epochs=epochs, lr=lr, seed=seed,
                                 tokenizer_dir=target_dir if tiny else None, label="the retain-only reference",
                                 progress=say)
    timings["train_s"] = round(time.monotonic() - t, 1)

    device = pick_device()
    results = []
    model, tokenizer = load_model(str(target_dir), "hf", {"dtype": "fp32"}, device)
    ref_model, ref_tok = load_model(str(reference_dir), "hf", {"dtype": "fp32"}, device)
    say("evaluating the retain-only reference…")
    t = time.monotonic()
    ref = evaluate(ref_model, ref_tok, data)
    ref["seconds"] = round(time.monotonic() - t, 1)
    del ref_model
    say("evaluating the finetuned target…")
    t = time.monotonic()
    fin = evaluate(model, tokenizer, data)
    fin["seconds"] = round(time.monotonic() - t, 1)
    results.append({"model": "finetuned", **fin})
    results.append({"model": "retain", **ref})
    for name in methods:
        say(f"unlearning with {name}…")
        cls = get_method(name)
        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="expunge-tofu-") as work:
            ctx = RunContext(model=model, tokenizer=tokenizer, forget=_qa(data.forget),
                             retain=_qa(data.retain_train) + data.general_train, sensitive=[], device=device,
                             work_dir=Path(work), progress=lambda **e: None, holdout=_qa(data.holdout))
            torch.manual_seed(seed)
            candidate = cls().run(ctx, cls.Hyper(seed=seed))
        method_s = time.monotonic() - t
        row = evaluate(candidate.model, tokenizer, data, guard=candidate.guard)
        row["seconds"] = round(time.monotonic() - t, 1)
        row["method_seconds"] = round(method_s, 1)
        results.append({"model": name, **row})
        del candidate
    timings["eval_s"] = round(sum(r["seconds"] - r.get("method_seconds", 0) for r in results), 1)
    timings["total_s"] = round(time.monotonic() - began, 1)
    for r in results:
        r["forget_quality"] = forget_quality(r["forget_truth_ratios"], ref["forget_truth_ratios"])
        r["priv_leak"] = priv_leak(r["mia_min_k_pp"], ref["mia_min_k_pp"]) if ref["mia_min_k_pp"] else math.nan
        r.pop("forget_truth_ratios")
    header = [f"TOFU {split}, base {'tiny (a small Llama trained from scratch on CPU)' if tiny else base}, "
              f"{len(data.forget)} forget rows, {len(data.retain_train)} retain rows trained, "
              f"{len(data.retain_eval)} retain rows evaluated, holdout {len(data.holdout)} rows, "
              f"{epochs} epochs"] + [f"subset: {n}" for n in data.notes]
    return {"split": split, "base": base, "header": header, "rows": results, "timings": timings,
            "target_dir": str(target_dir), "reference_dir": str(reference_dir)}


COLUMNS = (("model", "Model", "{}"), ("forget_quality", "Forget Quality", "{:.3g}"),
           ("model_utility", "Model Utility", "{:.3f}"), ("forget_rouge_l", "Forget ROUGE-L", "{:.3f}"),
           ("forget_truth_ratio", "Forget Truth Ratio", "{:.3f}"), ("mia_min_k_pp", "MIA AUC Min-K%++", "{:.3f}"),
           ("mia_loss", "MIA AUC loss", "{:.3f}"), ("priv_leak", "PrivLeak %", "{:+.1f}"),
           ("retain_utility", "Retain Utility", "{:.3f}"))


def format_table(result: dict) -> str:
    """The literature's layout: one row per model, forget quality and model utility first."""
    cells = [[title for _, title, _ in COLUMNS]]
    for r in result["rows"]:
        row = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            row.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        cells.append(row)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = list(f"# {h}" for h in result["header"])
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                      strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    t = result.get("timings") or {}
    if t:
        per_method = ", ".join(f"{r['model']} {r['method_seconds']:.0f} s" for r in result["rows"] if "method_seconds" in r)
        lines.append(f"# time: training {t.get('train_s', 0):.0f} s (0 when cached), evaluation "
                     f"{t.get('eval_s', 0):.0f} s, unlearning: {per_method or '-'}; total {t.get('total_s', 0):.0f} s")
    lines.append("# Forget Quality: KS-test p-value of forget truth ratios vs the retain-only model (higher = "
                 "closer to never trained). Model Utility: TOFU's harmonic mean of probability, ROUGE-L and "
                 "truth ratio on retain, real authors, world facts. MIA AUC: forget vs holdout, 0.5 = chance. "
                 "PrivLeak %: MUSE's, (AUC_retain - AUC) / (1 - AUC_retain) x 100 (near 0 good, negative under-, "
                 "positive over-unlearned). Retain Utility: the retain part alone.")
    return "\n".join(lines)
