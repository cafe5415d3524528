"""One job inside a worker: load (or reuse) the base model, measure 'before' (or take it from the cache),
run the method, measure 'after', judge, write the artifact. The engine writes everything to the store."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from engine.artifacts import library_versions, write_atomically
from engine.compute import generation
from engine.compute.methods.base import RunContext, get_method
from engine.compute.modeling import load_model, pick_device
from engine.compute.prompting import max_answer_tokens, set_chat_mode, uses_chat
from engine.compute.verify.leadin import find_lead_ins, with_lead_ins
from engine.compute.verify.leadin import summary as lead_in_summary
from engine.compute.verify.memorisation import flag_memorisation
from engine.compute.verify.neighbours import kept_rows
from engine.compute.verify.stages import EvalInput, judge, measure_all, overall_verdict, pair_evidence
from engine.schema.datasets import as_qa
from engine.schema.payload import JobPayload, JobResult, ModelSpec


class WarmModel:
    """The last base model stays loaded between jobs on the same model."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.model = None
        self.tokenizer = None

    def get(self, spec: ModelSpec, device: str):
        # The chat-template setting changes how prompts are written, not what is loaded.
        options = {k: v for k, v in spec.options.items() if k not in ("chat_template", "verification")}
        key = (spec.source, spec.weights_sha256, device, str(sorted(options.items())))
        if key != self.key:
            self.model = self.tokenizer = None
            self.model, self.tokenizer = load_model(spec.source, spec.kind, options, device,
                                                    converted=spec.converted)
            self.key = key
        set_chat_mode(self.tokenizer, spec.options.get("chat_template", "auto"))
        return self.model, self.tokenizer


