"""What the API does to the store: every write of the engine goes through here, one transaction each."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, or_
from sqlmodel import Session, select

from engine.compute.methods.base import default_method_for_tier, get_method, validate_hyper
from engine.control.registry import inspect_source
from engine.schema.datasets import as_qa, read_jsonl, rows_sha256
from engine.schema.errors import SpecError
from engine.schema.policy import load_policy
from engine.schema.spec import DATA_KINDS, parse_spec, resolve_rows
from store import audit
from store.models import (
    Artifact,
    AuditEvent,
    Evidence,
    Job,
    Metric,
    ModelEntry,
    Request,
    RequestData,
    StageResult,
)
from store.paths import get_paths

TERMINAL = ("succeeded", "failed", "cancelled")


class NotFound(LookupError):
    pass


def now() -> datetime:
    return datetime.now(UTC)  # aware: sqlmodel >= 0.0.50 refuses naive datetimes


# ---------------------------------------------------------------- models

def model_out(m: ModelEntry) -> dict:
    return {"name": m.name, "source": m.source, "kind": m.kind, "weights_sha256": m.weights_sha256,
            "params": m.params, "options": json.loads(m.options_json), "retain_path": m.retain_path,
            "holdout_path": m.holdout_path, "created_at": m.created_at.isoformat()}


def register_model(s: Session, name: str, source: str, options: dict | None = None,
                   retain_path: str | None = None, holdout_path: str | None = None,
                   report: dict | None = None, inspect=None) -> ModelEntry:
    """Validate the source (in a subprocess: config, tokenizer, parameters, weights hash; a GGUF file is
    converted once into the model cache) and register it. Nothing is written when the check fails.
    `report` receives what the check found (chat template, model type); `inspect` replaces the check
    (engine.control.registry.inspect_source) for test fixtures whose model files are never loaded."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SpecError(f"model name '{name}': use letters, digits, '-', '_' and '.' only")
    info = (inspect or inspect_source)(source, options, converted_root())
    if report is not None:
        report.update({k: info.get(k) for k in ("chat_template", "model_type", "converted")})
    entry = s.exec(select(ModelEntry).where(ModelEntry.name == name)).first() or ModelEntry(name=name, source="")
    entry.source, entry.kind = info["source"], info["kind"]
    entry.weights_sha256, entry.params = info["weights_sha256"], info["params"]
    entry.options_json = json.dumps(options or {}, sort_keys=True)
    entry.retain_path, entry.holdout_path = retain_path, holdout_path
    s.add(entry)
    s.flush()
    audit.append(s, "model.register", f"model:{name}", {"source": entry.source, "sha256": entry.weights_sha256})
    s.commit()
    return entry


def converted_root() -> Path:
    """Where GGUF sources are converted to HF directories, one folder per GGUF sha256."""
    return get_paths().converted


def get_model(s: Session, name: str) -> ModelEntry:
    entry = s.exec(select(ModelEntry).where(ModelEntry.name == name)).first()
    if entry is None:
        known = ", ".join(m.name for m in s.exec(select(ModelEntry))) or "none registered"
        raise SpecError(f"model: unknown model '{name}' (known: {known})")
    return entry


# ---------------------------------------------------------------- requests

def create_request(s: Session, body: dict, method: str | None = None, hyper: dict | None = None,
                   start: bool = True, auto_escalate: bool = False, actor: str = "operator") -> tuple[Request, Job | None]:
    """Validate everything (spec, files, model, method, hyperparameters, policy) before writing anything."""
    spec = parse_spec(body)
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

    spec_public = spec.model_dump(exclude={"forget", "retain", "holdout", "probes", "sensitive"})
    spec_public["warnings"] = warnings
    req = Request(title=spec.title, reference=spec.reference, intention=spec.intention, model_name=spec.model,
                  policy=spec.policy, spec_json=json.dumps(spec_public), auto_escalate=auto_escalate)
    s.add(req)
    s.flush()
    for kind in DATA_KINDS:
        if rows[kind] is not None:
            s.add(RequestData(request_id=req.id, kind=kind, rows_json=json.dumps(rows[kind]),
                              sha256=rows_sha256(rows[kind]), count=len(rows[kind])))
    s.add(RequestData(request_id=req.id, kind="sensitive", rows_json=json.dumps(spec.sensitive),
                      sha256=rows_sha256(spec.sensitive), count=len(spec.sensitive)))
    audit.append(s, "request.create", f"request:{req.id}", {
        "reference": spec.reference, "intention": spec.intention, "model": spec.model,
        "forget_sha256": rows_sha256(rows["forget"]), "warnings": len(warnings)}, actor=actor)
    job = None
    if start:
        job = _add_job(s, req, get_method(job_method).tier, job_method, hyper, actor)
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


