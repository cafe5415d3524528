"""Erasure requests: filing (everything validated before anything is written), accepting a job, closing
with the purge of their texts, and checking that a closed request's texts are gone."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, select

from engine.compute.methods.base import default_method_for_tier, get_method, validate_hyper
from engine.control import privacy
from engine.control.service import clock, versions
from engine.control.service.deadlines import filed_deadline
from engine.control.service.jobs import add_job, audit_hyper, tune_budget
from engine.control.service.lookup import get_request, request_rows
from engine.control.service.models import get_model
from engine.leaks import mask_sensitive, mask_with_spans
from engine.schema.datasets import read_jsonl, rows_sha256
from engine.schema.errors import Forbidden, NotFound, SpecError
from engine.schema.policy import approval_rule, load_policy
from engine.schema.spec import DATA_KINDS, parse_spec, resolve_rows
from engine.schema.status import ACTIVE
from store import audit
from store.models import Evidence, Job, Request, RequestData


def create_request(s: Session, body: dict, method: str | None = None, hyper: dict | None = None,
                   start: bool = True, auto_escalate: bool = False, actor: str = "operator",
                   tune: dict | None = None) -> tuple[Request, Job | None]:
    """Validate everything (spec, files, model, method, hyperparameters, policy) before writing anything. `tune`:
    tune the first job, and with auto_escalate every tier the request climbs to."""
    spec = parse_spec(body)
    # `model: demo@v1` pins a version as `version: 1` does (issue 14)
    spec.model, pinned = versions.parse_ref(spec.model)
    spec.version = spec.version if spec.version is not None else pinned
    tune = tune_budget(tune)
    rows = resolve_rows(spec, allow_paths=False)
    model = get_model(s, spec.model)
    load_policy(spec.policy)
    # Without its own retain/holdout sets a request uses the model's registered samples.
    for kind, registered in (("retain", model.retain_path), ("holdout", model.holdout_path)):
        if rows[kind] is None and registered:
            rows[kind] = read_jsonl(Path(registered), f"{kind} (the model's registered sample)")
    if rows["retain"] is None:
        raise SpecError("retain: no retain set given and the model has no registered retain sample")
    job_method = method
    if start:
        job_method = method or default_method_for_tier(first_tier(spec.intention, auto_escalate))
        hyper = validate_hyper(job_method, hyper)
    warnings = overlap_warnings(rows)
    received, due = filed_deadline(spec, clock.now())

    spec_public = spec.model_dump(exclude={*DATA_KINDS, "sensitive"})
    spec_public["warnings"] = warnings
    base_version = versions.start_version(s, spec.model, spec.version)
    req = Request(title=spec.title, reference=spec.reference, intention=spec.intention, model_name=spec.model,
                  policy=spec.policy, spec=spec_public, auto_escalate=auto_escalate, requested_by=actor,
                  received_at=received, legal_basis=spec.legal_basis, due_at=due, base_version=base_version,
                  tune=tune)
    s.add(req)
    s.flush()
    for kind in DATA_KINDS:
        if rows[kind] is not None:
            s.add(RequestData(request_id=req.id, kind=kind, rows=rows[kind],
                              sha256=rows_sha256(rows[kind]), count=len(rows[kind])))
    s.add(RequestData(request_id=req.id, kind="sensitive", rows=spec.sensitive,
                      sha256=rows_sha256(spec.sensitive), count=len(spec.sensitive)))
    audit.append(s, "request.create", f"request:{req.id}", {
        "reference": spec.reference, "intention": spec.intention, "model": spec.model,
        "forget_sha256": rows_sha256(rows["forget"]), "warnings": len(warnings), "policy": spec.policy,
        "received": received.isoformat(), "due": due.isoformat(), "legal_basis": spec.legal_basis,
        **({"base_version": base_version} if base_version else {})}, actor=actor)
    job = None
    if start:
        job = add_job(s, req, get_method(job_method).tier, job_method, hyper, actor, tune=tune)
    s.commit()
    return req, job


def first_tier(intention: str, auto_escalate: bool) -> int:
    """Cheapest first: climbing from tier 1 shows the whole ladder; a plain 'remove' request starts at
    tier 2, since a decode-time guard (tier 1) can never pass the white-box checks it is judged on."""
    if auto_escalate or intention == "suppress":
        return 1
    return 2


def overlap_warnings(rows: dict) -> list[str]:
    """Warnings shown when the request is filed: retain rows that are also forget rows (named, up to five;
    close keeps only the count) and rows repeated within a set."""
    def key(r: dict) -> str:
        return (r.get("question") or r.get("text") or "").strip()

    def quoted(items: list[str]) -> str:
        shown = ", ".join(json.dumps(q[:80], ensure_ascii=False) for q in items[:5])
        return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    out = []
    forget_q = {key(r) for r in rows["forget"]}
    overlap = [key(r) for r in rows.get("retain") or [] if key(r) in forget_q]
    if overlap:
        out.append(f"{len(overlap)} retain row(s) also appear in the forget set, pulling in opposite directions: "
                   f"{quoted(overlap)}")
    for kind in DATA_KINDS:
        seen, dups = set(), []
        for r in rows.get(kind) or []:
            body = json.dumps(r, sort_keys=True)
            if body in seen:
                dups.append(key(r))
            seen.add(body)
        if dups:
            out.append(f"{kind}: {len(dups)} duplicated row(s), counted more than once: {quoted(dups)}")
    return out


def job_executor(req: Request, job: Job) -> str:
    """Who ran a job: whoever queued it; an engine-queued (auto-escalated) job runs for the request's filer."""
    return req.requested_by if job.requested_by in ("", "engine") else job.requested_by


