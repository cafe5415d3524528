"""The full verification of a real erasure request on SmolLM2-135M-Instruct, per stage and per attack, and the
same with an earlier revision's verification code side by side (issue 12's real-model benchmark).

    .venv/bin/python bench/verify_real.py                              # France: 3 facts, full profile
    .venv/bin/python bench/verify_real.py --compare-baseline a385a9c   # and that revision's attack set

What is measured is the 'before' verification a job starts with: the three stages on the base model (every
attack at the full profile's budget: greedy and sampled attacks, relearning and its matched control, ...), on
the request's rows as a worker gets them: 3 forget facts SmolLM2 answers correctly (checked by its own greedy
answers first), 10 same-kind retain facts, 6 invented holdout facts. Both revisions measure the same model
folder (the GGUF converted once), the same rows and the same general text, through the chat template, fp32 on
CPU, in separate processes one after the other; the earlier revision runs this same script from an exported
copy of its tree. (A job also builds neighbours and judges them in control: seconds, left out here so that
both revisions measure the same thing.)

Target (issue 12): the full verification of that request <= 5 min wall on 2 quiet cores. Writes
bench/results/verify-real.md with the machine, the load and the commit."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def prepare(entity: str, forget_rows: int) -> tuple[Path, dict]:
    """The converted SmolLM2 folder and the request's rows (the facts the model knows), from this tree."""
    sys.path.insert(0, str(REPO))
    from engine.bench_real import checked_requests, smollm2_spec
    from engine.compute.jobrunner import WarmModel
    from engine.control.baseline import GENERAL_TEXT

    spec = smollm2_spec("full")
    model, tokenizer = WarmModel().get(spec, "cpu")
    kept, dropped = checked_requests(model, tokenizer, [entity])
    if not kept:
        raise SystemExit(f"SmolLM2 does not know enough of {entity}: {dropped}")
    req = kept[0]
    rows = {"entity": entity, "forget": req["forget"][:forget_rows], "retain": req["retain"],
            "holdout": req["holdout"], "sensitive": req["sensitive"], "general_text": list(GENERAL_TEXT)}
    return Path(spec.converted), rows


def measure(model_dir: Path, rows: dict, threads: int) -> dict:
    """Seconds per stage (and each stage's own split, where the revision records one) of the three stages on
    the base model; the code is whatever `engine` this process imports."""
    import torch

    torch.set_num_threads(threads)
    from engine.compute.modeling import load_model
    from engine.compute.prompting import max_answer_tokens, set_chat_mode
    from engine.compute.verify.stages import STAGE_ORDER, EvalInput, stage_module

    model, tokenizer = load_model(str(model_dir), "hf", {"dtype": "fp32"}, "cpu")
    set_chat_mode(tokenizer, "auto")
    budget = max_answer_tokens(tokenizer, rows["forget"] + rows["retain"])
    lead_in_s = None
    try:  # a job scores every answer after the base's own lead-in (revisions before it have no such step)
        from engine.compute.verify.leadin import find_lead_ins, with_lead_ins
    except ImportError:
        pass
    else:
        t = time.perf_counter()
        table = find_lead_ins(model, tokenizer, rows["forget"] + rows["retain"] + rows["holdout"], rows["sensitive"],
                              max_new_tokens=budget)
        rows = {**rows, **{k: with_lead_ins(rows[k], table) for k in ("forget", "retain", "holdout")}}
        lead_in_s = round(time.perf_counter() - t, 2)
    ev = EvalInput(model=model, tokenizer=tokenizer, forget=rows["forget"], retain=rows["retain"],
                   sensitive=rows["sensitive"], holdout=rows["holdout"], general_text=rows["general_text"],
                   max_new_tokens=budget, profile="full")
    out: dict = {"stages": {}, "lead_in_s": lead_in_s}
    for name in STAGE_ORDER:
        t, c = time.perf_counter(), time.process_time()
        measured = stage_module(name).measure(ev)
        out["stages"][name] = {"seconds": round(time.perf_counter() - t, 2),
                               "cpu_seconds": round(time.process_time() - c, 2),
                               "split_s": getattr(measured, "timings", None) or {},
                               "metrics": {k: v if v is None else round(v, 4) for k, v in measured.metrics.items()}}
    out["seconds"] = round(sum(s["seconds"] for s in out["stages"].values()) + (lead_in_s or 0), 2)
    out["cpu_seconds"] = round(sum(s["cpu_seconds"] for s in out["stages"].values()), 2)
    return out