def _add_job(s: Session, req: Request, tier: int, method: str, hyper: dict, actor: str) -> Job:
    job = Job(request_id=req.id, tier=tier, method=method, hyper_json=json.dumps(hyper, sort_keys=True),
              seed=int(hyper.get("seed", 0)))
    s.add(job)
    req.current_tier = max(req.current_tier, tier)
    s.add(req)
    s.flush()
    audit.append(s, "job.queue", f"job:{job.id}", {"request": req.id, "tier": tier, "method": method,
                                                     "hyper": audit_hyper(hyper)}, actor=actor)
    return job


def audit_hyper(hyper: dict) -> dict:
    """Hyperparameters as the immutable audit chain may keep them: strings a method takes from the request
    (the guard's extra_strings) are personal data, so the chain records only their count and hash."""
    return {k: {"count": len(v), "sha256": rows_sha256(v)} if "strings" in k and isinstance(v, list) else v
            for k, v in hyper.items()}


def get_request(s: Session, request_id: int) -> Request:
    req = s.get(Request, request_id)
    if req is None:
        raise NotFound(f"request {request_id} not found")
    return req


def submit_job(s: Session, request_id: int, method: str, hyper: dict | None, actor: str = "operator") -> Job:
    req = get_request(s, request_id)
    if req.status != "open":
        raise SpecError(f"request {request_id} is closed; its texts are purged and no job can run on it")
    hyper = validate_hyper(method, hyper)
    job = _add_job(s, req, get_method(method).tier, method, hyper, actor)
    s.commit()
    return job


def escalate(s: Session, request_id: int, method: str | None = None, hyper: dict | None = None,
             actor: str = "operator") -> Job:
    """The next tier's default method (or the named one); each tier's job starts from the base model."""
    req = get_request(s, request_id)
    if method is None:
        tier = req.current_tier + 1
        if tier > 3:
            raise SpecError(f"request {request_id} is already at the top tier (3)")
        method = default_method_for_tier(tier)
    return submit_job(s, request_id, method, hyper, actor)


def close_request(s: Session, request_id: int, actor: str = "operator", report: dict | None = None,
                  full_check: bool = False) -> Request:
    """Purge the raw texts, keep their hashes, metrics and masked evidence (engine.control.privacy: also the cached
    'before' generations, artifact files holding the texts, work dirs and the WAL); then, into `report` when
    given, scan for the texts while they are still known: the database file and its WAL, and with
    `full_check` every file under the data, artifacts and state dirs (which may take a while)."""
    from engine.control import privacy
    from engine.leaks import mask_sensitive, mask_with_spans

    req = get_request(s, request_id)
    if req.status == "closed":
        return req
    active = s.exec(select(Job).where(Job.request_id == request_id, Job.status.in_(("queued", "running")))).first()
    if active is not None:
        raise SpecError(f"request {request_id} has job {active.id} {active.status}; cancel it before closing")
    rows = request_rows(s, request_id)
    sensitive = rows.get("sensitive") or []
    mask_terms = privacy.request_strings(rows)
    for ev in s.exec(select(Evidence).join(Job).where(Job.request_id == request_id)):
        ev.prompt = mask_sensitive(ev.prompt, mask_terms)
        ev.output_before, masked_before = mask_with_spans(ev.output_before, mask_terms)
        ev.output_after, masked_after = mask_with_spans(ev.output_after, mask_terms)
        # The old offsets point into the texts just masked: a leaked output now highlights its masked parts.
        ev.spans_json = json.dumps({"before": [list(x) for x in masked_before] if ev.leaked_before else [],
                                    "after": [list(x) for x in masked_after] if ev.leaked_after else []})
        s.add(ev)
    for data in s.exec(select(RequestData).where(RequestData.request_id == request_id)):
        data.rows_json = None
        s.add(data)
    for job in s.exec(select(Job).where(Job.request_id == request_id)):
        job.hyper_json = json.dumps(audit_hyper(json.loads(job.hyper_json)), sort_keys=True)
        s.add(job)
    purged = privacy.purge_request(s, request_id, rows)
    spec = json.loads(req.spec_json)
    if spec.get("warnings"):  # the overlap warning quotes rows: keep only its first sentence
        spec["warnings"] = [w.split(': "', 1)[0] for w in spec["warnings"]]
        req.spec_json = json.dumps(spec)
    req.title = mask_sensitive(req.title, sensitive) if sensitive else req.title
    req.status, req.closed_at = "closed", now()
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


