"""How many fine-tuning steps does the relearning attack need? (issue 12: right-size the attack by measuring.)

    .venv/bin/python bench/relearn_steps.py                    # the demo request on the demo model
    .venv/bin/python bench/relearn_steps.py --model smollm2    # France (3 facts) on SmolLM2-135M-Instruct
    .venv/bin/python bench/relearn_steps.py --steps 30 --every 2 --method npo --method ga

Each method (`--method`; default: the tier-2 and tier-3 defaults and plain gradient ascent) unlearns the
request's forget rows with its default hyperparameters, as a job runs it; then the relearning attack of engine.compute.verify.relearn runs on that candidate — and on the base — with
the full profile's budget (RelearnConfig: rank-8 LoRA, lr 3e-3), asking half B every `--every` steps instead
of at 3 checkpoints. Its matched control (the base fine-tuned on holdout rows) is asked at the same steps.
For each step budget s the recovery is what the attack would report with a budget of s steps: each run's best
checkpoint up to s, recovery = clip((attacked − control) / (base − control), 0, 1). The retain-data attack
(Łucki et al.: fine-tune on retain rows, ask the forget rows) is measured the same way.

The step budget a verification needs is the first s whose recovery is within 0.05 of the 30-step figure on
the candidate (the attack must not stop before the knowledge it can bring back is back). Writes
bench/results/relearn-steps-<model>.md with the machine, the load and the commit."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]  # bench/console.py shadows
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def demo_case() -> dict:
    from bench.verify import demo_request
    from engine.compute.modeling import load_model

    req = demo_request(None)
    model, tokenizer = load_model(str(req["model_dir"]), "hf", {"dtype": "fp32"}, "cpu")
    return {"label": "demo", "model": model, "tokenizer": tokenizer, **{k: req[k] for k in
                                                                       ("forget", "retain", "holdout", "sensitive")}}


def smollm2_case() -> dict:
    from engine.bench_real import checked_requests, smollm2_spec
    from engine.compute.jobrunner import WarmModel

    model, tokenizer = WarmModel().get(smollm2_spec("full"), "cpu")
    kept, dropped = checked_requests(model, tokenizer, ["France"])
    if not kept:
        raise SystemExit(f"SmolLM2 does not know the France request's facts: {dropped}")
    req = kept[0]
    return {"label": "smollm2", "model": model, "tokenizer": tokenizer,
            **{k: req[k] for k in ("forget", "retain", "holdout", "sensitive")}}


def unlearn(case: dict, name: str) -> tuple[object, float]:
    """Method `name`'s candidate on the case's request, with its default hyperparameters (as a job runs it)."""
    from engine.compute.methods.base import RunContext, get_method

    cls = get_method(name)
    with tempfile.TemporaryDirectory(prefix="relearn-steps-") as work:
        ctx = RunContext(model=case["model"], tokenizer=case["tokenizer"], forget=case["forget"],
                         retain=case["retain"], sensitive=case["sensitive"], device="cpu", work_dir=Path(work),
                         progress=lambda **_: None, holdout=case["holdout"])
        t = time.perf_counter()
        candidate = cls().run(ctx, cls.Hyper())
        return candidate.model, time.perf_counter() - t


def curves(model, base, tokenizer, train, asked, holdout, sensitive, cfg, gen, control_on_train: bool) -> dict:
    """Per checkpoint step: the attack's score on `asked` (fine-tuning `model` on `train`), the matched
    control's (the base fine-tuned on holdout rows matched to `train`, or on `train` itself for the retain-data
    attack, as engine.compute.verify.relearn.run_matched does), and the base's own score on `asked`."""
    from engine.compute.verify.relearn import attack, base_score, matched_rows

    c_asked = matched_rows(holdout, asked, tokenizer, cfg.seed)
    rest = [r for r in holdout if r not in c_asked]
    c_train = train if control_on_train else matched_rows(rest, train, tokenizer, cfg.seed)
    t = time.perf_counter()
    att = attack(model, tokenizer, train, {"a": (asked, sensitive)}, cfg, **gen)["a"]["curve"]
    attack_s = time.perf_counter() - t
    ctl = attack(base, tokenizer, c_train, {"c": (c_asked, ())}, cfg, **gen)["c"]["curve"]
    return {"attack": att, "control": ctl, "base": base_score(base, tokenizer, asked, sensitive, gen)["score"],
            "attack_s": attack_s}


