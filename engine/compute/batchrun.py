"""A batched job (`expunge batch`, issue 14) inside a worker: one unlearning run over the union of several
requests' forget sets, then each request verified on its own data (its own 'before', stages, evidence and
verdict), as if it had run alone on the same candidate. The leader's result carries the other members'.

The union: every member's forget rows; retain rows of any member that are not a forget question of another
(a row one request keeps and another erases pulls both ways: erasure wins); the sensitive strings of all."""

from __future__ import annotations

import time
from pathlib import Path

from engine.artifacts import library_versions, write_atomically
from engine.compute import generation
from engine.compute.methods.base import RunContext, get_method
from engine.compute.modeling import pick_device
from engine.compute.prompting import max_answer_tokens, uses_chat
from engine.compute.verify.leadin import find_lead_ins, with_lead_ins
from engine.compute.verify.stages import EvalInput, judge, measure_all, overall_verdict, pair_evidence
from engine.schema.datasets import as_qa
from engine.schema.payload import JobPayload, JobResult


def _members(payload: JobPayload) -> list[dict]:
    leader = {"job_id": payload.job_id, "intention": payload.intention, "policy": payload.policy,
              "rows": payload.rows, "sensitive": payload.sensitive, "baseline_key": payload.baseline_key,
              "baseline": payload.baseline}
    return [leader, *payload.batch]


def union(members: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    forget = [r for m in members for r in as_qa(m["rows"]["forget"])]
    erased = {r["question"].strip() for r in forget}
    retain, seen = [], set()
    for m in members:
        for r in as_qa(m["rows"]["retain"]):
            q = r["question"].strip()
            if q not in erased and q not in seen:
                seen.add(q)
                retain.append(r)
    sensitive = list(dict.fromkeys(s for m in members for s in m["sensitive"]))
    return forget, retain, sensitive


def run_batch(payload: JobPayload, model, tokenizer, emit) -> JobResult:
    started = time.time()
    device = pick_device()
    members = _members(payload)
    profile = payload.model.options.get("verification", "full")

    def progress(**fields):
        emit({"type": "progress", "job_id": payload.job_id, **fields})

    # Every answer is scored and trained where the base says it (engine.compute.verify.leadin); no member's
    # sensitive strings go into any lead-in.
    forget, retain, sensitive = union(members)
    progress(phase="lead-ins")
    every = [r for m in members for k in ("forget", "retain", "holdout") for r in as_qa(m["rows"].get(k) or [])]
    table = find_lead_ins(model, tokenizer, every, sensitive, max_new_tokens=max_answer_tokens(tokenizer, every))
    forget, retain = with_lead_ins(forget, table), with_lead_ins(retain, table)

    def inputs(m: dict, **extra) -> EvalInput:
        qa = {k: with_lead_ins(as_qa(m["rows"].get(k) or []), table) for k in ("forget", "retain", "holdout")}
        return EvalInput(tokenizer=tokenizer, forget=qa["forget"], retain=qa["retain"], sensitive=m["sensitive"],
                         holdout=qa["holdout"], probes=as_qa(m["rows"].get("probes") or []),
                         general_text=payload.general_text,
                         max_new_tokens=max_answer_tokens(tokenizer, qa["forget"] + qa["retain"]),
                         progress=progress, profile=profile, **extra)

    timings: dict = {}
    t = time.time()
    for m in members:  # each member's 'before', measured on the starting model unless cached
        if m["baseline"] is None:
            m["baseline"] = measure_all(inputs(m, model=model))
            emit({"type": "baseline", "job_id": m["job_id"], "key": m["baseline_key"], "payload": m["baseline"]})
    timings["before_s"] = round(time.time() - t, 2)

    work_dir = Path(payload.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    method_cls = get_method(payload.method)
    hp = method_cls.Hyper.model_construct(**payload.hyper)
    kept_line, line = [], None
    if payload.line:  # a batch on a version keeps what it answers to the erasures it already carries
        from engine.compute.verify.line import line_rows

        progress(phase="line")
        kept_line, line = line_rows(model, tokenizer, payload.line, forget, sensitive,
                                    max_new_tokens=max_answer_tokens(tokenizer, forget + retain))
    ctx = RunContext(model=model, tokenizer=tokenizer, forget=forget, retain=retain + kept_line, sensitive=sensitive,
                     device=device, work_dir=work_dir, progress=progress,
                     holdout=as_qa(payload.rows.get("holdout") or []), resume=payload.resume)
    t = time.time()
    candidate = method_cls().run(ctx, hp)
    timings["method_s"] = round(time.time() - t, 2)

    progress(phase="save")
    manifest = {"job_id": payload.job_id, "base_model": payload.model.name,
                "base_model_sha256": payload.model.weights_sha256, "base_version": payload.model.version,
                "method": payload.method, "tier": method_cls.tier, "hyper": payload.hyper,
                "seed": payload.hyper.get("seed", 0), "kind": candidate.kind, "libraries": library_versions(),
                "device": device, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "prompt_format": "chat" if uses_chat(tokenizer) else "plain", "verification": profile,
                "method_info": candidate.info, "generation_oom_backoff": generation.backoff(),
                "batch": {"jobs": [m["job_id"] for m in members], "forget_rows": len(forget),
                          "retain_rows": len(retain)}, **({"line": line} if line else {})}
    manifest = write_atomically(Path(payload.artifact_dir), candidate.save, manifest)
    artifact = {"kind": manifest["kind"], "path": payload.artifact_dir, "sha256": manifest["artifact_sha256"],
                "manifest": manifest}

    results = []
    for m in members:
        t = time.time()
        after = measure_all(inputs(m, model=candidate.model, guard=candidate.guard, base_model=model))
        stages = judge(m["baseline"], after, m["policy"], m["intention"])
        evidence = []
        for name in after:
            evidence += pair_evidence(name, m["baseline"].get(name, {}).get("evidence", []), after[name]["evidence"])
        results.append({"job_id": m["job_id"], "stages": stages, "verdict": overall_verdict(stages),
                        "policy": m["policy"], "evidence": evidence, "device": device, "artifact": artifact,
                        "result": {"timings": {**timings, "verify_s": round(time.time() - t, 2),
                                               "total_s": round(time.time() - started, 2)},
                                   "verification": profile, "batch": manifest["batch"],
                                   "generation_oom_backoff": generation.backoff(), **ctx.extra,
                                   **dict(candidate.info)}})
    del candidate
    leader, others = results[0], results[1:]
    leader.pop("job_id")
    return JobResult.model_validate({**leader, "members": others})