def accept_job(s: Session, request_id: int, job_id: int, actor: str = "operator") -> Request:
    req = get_request(s, request_id)
    job = s.get(Job, job_id)
    if job is None or job.request_id != request_id:
        raise NotFound(f"job {job_id} is not a job of request {request_id}")
    if job.status != "succeeded":
        raise SpecError(f"job {job_id} is {job.status}; only a finished job can be accepted")
    req.accepted_job_id = job_id
    s.add(req)
    audit.append(s, "request.accept", f"request:{request_id}", {"job": job_id, "verdict": job.verdict}, actor=actor)
    s.commit()
    return req


def request_rows(s: Session, request_id: int) -> dict[str, list | None]:
    out: dict[str, list | None] = {}
    for data in s.exec(select(RequestData).where(RequestData.request_id == request_id)):
        out[data.kind] = json.loads(data.rows_json) if data.rows_json is not None else None
    return out


def request_out(r: Request) -> dict:
    spec = json.loads(r.spec_json)
    return {"id": r.id, "title": r.title, "reference": r.reference, "intention": r.intention, "model": r.model_name,
            "policy": r.policy, "status": r.status, "current_tier": r.current_tier,
            "accepted_job_id": r.accepted_job_id, "verdict": r.verdict, "warnings": spec.get("warnings", []),
            "created_at": r.created_at.isoformat(), "closed_at": r.closed_at.isoformat() if r.closed_at else None}


JOB_SORTS = ("id", "created", "updated", "status", "verdict", "model", "method", "title", "tier")
REQUEST_SORTS = ("id", "created", "updated", "status", "verdict", "model", "title", "reference", "intention", "tier")


def parse_when(value: str | None, field: str, end: bool = False) -> datetime | None:
    """A `since`/`until` filter: a date (YYYY-MM-DD, the whole day in UTC: `until` includes it) or an ISO
    datetime (naive means UTC). Returns the bound as an aware datetime; `end` bounds are exclusive."""
    from datetime import date, timedelta

    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"{field}: '{value[:40]}' is not a date (YYYY-MM-DD) or an ISO datetime") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment + timedelta(microseconds=1) if end else moment


def _sorted(stmt, key, tiebreak, order: str, nullable: bool = False):
    """ORDER BY key then id, both in `order`; a nullable key's NULLs (no verdict yet) last either way. (Only
    then: the extra term would keep SQLite from walking an index such as created_at's.)"""
    first = [key.is_(None)] if nullable else []
    if order == "asc":
        return stmt.order_by(*first, key.asc(), tiebreak.asc())
    return stmt.order_by(*first, key.desc(), tiebreak.desc())


def list_requests(s: Session, status: str | None = None, q: str | None = None, limit: int = 100,
                  offset: int = 0, sort: str = "id", order: str = "desc", since: datetime | None = None,
                  until: datetime | None = None) -> dict:
    """Requests, paged; `since` (inclusive) and `until` (exclusive) bound the filing time. Sort keys:
    REQUEST_SORTS (updated: closing time, else the newest activity of its jobs, else filing time)."""
    stmt = select(Request)
    if status:
        stmt = stmt.where(Request.status.in_(status.split(",")))
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Request.title.like(like), Request.reference.like(like)))
    if since is not None:
        stmt = stmt.where(Request.created_at >= since)
    if until is not None:
        stmt = stmt.where(Request.created_at < until)
    if sort == "updated":
        latest = (select(func.max(func.coalesce(Job.finished_at, Job.started_at, Job.created_at)))
                  .where(Job.request_id == Request.id).correlate(Request).scalar_subquery())
        key = func.coalesce(Request.closed_at, latest, Request.created_at)
    else:
        key = {"id": Request.id, "created": Request.created_at, "status": Request.status,
               "verdict": Request.verdict, "model": Request.model_name, "title": Request.title,
               "reference": Request.reference, "intention": Request.intention,
               "tier": Request.current_tier}[sort]
    with read_snapshot(s):
        total = s.exec(select(func.count()).select_from(stmt.subquery())).one()
        rows = s.exec(_sorted(stmt, key, Request.id, order, sort == "verdict").offset(offset).limit(limit)).all()
    return {"total": total, "items": [request_out(r) for r in rows]}