def accept_job(s: Session, request_id: int, job_id: int, actor: str = "operator", comment: str | None = None,
               land: bool = True) -> Request:
    """Record a finished job as the request's result, with who accepted it, when, and their comment. Under a
    policy with `approval = "second_person"` the job's executor is refused (Forbidden): four eyes. With `land`
    (always, through the API) the model's next version is built from it and checked first; land=False records
    the acceptance alone, for fixture stores whose model files are never loaded (as register_model's `inspect`)."""
    req = get_request(s, request_id)
    job = s.get(Job, job_id)
    if job is None or job.request_id != request_id:
        raise NotFound(f"job {job_id} is not a job of request {request_id}")
    if job.status != "succeeded":
        raise SpecError(f"job {job_id} is {job.status}; only a finished job can be accepted")
    rule = approval_rule(load_policy(req.policy))
    executor = job_executor(req, job)
    if rule == "second_person" and actor == executor:
        raise Forbidden(f"policy {req.policy} requires a second person to accept: {actor} ran job {job_id}, so "
                        "another approver must accept it")
    comment = (comment or "").strip() or None
    # The model's next version: built on the current one and checked against every request it carries
    # (engine.control.service.versions); refused, naming the request that leaks again, when it fails.
    version, landing = versions.land_job(s, req, job, actor) if land else (None, [(req, job)])
    for landed_req, landed_job in landing:  # a batch lands, and is accepted, together
        landed_req.accepted_job_id = landed_job.id
        landed_req.accepted_by, landed_req.accepted_at, landed_req.accept_comment = actor, clock.now(), comment
        s.add(landed_req)
        audit.append(s, "request.accept", f"request:{landed_req.id}", {
            "job": landed_job.id, "verdict": landed_job.verdict, "executed_by": job_executor(landed_req, landed_job),
            "policy": landed_req.policy, "approval": rule, "comment": comment,
            **({"version": version.number} if version is not None else {})}, actor=actor)
    s.commit()
    return req