def baseline(ref: str, model_dir: Path, rows_file: Path, threads: int) -> dict:
    """This script run against REF's `engine`, from an exported copy of REF's tree."""
    with tempfile.TemporaryDirectory(prefix="expunge-baseline-") as tree:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        script = Path(tree) / "bench" / "verify_real_of_this_tree.py"
        script.write_text(Path(__file__).read_text())
        print(f"running {ref}'s verification on the same model and rows…", file=sys.stderr, flush=True)
        run = subprocess.run([sys.executable, str(script), "--model", str(model_dir), "--rows", str(rows_file),
                              "--threads", str(threads), "--json"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": tree}, cwd=tree)
    if run.returncode:
        raise SystemExit(f"baseline {ref} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entity", default="France")
    ap.add_argument("--forget-rows", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare-baseline", metavar="REF", help="also run REF's verification, side by side")
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)  # the baseline's run: the prepared folder
    ap.add_argument("--rows", type=Path, help=argparse.SUPPRESS)  # … and rows
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.model is not None:  # inside a baseline run: measure and print one JSON line
        print(json.dumps(measure(args.model, json.loads(args.rows.read_text()), args.threads)))
        return 0
    started, load_before = time.time(), os.getloadavg()
    model_dir, rows = prepare(args.entity, args.forget_rows)
    result = {"this_tree": measure(model_dir, rows, args.threads)}
    if args.compare_baseline:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(rows, fh)
        try:
            result["baseline"] = {"ref": args.compare_baseline,
                                  **baseline(args.compare_baseline, model_dir, Path(fh.name), args.threads)}
        finally:
            os.unlink(fh.name)
    write(args, rows, result, started, load_before)
    return 0


def write(args, rows: dict, result: dict, started: float, load_before) -> None:
    from bench.record import commit, machine

    runs = [("this tree", result["this_tree"])]
    if "baseline" in result:
        runs.append((f"{result['baseline']['ref']}", result["baseline"]))
    lines = [f"# Full verification of a real request on SmolLM2-135M-Instruct ({rows['entity']}, "
             f"{len(rows['forget'])} forget rows)", "",
             f"`python bench/verify_real.py --entity {args.entity} --forget-rows {args.forget_rows}"
             f"{' --compare-baseline ' + args.compare_baseline if args.compare_baseline else ''}`, commit {commit()}, "
             f"{machine()}, {args.threads} threads, load {' / '.join(f'{x:.2f}' for x in load_before)} at the start and "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (the end counts this run's own threads); "
             f"took {time.time() - started:.0f} s.", "",
             f"Rows: {len(rows['forget'])} forget, {len(rows['retain'])} retain, {len(rows['holdout'])} holdout, "
             f"{len(rows['general_text'])} general texts; profile `full`; the base model measured (a job's 'before').",
             "", "| code | unit s | control s | reconstruction s | total wall s | total CPU s |", "|---|---|---|---|---|---|"]
    for label, r in runs:
        st = r["stages"]
        lines.append(f"| {label} | {st['unit']['seconds']} | {st['control']['seconds']} | "
                     f"{st['reconstruction']['seconds']} | {r['seconds']} | {r['cpu_seconds']} |")
    if "baseline" in result:
        b, t = result["baseline"], result["this_tree"]
        lines += ["", f"This tree / {b['ref']}: wall {t['seconds'] / b['seconds']:.2f}x, "
                      f"CPU {t['cpu_seconds'] / b['cpu_seconds']:.2f}x."]
    for label, r in runs:
        if r.get("lead_in_s") is not None:
            lines += ["", f"{label}: choosing the answers' lead-ins took {r['lead_in_s']} s (in the total)."]
    verdict = "within" if result["this_tree"]["seconds"] <= 300 else "OVER"
    lines += ["", f"Target: <= 300 s wall on 2 quiet cores: {verdict} ({result['this_tree']['seconds']} s).", ""]
    for label, r in runs:
        for stage, s in r["stages"].items():
            if s["split_s"]:
                lines.append(f"- {label}, {stage} split (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["split_s"].items()))
    lines += ["", "```json", json.dumps(result, indent=1), "```", ""]
    out = REPO / "bench" / "results" / "verify-real.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[:20]))
    print(f"written {out}")


if __name__ == "__main__":
    raise SystemExit(main())