@contextmanager
def read_snapshot(s: Session):
    """Run the enclosed reads in one SQLite read transaction: a page and its total come from the same
    snapshot, however many writes land in between (the driver otherwise starts no transaction for a
    SELECT, so each statement sees the newest commit)."""
    raw = s.connection().connection.dbapi_connection
    if raw is None or getattr(raw, "in_transaction", True):
        yield
        return
    raw.execute("BEGIN")
    try:
        yield
    finally:
        if raw.in_transaction:
            raw.execute("COMMIT")  # read-only: only ends the snapshot


def request_detail(s: Session, request_id: int) -> dict:
    req = get_request(s, request_id)
    jobs = s.exec(select(Job).where(Job.request_id == request_id).order_by(Job.id)).all()
    data = s.exec(select(RequestData).where(RequestData.request_id == request_id)).all()
    events = s.exec(select(AuditEvent).where(or_(AuditEvent.subject == f"request:{request_id}",
                                                 AuditEvent.subject.in_([f"job:{j.id}" for j in jobs])))
                    .order_by(AuditEvent.id)).all()
    return {
        "request": request_out(req),
        "jobs": [{**job_out(j, req), "stages": stage_summaries(s, j.id)} for j in jobs],
        "data": [{"kind": d.kind, "count": d.count, "sha256": d.sha256, "purged": d.rows_json is None} for d in data],
        "audit": [audit_out(e) for e in events],
    }


# ---------------------------------------------------------------- jobs

def job_out(j: Job, req: Request | None = None) -> dict:
    return {"id": j.id, "request_id": j.request_id, "tier": j.tier, "method": j.method,
            "hyper": json.loads(j.hyper_json), "seed": j.seed, "priority": j.priority, "status": j.status,
            "verdict": j.verdict, "phase": j.phase, "step": j.step, "total": j.total, "loss": j.loss,
            "eta_s": j.eta_s, "device": j.device, "slot": j.slot, "error": j.error,
            "created_at": j.created_at.isoformat(),
            "started_at": j.started_at.isoformat() if j.started_at else None,
            "finished_at": j.finished_at.isoformat() if j.finished_at else None,
            "request_title": req.title if req else None, "model": req.model_name if req else None}


def get_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(s: Session, status: str | None = None, request_id: int | None = None, method: str | None = None,
              model: str | None = None, verdict: str | None = None, q: str | None = None,
              limit: int = 100, offset: int = 0, order: str = "desc", sort: str = "id",
              since: datetime | None = None, until: datetime | None = None) -> dict:
    """Jobs, paged; `since` (inclusive) and `until` (exclusive) bound the creation time. Sort keys:
    JOB_SORTS (updated: finished, else started, else created; model and title are the request's)."""
    stmt = select(Job, Request).join(Request, Request.id == Job.request_id)
    if status:
        stmt = stmt.where(Job.status.in_(status.split(",")))
    if request_id is not None:
        stmt = stmt.where(Job.request_id == request_id)
    if method:
        stmt = stmt.where(Job.method == method)
    if model:
        stmt = stmt.where(Request.model_name == model)
    if verdict:
        stmt = stmt.where(Job.verdict == verdict)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Request.title.like(like), Request.reference.like(like)))
    if since is not None:
        stmt = stmt.where(Job.created_at >= since)
    if until is not None:
        stmt = stmt.where(Job.created_at < until)
    key = {"id": Job.id, "created": Job.created_at,
           "updated": func.coalesce(Job.finished_at, Job.started_at, Job.created_at), "status": Job.status,
           "verdict": Job.verdict, "model": Request.model_name, "method": Job.method, "title": Request.title,
           "tier": Job.tier}[sort]
    with read_snapshot(s):
        total = s.exec(select(func.count()).select_from(stmt.subquery())).one()
        rows = s.exec(_sorted(stmt, key, Job.id, order, sort == "verdict").offset(offset).limit(limit)).all()
    return {"total": total, "items": [job_out(j, r) for j, r in rows]}