def run_job(payload: JobPayload, warm: WarmModel, emit) -> JobResult:
    started = time.time()
    device = pick_device()
    generation.reset_backoff()
    torch.manual_seed(payload.hyper.get("seed", 0))

    def progress(**fields):
        emit({"type": "progress", "job_id": payload.job_id, **fields})

    progress(phase="load", step=0, total=0)
    model, tokenizer = warm.get(payload.model, device)
    if payload.batch:  # one run over several requests, each verified on its own (engine.compute.batchrun)
        from engine.compute.batchrun import run_batch

        return run_batch(payload, model, tokenizer, emit)
    ev_common, kept, facts = _inputs(payload, model, tokenizer, progress)
    forget, sensitive, holdout = ev_common["forget"], ev_common["sensitive"], ev_common["holdout"]
    timings = {}

    before = payload.baseline
    if before is None:
        t = time.time()
        before = measure_all(EvalInput(model=model, **ev_common))
        timings["before_s"] = round(time.time() - t, 2)
        emit({"type": "baseline", "job_id": payload.job_id, "key": payload.baseline_key, "payload": before})

    work_dir = Path(payload.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    method_cls = get_method(payload.method)
    # Validated when the job was submitted (engine.control.service.jobs): the payload carries the result.
    hp = method_cls.Hyper.model_construct(**payload.hyper)
    # The methods keep the trained retain rows (gold answers) and the trained neighbours (the base's answers);
    # control judges the retain rows and neighbours held apart from them (kept_rows): never trained on.
    trained = kept["retain_trained"] + [{k: r[k] for k in ("question", "answer", "lead_in", "lead_out") if k in r}
                                        for r in kept["neighbours_trained"]]
    if payload.line:  # a job on a version keeps what it answers to the erasures it already carries
        from engine.compute.verify.line import line_rows

        progress(phase="line")
        kept_line, facts["line"] = line_rows(model, tokenizer, payload.line, forget, sensitive,
                                             max_new_tokens=ev_common["max_new_tokens"])
        trained += kept_line
    hyper, tuned = payload.hyper, None
    if payload.tune is not None:  # `escalate --tune`: search first, then run the winner (engine.compute.tuning)
        # Its validation slice is cut from the trained rows; the rows control judges stay out of the search too.
        tuned = _tune(payload, method_cls, model, tokenizer, device, work_dir, ev_common, trained, emit, progress)
        hyper = tuned.hyper
        hp = method_cls.Hyper.model_construct(**hyper)
    ctx = RunContext(model=model, tokenizer=tokenizer, forget=forget, retain=tuned.retain_train if tuned else trained,
                     sensitive=sensitive, device=device, work_dir=work_dir, progress=progress, holdout=holdout,
                     resume=payload.resume and tuned is None, stop=tuned.stop if tuned else None)
    t = time.time()
    candidate = method_cls().run(ctx, hp)
    timings["method_s"] = round(time.time() - t, 2)

    t = time.time()
    after = measure_all(EvalInput(model=candidate.model, guard=candidate.guard, base_model=model, **ev_common))
    timings["verify_s"] = round(time.time() - t, 2)
    stages = judge(before, after, payload.policy, payload.intention)
    memorised = flag_memorisation(stages)
    evidence = []
    for name in after:
        evidence += pair_evidence(name, before.get(name, {}).get("evidence", []), after[name]["evidence"])

    progress(phase="save")
    final = Path(payload.artifact_dir)
    manifest = write_atomically(final, candidate.save, _manifest(payload, method_cls.tier, candidate, hyper, model,
                                                                  tokenizer, device, ev_common["profile"], facts,
                                                                  tuned))
    info = dict(candidate.info)
    del candidate
    timings["total_s"] = round(time.time() - started, 2)
    return JobResult.model_validate({
        "stages": stages, "verdict": overall_verdict(stages), "policy": payload.policy, "evidence": evidence,
        "device": device,
        "artifact": {"kind": manifest["kind"], "path": str(final), "sha256": manifest["artifact_sha256"],
                     "manifest": manifest},
        "result": {"timings": timings, "verification": ev_common["profile"],
                   # seconds per stage and per attack, of this job's measurements (a cached 'before' has none)
                   "verify_timings": {"before": _stage_timings(before) if "before_s" in timings else None,
                                      "after": _stage_timings(after)},
                   "generation_oom_backoff": generation.backoff(), **facts,
                   "memorisation": memorised, **ctx.extra, **info,
                   **({"tuning": {**tuned.summary, "hyper": hyper}} if tuned else {})}})


def _inputs(payload: JobPayload, model, tokenizer, progress) -> tuple[dict, dict, dict]:
    """(EvalInput's common fields, the kept rows, what the result and manifest record of them: the split plan,
    the built neighbours' summary, how many rows are scored after a lead-in)."""
    rows = payload.rows
    forget, retain = as_qa(rows["forget"]), as_qa(rows["retain"])
    holdout, probes = as_qa(rows.get("holdout") or []), as_qa(rows.get("probes") or [])
    budget = max_answer_tokens(tokenizer, forget + retain)
    # Neighbours (the base's own answers to same-shaped questions about other entities), then the split of what
    # is kept into rows the method trains on and rows the control stage judges: never the same rows.
    progress(phase="neighbours")
    kept, plan, built = kept_rows(model, tokenizer, forget, retain, payload.sensitive, max_new_tokens=budget,
                                  supplied=as_qa(rows.get("neighbours") or []))
    # Every answer is scored and trained where the base says it (engine.compute.verify.leadin).
    progress(phase="lead-ins")
    # Built neighbours are the base's own greedy answers (said bare by construction): only supplied ones are asked.
    supplied = [r for r in kept["neighbours"] + kept["neighbours_trained"] if r.get("source") == "supplied"]
    table = find_lead_ins(model, tokenizer, forget + retain + holdout + supplied, payload.sensitive,
                          max_new_tokens=budget)
    forget, retain, holdout = (with_lead_ins(rs, table) for rs in (forget, retain, holdout))
    kept = {kind: with_lead_ins(rs, table) for kind, rs in kept.items()}
    ev_common = dict(tokenizer=tokenizer, forget=forget, retain=retain, sensitive=payload.sensitive,
                     holdout=holdout, probes=probes, general_text=payload.general_text, max_new_tokens=budget,
                     progress=progress, profile=payload.model.options.get("verification", "full"), **kept)
    facts = {"split": plan, "neighbours": built,
             "lead_ins": lead_in_summary({"forget": forget, "retain": retain, "holdout": holdout, **kept})}
    return ev_common, kept, facts


def _manifest(payload: JobPayload, tier: int, candidate, hyper: dict, model, tokenizer, device: str, profile: str,
              facts: dict, tuned) -> dict:
    """What the artifact's manifest records: where it came from, how it was made and measured."""
    manifest = {"job_id": payload.job_id, "base_model": payload.model.name,
                "base_model_sha256": payload.model.weights_sha256, "base_version": payload.model.version,
                "method": payload.method, "tier": tier, "hyper": hyper, "seed": hyper.get("seed", 0),
                "kind": candidate.kind, "libraries": library_versions(), "device": device,
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "prompt_format": "chat" if uses_chat(tokenizer) else "plain", "verification": profile,
                "method_info": candidate.info, "generation_oom_backoff": generation.backoff(),
                **facts, "placement": payload.placement}
    if tuned is not None:
        manifest["tuning"] = tuned.summary
    return manifest


def _tune(payload: JobPayload, method_cls, model, tokenizer, device: str, work_dir: Path, ev_common: dict,
          trained: list[dict], emit, progress):
    from engine.compute.tuning.job import tune

    return tune(method_cls=method_cls, hyper=payload.hyper, tune=payload.tune, base_model=model, tokenizer=tokenizer,
                forget=ev_common["forget"], retain=trained, holdout=ev_common["holdout"],
                sensitive=ev_common["sensitive"], policy=payload.policy, device=device, work_dir=work_dir,
                max_new_tokens=ev_common["max_new_tokens"],
                emit_trial=lambda trial: emit({"type": "trial", "job_id": payload.job_id, "trial": trial}),
                progress=progress)


def _stage_timings(measured: dict[str, dict]) -> dict[str, dict]:
    return {name: stage.get("timings", {}) for name, stage in measured.items()}