def close_request(s: Session, request_id: int, actor: str = "operator", report: dict | None = None,
                  full_check: bool = False) -> Request:
    """Purge the raw texts, keep their hashes, metrics and masked evidence (engine.control.privacy: also the cached
    'before' generations, artifact files holding the texts, work dirs and the WAL); then, into `report` when
    given, scan for the texts while they are still known: the database file and its WAL, and with
    `full_check` every file under the data, artifacts and state dirs (which may take a while)."""
    req = get_request(s, request_id)
    if req.status == "closed":
        return req
    active = s.exec(select(Job).where(Job.request_id == request_id, Job.status.in_(ACTIVE))).first()
    if active is not None:
        raise SpecError(f"request {request_id} has job {active.id} {active.status}; cancel it before closing")
    rows = request_rows(s, request_id)
    sensitive = rows.get("sensitive") or []
    mask_terms = privacy.request_strings(rows)
    _mask_evidence(s, request_id, mask_terms)
    for data in s.exec(select(RequestData).where(RequestData.request_id == request_id)):
        data.rows = None
        s.add(data)
    for job in s.exec(select(Job).where(Job.request_id == request_id)):
        job.hyper = dict(sorted(audit_hyper(job.hyper).items()))
        s.add(job)
    purged = privacy.purge_request(s, request_id, rows)
    if req.spec.get("warnings"):  # the overlap warning quotes rows: keep only its first sentence
        req.spec = {**req.spec, "warnings": [w.split(': "', 1)[0] for w in req.spec["warnings"]]}
    req.title = mask_sensitive(req.title, sensitive) if sensitive else req.title
    req.status, req.closed_at = "closed", clock.now()
    s.add(req)
    audit.append(s, "request.close", f"request:{request_id}", {
        "purged": True, "baseline_cache_rows": purged["baseline_cache_rows"],
        "artifact_files_removed": len(purged["artifact_files_removed"]),
        "work_dirs_removed": purged["work_dirs_removed"]}, actor=actor)
    s.commit()
    wal_truncated = privacy.checkpoint_wal(s)
    if report is not None:
        report.update(purged, wal_truncated=wal_truncated,
                      check=privacy.scan(mask_terms, privacy.paths_for(s) if full_check else None,
                                         privacy.db_path_of(s)))
    return req


def _mask_evidence(s: Session, request_id: int, mask_terms: list[str]) -> None:
    for ev in s.exec(select(Evidence).join(Job).where(Job.request_id == request_id)):
        ev.prompt = mask_sensitive(ev.prompt, mask_terms)
        ev.output_before, masked_before = mask_with_spans(ev.output_before, mask_terms)
        ev.output_after, masked_after = mask_with_spans(ev.output_after, mask_terms)
        # The old offsets point into the texts just masked: a leaked output now highlights its masked parts.
        ev.spans = {"before": [list(x) for x in masked_before] if ev.leaked_before else [],
                    "after": [list(x) for x in masked_after] if ev.leaked_after else []}
        s.add(ev)


def purge_check(s: Session, request_id: int, forget: list[dict] | None, sensitive: list[str] | None,
                strings: list[str]) -> dict:
    """Scan the database, its WAL and the data dir for a request's texts. An open request is checked
    against the texts the engine holds; a closed one against the operator's copy, whose forget and
    sensitive sets are compared with the SHA-256 hashes kept at close."""
    req = get_request(s, request_id)
    stored = {d.kind: d for d in s.exec(select(RequestData).where(RequestData.request_id == request_id))}
    given = {"forget": forget, "sensitive": sensitive}
    matches = {kind: (rows_sha256(rows) == stored[kind].sha256 if kind in stored else None)
               for kind, rows in given.items() if rows is not None}
    rows = {k: v for k, v in given.items() if v is not None}
    if req.status == "open" and not rows and not strings:
        rows = {k: v for k, v in request_rows(s, request_id).items() if k in ("forget", "sensitive")}
    needles = privacy.request_strings(rows) + [x for x in strings if x.strip()]
    if not needles:
        raise SpecError("nothing to check: give the request's spec (forget, sensitive) or strings")
    return {"request_id": request_id, "status": req.status, "matches_request": matches,
            **privacy.scan(needles, privacy.paths_for(s), privacy.db_path_of(s))}