def stage_summaries(s: Session, job_id: int) -> list[dict]:
    out = []
    for st in s.exec(select(StageResult).where(StageResult.job_id == job_id).order_by(StageResult.id)):
        metrics = s.exec(select(Metric).where(Metric.stage_result_id == st.id).order_by(Metric.id)).all()
        out.append({"stage": st.stage, "verdict": st.verdict, "required": st.required, "policy": st.policy_name,
                    "policy_content": json.loads(st.policy_json), "note": st.note,
                    "metrics": [{"name": m.name, "before": m.before, "after": m.after,
                                 "delta": (m.after - m.before) if m.after is not None and m.before is not None else None,
                                 "threshold": m.threshold, "rule": m.rule, "passed": m.passed, "ci_low": m.ci_low,
                                 "ci_high": m.ci_high, "n": m.n, "note": m.note} for m in metrics]})
    return out


def evidence_out(e: Evidence) -> dict:
    """One evidence row; `spans_before`/`spans_after` are the leaking parts of each output as [start, end]
    character offsets, or None where unknown (rows from an older engine)."""
    spans = json.loads(e.spans_json) if e.spans_json else {}
    return {"stage": e.stage, "attack": e.attack, "prompt": e.prompt, "output_before": e.output_before,
            "output_after": e.output_after, "leaked_before": e.leaked_before, "leaked_after": e.leaked_after,
            "spans_before": spans.get("before"), "spans_after": spans.get("after")}


def job_detail(s: Session, job_id: int, evidence_limit: int = 200) -> dict:
    job = get_job(s, job_id)
    req = s.get(Request, job.request_id)
    evidence = s.exec(select(Evidence).where(Evidence.job_id == job_id).order_by(Evidence.id).limit(evidence_limit))
    artifacts = s.exec(select(Artifact).where(Artifact.job_id == job_id))
    return {
        "job": job_out(job, req),
        "stages": stage_summaries(s, job_id),
        "progress": json.loads(job.progress_json),
        "result": json.loads(job.result_json),
        "evidence": [evidence_out(e) for e in evidence],
        "artifacts": [{"kind": a.kind, "path": a.path, "sha256": a.sha256, "manifest": json.loads(a.manifest_json)}
                      for a in artifacts],
    }


def cancel_job(s: Session, job_id: int, actor: str = "operator") -> Job:
    job = get_job(s, job_id)
    if job.status in TERMINAL:
        return job
    job.status, job.finished_at = "cancelled", now()
    job.error = job.error or "cancelled by the operator"
    s.add(job)
    audit.append(s, "job.cancel", f"job:{job_id}", {}, actor=actor)
    s.commit()
    return job


def audit_out(e: AuditEvent) -> dict:
    return {"id": e.id, "ts": e.ts, "actor": e.actor, "action": e.action, "subject": e.subject,
            "detail": json.loads(e.detail_json), "hash": e.hash}


def qa_rows(rows: list | None) -> list[dict]:
    return as_qa(rows) if rows else []


def resume_job(s: Session, job_id: int, actor: str = "operator") -> Job:
    """Queue an interrupted (or failed) job again; the worker continues from its last checkpoint if any."""
    job = get_job(s, job_id)
    if job.status not in ("interrupted", "failed"):
        raise SpecError(f"job {job_id} is {job.status}; only an interrupted or failed job can be resumed")
    req = get_request(s, job.request_id)
    if req.status != "open":
        raise SpecError(f"request {req.id} is closed; its texts are purged and job {job_id} cannot run again")
    job.status, job.error, job.finished_at = "queued", None, None
    s.add(job)
    audit.append(s, "job.resume", f"job:{job_id}", {}, actor=actor)
    s.commit()
    return job