def by_budget(c: dict) -> list[tuple[int, float | None]]:
    """(budget s, the recovery an attack of s steps reports: each run's best checkpoint up to s)."""
    from engine.compute.verify.relearn import recovery_share

    out, best_a, best_c = [], -1.0, -1.0
    for (step, a), (_, ctl) in zip(c["attack"], c["control"], strict=True):
        best_a, best_c = max(best_a, a), max(best_c, ctl)
        out.append((step, recovery_share(best_a, best_c, c["base"])))
    return out


def needed(rows: list[tuple[int, float | None]], tolerance: float = 0.05) -> int | None:
    """The first budget whose recovery is within `tolerance` of the full budget's."""
    final = rows[-1][1]
    if final is None:
        return None
    return next(step for step, r in rows if r is not None and r >= final - tolerance)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["demo", "smollm2"], default="demo")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", dest="methods", action="append",
                    help="unlearning method whose candidate is attacked (repeatable; default: the tier-2 and tier-3 "
                         "defaults and plain gradient ascent)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from engine.compute.prompting import max_answer_tokens
    from engine.compute.verify.relearn import RelearnConfig, split_halves

    started, load_before = time.time(), os.getloadavg()
    case = demo_case() if args.model == "demo" else smollm2_case()
    tokenizer = case["tokenizer"]
    cfg = replace(RelearnConfig(), steps=args.steps, checkpoints=args.steps // args.every)
    gen = {"max_new_tokens": max_answer_tokens(tokenizer, case["forget"] + case["retain"]), "batch_size": 32}
    from engine.compute.methods.base import default_method_for_tier

    methods = args.methods or [default_method_for_tier(2), default_method_for_tier(3), "ga"]
    half_a, half_b = split_halves(case["forget"], cfg.seed)
    retain_train = case["retain"][: cfg.max_train_rows]
    results, method_s = {}, {}
    for who in [*methods, "base"]:
        if who == "base":
            model = case["model"]
        else:
            model, method_s[who] = unlearn(case, who)
        for attack_name, train, asked in (("relearn", half_a, half_b), ("retain_relearn", retain_train, case["forget"])):
            c = curves(model, case["model"], tokenizer, train, asked, case["holdout"], case["sensitive"], cfg, gen,
                       control_on_train=attack_name == "retain_relearn")
            rows = by_budget(c)
            results[f"{who}:{attack_name}"] = {"curve": rows, "needed_steps": needed(rows), "attack_s": c["attack_s"],
                                               "base_score": c["base"], "attack_scores": c["attack"],
                                               "control_scores": c["control"]}
            print(f"{who:<8} {attack_name:<15} needs {needed(rows)} of {args.steps} steps; recovery by budget: "
                  + " ".join(f"{s}:{'—' if r is None else f'{r:.2f}'}" for s, r in rows), flush=True)
        del model
    write(args, case, method_s, results, started, load_before)
    return 0


def write(args, case: dict, method_s: dict, results: dict, started: float, load_before) -> None:
    from bench.record import commit, machine

    lines = [f"# Relearning attack: steps needed ({case['label']})", "",
             f"`python bench/relearn_steps.py --model {args.model} --steps {args.steps} --every {args.every}`, "
             f"commit {commit()}, {machine()}, {args.threads} threads, "
             f"load {' / '.join(f'{x:.2f}' for x in load_before)} at the start and "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; took {time.time() - started:.0f} s.", "",
             f"Request: {len(case['forget'])} forget, {len(case['retain'])} retain, {len(case['holdout'])} holdout "
             f"rows; candidates (default hyperparameters): "
             + ", ".join(f"`{m}` ({s:.0f} s)" for m, s in method_s.items()) + ".", "",
             "| model / attack | steps needed | recovery by step budget |", "|---|---|---|"]
    for name, r in results.items():
        curve = " ".join(f"{s}:{'—' if v is None else f'{v:.2f}'}" for s, v in r["curve"])
        lines.append(f"| {name} | {r['needed_steps']} | {curve} |")
    lines += ["", "```json", json.dumps(results, indent=1, default=str), "```", ""]
    out = REPO / "bench" / "results" / f"relearn-steps-{case['label']}.md"
    out.write_text("\n".join(lines))
    print(f"written {out}")


if __name__ == "__main__":
    raise SystemExit(main())
