"""Benchmark the three-stage verification on the demo request: items per second for each stage,
batched against one-at-a-time generation and scoring on the same items (and their ratio), and the
wall time of a full three-stage verification (target: <= 60 s on 2 CPU cores).

    .venv/bin/python bench/verify.py                   # the demo model (built once and cached, like `expunge demo`)
    .venv/bin/python bench/verify.py --model DIR       # a model built by the demo builder (demo_split rows)
    .venv/bin/python bench/verify.py --skip-single     # batched only (the one-at-a-time pass is slow)
    .venv/bin/python bench/verify.py --skip-single --compare-baseline a385a9c
                                     # also run REF's own bench/verify.py (its attack set) on the same
                                     # model in the same run, and print the ratio of the two wall times

The demo request: Alma Rivera's 5 facts to forget, 100 retain rows of the other people, the 60 holdout
rows of people the model never saw, her phone, e-mail, address and account as sensitive strings.

Items per stage: unit = forget questions, control = retain questions, reconstruction = attacked
prompts (each decoded greedily and sampled; plus the relearning attack and the white-box scoring,
which do not depend on the batch size and are timed inside the stage). Each stage's split per attack
(its measurement's timings) is printed after the table."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FORGET_PERSON = "Alma Rivera"


def demo_request(model_dir: Path | None) -> dict:
    from engine.builder import cached_target
    from engine.control.baseline import GENERAL_TEXT
    from engine.demo_data import demo_split
    from store.paths import get_paths

    split = demo_split()
    if model_dir is None:
        print("building the demo model (cached after the first run)…", file=sys.stderr, flush=True)
        model_dir = cached_target(split["train"], get_paths().models / "cache", size="demo")
    forget = [r for r in split["train"] if r["person"] == FORGET_PERSON]
    others = [r for r in split["train"] if r["person"] != FORGET_PERSON]
    retain = random.Random(0).sample(others, min(100, len(others)))
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "address", "account")})
    return {"model_dir": Path(model_dir), "forget": forget, "retain": retain, "holdout": split["holdout"],
            "sensitive": sensitive, "general_text": list(GENERAL_TEXT)}


def items_of(stage: str, req: dict) -> int:
    from engine.compute.verify.attacks import attack_prompts

    if stage == "unit":
        return len(req["forget"])
    if stage == "control":
        return len(req["retain"])
    return len(attack_prompts(req["forget"], req["sensitive"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model directory (default: the cached demo model, built if needed)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-single", action="store_true", help="skip the one-at-a-time pass")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--compare-baseline", metavar="REF",
                    help="git revision whose bench/verify.py (and attack set) to run side by side")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from engine.compute.modeling import load_model
    from engine.compute.prompting import max_answer_tokens
    from engine.compute.verify import basecache
    from engine.compute.verify.stages import STAGE_ORDER, EvalInput, stage_module

    req = demo_request(args.model)
    model, tokenizer = load_model(str(req["model_dir"]), "hf", {"dtype": "fp32"}, "cpu")
    common = dict(tokenizer=tokenizer, forget=req["forget"], retain=req["retain"], sensitive=req["sensitive"],
                  holdout=req["holdout"], general_text=req["general_text"],
                  max_new_tokens=max_answer_tokens(tokenizer, req["forget"] + req["retain"]))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {req['model_dir']} ({n_params / 1e6:.2f}M parameters), {args.threads} threads; request: "
          f"{len(req['forget'])} forget, {len(req['retain'])} retain, {len(req['holdout'])} holdout rows")

    # Warm-up, not counted: first-call costs (imports of rouge-score, scipy and peft, kernels, caches).
    import peft  # noqa: F401
    import scipy.stats  # noqa: F401

    stage_module("unit").measure(EvalInput(model=model, **common))

    def run_stages(batch_size: int) -> dict:
        basecache.clear()  # cold: the relearning control is recomputed, as on a fresh worker
        ev = EvalInput(model=model, batch_size=batch_size, **common)
        out = {}
        for name in STAGE_ORDER:
            t, c = time.perf_counter(), time.process_time()
            measurement = stage_module(name).measure(ev)
            out[name] = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
                         "metrics": measurement.metrics, "timings": measurement.timings}
        return out

    batched = run_stages(args.batch_size)
    single = None if args.skip_single else run_stages(1)
    results = summarise(args, req, batched, single)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def summarise(args, req: dict, batched: dict, single: dict | None) -> dict:
    """Print the per-stage table, the totals, each stage's split and the side-by-side baseline; the results."""
    from engine.compute.verify.stages import STAGE_ORDER

    results = {"threads": args.threads, "model": str(req["model_dir"]), "stages": {}}

    print(f"\n{'stage':<15}{'items':>6}{'batched s':>11}{'items/s':>9}{'1-at-a-time s':>15}{'items/s':>9}"
          f"{'ratio':>7}")
    for name in STAGE_ORDER:
        n = items_of(name, req)
        b = batched[name]["seconds"]
        row = {"items": n, "batched_s": round(b, 2), "batched_items_per_s": round(n / b, 2)}
        line = f"{name:<15}{n:>6}{b:>11.2f}{n / b:>9.2f}"
        if single:
            s = single[name]["seconds"]
            row.update(single_s=round(s, 2), single_items_per_s=round(n / s, 2), ratio=round(s / b, 2))
            line += f"{s:>15.2f}{n / s:>9.2f}{s / b:>6.1f}x"
        print(line)
        results["stages"][name] = row

    total = sum(batched[n]["seconds"] for n in STAGE_ORDER)
    cpu = sum(batched[n]["cpu_seconds"] for n in STAGE_ORDER)
    results["full_verification_s"] = round(total, 2)
    results["full_verification_cpu_s"] = round(cpu, 2)
    verdict = "within" if total <= 60 else "OVER"
    print(f"\nfull three-stage verification (batched, cold): {total:.1f} s wall — {verdict} the 60 s target; "
          f"{cpu:.1f} s of CPU (wall exceeds CPU / threads when other processes share the cores)")
    print("per stage wall / CPU s: " + ", ".join(
        f"{n} {batched[n]['seconds']:.1f} / {batched[n]['cpu_seconds']:.1f}" for n in STAGE_ORDER))
    for name in STAGE_ORDER:
        split = batched[name]["timings"]
        results["stages"][name]["split_s"] = split
        if split:
            print(f"  {name} split (s): " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    if args.compare_baseline:
        base = baseline_run(args.compare_baseline, req["model_dir"], args.threads, args.batch_size)
        results["baseline"] = {"ref": args.compare_baseline, "full_verification_s": base["full_verification_s"],
                               "full_verification_cpu_s": base["full_verification_cpu_s"],
                               "ratio": round(total / base["full_verification_s"], 2),
                               "cpu_ratio": round(cpu / base["full_verification_cpu_s"], 2)}
        print(f"baseline {args.compare_baseline}: {base['full_verification_s']:.1f} s wall, "
              f"{base['full_verification_cpu_s']:.1f} s CPU; this tree {total:.1f} s wall = "
              f"{results['baseline']['ratio']:.2f}x, CPU {results['baseline']['cpu_ratio']:.2f}x (target <= 1.5x)")
    if single:
        results["full_verification_single_s"] = round(sum(single[n]["seconds"] for n in STAGE_ORDER), 2)
        print(f"one at a time: {results['full_verification_single_s']:.1f} s")
    print("metrics:", json.dumps({n: {k: v if v is None else round(v, 4) for k, v in batched[n]["metrics"].items()}
                                  for n in STAGE_ORDER}))
    return results


def baseline_run(ref: str, model_dir: Path, threads: int, batch_size: int) -> dict:
    """Run `ref`'s own bench/verify.py (batched only) on `model_dir` from an exported copy of that revision;
    its JSON results."""
    with tempfile.TemporaryDirectory(prefix="expunge-baseline-") as tree:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        print(f"\nrunning {ref}'s bench/verify.py on the same model…", file=sys.stderr, flush=True)
        run = subprocess.run([sys.executable, str(Path(tree) / "bench" / "verify.py"), "--model", str(model_dir),
                              "--threads", str(threads), "--batch-size", str(batch_size), "--skip-single", "--json"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree})
    if run.returncode:
        raise SystemExit(f"baseline {ref} failed:\n{run.stderr[-2000:]}")
    lines = run.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # --json prints its object last
    return json.loads("\n".join(lines[start:]))


if __name__ == "__main__":
    from bench.record import recorded

    with recorded("verify"):
        code = main()
    sys.exit(code)
