"""Benchmark every ladder method on one model: optimizer steps per second, peak memory, wall time, and
forget / retain ROUGE-L recall after; graddiff both as a LoRA adapter and on full weights.

    .venv/bin/python bench/methods.py                 # the demo model if built, else the test-size one
    .venv/bin/python bench/methods.py --model DIR     # any HF model directory with a {"question","answer"} set
    .venv/bin/python bench/methods.py --forget f.jsonl --retain r.jsonl --methods graddiff,rmu
    .venv/bin/python bench/methods.py --compare-trainer [--steps 8 --rounds 2 --out bench/results/trainer.md]
                                                      # expunge's loop vs a transformers.Trainer GradDiff
                                                      # on SmolLM2 (bench/trainer_compare.py)

Peak memory is the process's resident-set peak (getrusage) on CPU, so later rows can only show the same
or more than earlier ones; on a GPU it is torch.cuda.max_memory_allocated, reset per method."""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_RUNS = ["guard", "rmu", "ga", "graddiff", "graddiff:full", "npo", "simnpo", "idkdpo", "undial"]


def find_model() -> tuple[Path, list[dict], str]:
    """The demo model (built by `expunge demo`) if it exists, else the tests' tiny model (built if needed)."""
    from engine.builder import META_FILE
    from engine.demo_data import demo_split
    from store.paths import get_paths

    cache = get_paths().models / "cache"
    for d in sorted(cache.glob("demo-*")) if cache.is_dir() else []:
        if (d / META_FILE).is_file():
            return d, demo_split()["train"], "demo"
    from tests.fixtures_model import tiny_model_dir, tiny_split

    return tiny_model_dir(), tiny_split()["train"], "test-size tiny"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="HF model directory (default: demo, else the test-size model)")
    ap.add_argument("--forget", type=Path, help="forget rows (default: the first person of the model's set)")
    ap.add_argument("--retain", type=Path, help="retain rows (default: up to 100 of the other people)")
    ap.add_argument("--methods", default=",".join(DEFAULT_RUNS),
                    help="comma-separated; name:full runs a gradient method on full weights")
    ap.add_argument("--steps", type=int, help="override every method's default step count")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    ap.add_argument("--compare-trainer", action="store_true",
                    help="instead: expunge's loop against a transformers.Trainer GradDiff on SmolLM2, side by side "
                         "(options: bench/trainer_compare.py --help)")
    return ap, ap.parse_args(argv)


def choose_rows(ap, args) -> tuple[Path, str, list[dict], list[dict]]:
    """(model folder, its label, forget rows, retain rows) from the arguments or the cached demo/test model."""
    if args.model:
        model_dir, rows, label = args.model, [], str(args.model)
    else:
        model_dir, rows, label = find_model()
    if args.forget:
        forget = read_rows(args.forget)
    elif rows:
        first = rows[0]["person"]
        forget = [r for r in rows if r["person"] == first]
    else:
        ap.error("--forget is required with --model")
    if args.retain:
        retain = read_rows(args.retain)
    else:
        others = [r for r in rows if r not in forget]
        retain = random.Random(0).sample(others, min(100, len(others)))
    if not retain:
        ap.error("--retain is required with --model")
    return model_dir, label, forget, retain


def run_one(run: str, args, model, tokenizer, forget, retain, sensitive, device, rouge) -> dict:
    """Train one method (name, or name:full for full weights) from the base and measure it."""
    import torch

    from engine.compute.methods.base import RunContext, get_method

    name, _, variant = run.partition(":")
    cls = get_method(name)
    hyper = {}
    if variant == "full":
        hyper.update(lora=False, lr=3e-4)
    if args.steps and "steps" in cls.Hyper.model_fields:
        hyper["steps"] = args.steps
    hp = cls.Hyper(**hyper)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as work:
        ctx = RunContext(model=model, tokenizer=tokenizer, forget=forget, retain=retain, sensitive=sensitive,
                         device=device, work_dir=Path(work), progress=lambda **e: None)
        t = time.perf_counter()
        cand = cls().run(ctx, hp)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    train = (cand.info or {}).get("train", {})
    train_s, steps = train.get("seconds"), train.get("steps", 0)  # steps actually run (early stop)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mb())
    f1, r1 = rouge(cand.model, cand.guard)
    return {"method": run, "tier": cls.tier, "kind": cand.kind, "steps": steps,
            "steps_per_s": round(steps / train_s, 2) if steps and train_s else None,
            "wall_s": round(wall, 2), "peak_mb": round(peak, 1),
            "forget_rouge": round(f1, 3), "retain_rouge": round(r1, 3)}


def print_table(label: str, device: str, forget: list, retain: list, f0: float, r0: float,
                results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"expunge methods on {label} ({device}; {len(forget)} forget / {len(retain)} retain rows; "
                        f"before: forget ROUGE-L {f0:.3f}, retain {r0:.3f})")
    for col in ("method", "tier", "kind", "steps", "steps/s", "wall s", "peak MB", "forget ROUGE-L",
                "retain ROUGE-L"):
        table.add_column(col, justify="left" if col in ("method", "kind") else "right")
    for r in results:
        table.add_row(r["method"], str(r["tier"]), r["kind"], str(r["steps"] or "-"),
                      "-" if r["steps_per_s"] is None else f"{r['steps_per_s']:.1f}", f"{r['wall_s']:.2f}",
                      f"{r['peak_mb']:.0f}", f"{r['forget_rouge']:.3f}", f"{r['retain_rouge']:.3f}")
    Console(width=max(130, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--compare-trainer" in argv:  # its own arguments: see bench/trainer_compare.py
        from bench.trainer_compare import main as compare_trainer

        return compare_trainer([a for a in argv if a != "--compare-trainer"])
    ap, args = parse_args(argv)

    import torch

    from engine.compute.generation import greedy
    from engine.compute.modeling import load_model, pick_device
    from engine.compute.verify.metrics import mean_rouge_l_recall

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir, label, forget, retain = choose_rows(ap, args)
    device = pick_device()
    t = time.perf_counter()
    model, tokenizer = load_model(str(model_dir), "hf", {}, device)
    load_s = time.perf_counter() - t
    longest = max(len(tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"]) for r in forget + retain)
    max_new = min(96, longest + 8)

    def rouge(m, guard=None) -> tuple[float, float]:
        fa = greedy(m, tokenizer, [r["question"] for r in forget], guard=guard, max_new_tokens=max_new)
        ra = greedy(m, tokenizer, [r["question"] for r in retain], guard=guard, max_new_tokens=max_new)
        return (mean_rouge_l_recall(fa, [r["answer"] for r in forget]),
                mean_rouge_l_recall(ra, [r["answer"] for r in retain]))

    f0, r0 = rouge(model)
    sensitive = sorted({r["value"] for r in forget if r.get("value")})
    results = [run_one(run, args, model, tokenizer, forget, retain, sensitive, device, rouge)
               for run in [m.strip() for m in args.methods.split(",") if m.strip()]]
    if args.json:
        print(json.dumps({"model": label, "device": device, "load_s": round(load_s, 2), "forget_rows": len(forget),
                          "retain_rows": len(retain), "before": {"forget_rouge": f0, "retain_rouge": r0},
                          "runs": results}, indent=2))
        return 0
    print_table(label, device, forget, retain, f0, r0, results)
    return 0


if __name__ == "__main__":
    from bench.record import recorded

    with recorded("methods"):
        code = main()
    sys.exit(code)
