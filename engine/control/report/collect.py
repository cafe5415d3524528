"""The report's facts, read from the store through the service layer, every free text masked.

Raw personal data never leaves this module: the request's sensitive strings are kept only masked
("4••••••••••2") and every free text (evidence, title, audit details, errors, hyperparameters, manifests) goes
through `engine.leaks.mask_sensitive` with the sensitive strings and the forget answers, as `close_request`
does. The artifact to sign is re-hashed on disk here, so building the document reads nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select

from engine.control import service
from engine.control.report.lineage import collect_lineage
from engine.schema.datasets import as_qa
from store import audit
from store.models import ModelEntry

HASH_KEYS = ("sha256", "hash", "head")  # keys whose string values are hashes: never masked
ARTIFACT_REHASH_LIMIT = 4 << 30  # bytes: larger artifacts are not re-hashed while the report waits


def mask_string(value: str) -> str:
    """A sensitive string for display: first and last character kept, the rest as bullets."""
    if len(value) <= 4:
        return "•" * len(value)
    return value[0] + "•" * (len(value) - 2) + value[-1]


def _masker(terms: list[str]):
    from engine.leaks import mask_sensitive

    terms = [t for t in dict.fromkeys(terms) if t]

    def mask(obj, key: str = ""):
        if key == "extra_strings" and isinstance(obj, list):  # the guard's extra banned strings: never shown
            return [f"({len(obj)} strings withheld)"] if obj else []
        if isinstance(obj, str):
            if not terms or any(key.endswith(k) for k in HASH_KEYS):
                return obj
            return mask_sensitive(obj, terms)
        if isinstance(obj, dict):
            return {k: mask(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mask(v, key) for v in obj]
        return obj

    return mask


def collect(s: Session, request_id: int) -> dict:
    """Everything the report shows about one request (raises NotFound)."""
    detail = service.request_detail(s, request_id)
    rows = service.request_rows(s, request_id)
    sensitive = [str(x) for x in (rows.get("sensitive") or [])]
    forget = rows.get("forget") or []
    # As on close: the sensitive strings and the forget answers; also the rows' own "value" fields when given.
    terms = sensitive + [r["answer"] for r in as_qa(forget)]
    terms += [r["value"] for r in forget if isinstance(r.get("value"), str) and r["value"].strip()]
    mask = _masker(terms)

    req = dict(detail["request"])
    for key in ("title", "reference", "warnings"):
        req[key] = mask(req[key])
    if rows.get("sensitive") is None:
        # Closed: the strings that would mask the title are purged, and a title often names the person.
        req["title"] = None
    data = {d["kind"]: d for d in detail["data"]}
    jobs = [_job_facts(s, j["id"], mask) for j in detail["jobs"]]
    model = s.exec(select(ModelEntry).where(ModelEntry.name == req["model"])).first()
    chain = audit.verify(s)
    events = [{**e, "detail": mask(e["detail"])} for e in detail["audit"]]

    accepted = next((j for j in jobs if j["job"]["id"] == req["accepted_job_id"]), None)
    candidate = accepted or next((j for j in reversed(jobs)
                                  if j["job"]["status"] == "succeeded" and j["job"]["verdict"] == "pass"), None)
    for art in candidate["artifacts"] if candidate else []:
        art["on_disk"] = artifact_check(art)
    return {
        "request": req, "jobs": jobs, "data": data, "events": events,
        "sensitive_masked": [mask_string(x) for x in sensitive] if rows.get("sensitive") is not None else None,
        "model": service.model_view(model).model_dump() if model else None,
        "chain": {"ok": chain.ok, "rows": chain.rows, "head": chain.head, "bad_id": chain.bad_id,
                  "reason": chain.reason},
        "accepted": accepted, "candidate": candidate,
        "n_forget": data.get("forget", {}).get("count", 0), "n_retain": data.get("retain", {}).get("count", 0),
        # The retain questions, masked, to name the rows each job trained on; None once purged.
        "retain_questions": ([mask(r["question"]) for r in as_qa(rows["retain"])] if rows.get("retain") is not None
                             else None),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": _version(),
        "lineage": collect_lineage(s, req, mask),
    }


def _job_facts(s: Session, job_id: int, mask) -> dict:
    """One job with its stages, progress, result, evidence (all of it) and artifacts, texts masked."""
    jd = service.job_detail(s, job_id, evidence_limit=100_000)
    job = dict(jd["job"])
    # A tuned job ran the winning trial's hyperparameters, not the ones it was queued with.
    job["hyper"] = mask(((jd["result"] or {}).get("tuning") or {}).get("hyper") or job["hyper"])
    job["error"] = mask(job["error"]) if job["error"] else None
    job["request_title"] = None
    return {
        "job": job, "stages": jd["stages"], "progress": jd["progress"], "result": jd["result"],
        "evidence": [{**e, "prompt": mask(e["prompt"]), "output_before": mask(e["output_before"]),
                      "output_after": mask(e["output_after"])} for e in jd["evidence"]],
        "artifacts": [{**a, "manifest": mask(a["manifest"])} for a in jd["artifacts"]],
        "trials": jd.get("trials") or [],  # a tuned job's trials: hyperparameters and proxy metrics, no texts
    }


def artifact_check(art: dict) -> tuple[str, str]:
    """Re-hash the artifact folder on disk against its recorded hash (small enough ones): (words, style)."""
    path = Path(art["path"])
    if not path.is_dir():
        return ("not found on this machine", "skip")
    try:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if size > ARTIFACT_REHASH_LIMIT:
            return (f"not re-hashed ({size / 2**30:.1f} GiB)", "skip")
        from engine.artifacts import tree_sha256

        ok = tree_sha256(path) == art["sha256"]
    except OSError as exc:
        return (f"cannot be read: {exc.strerror}", "fail")
    return ("re-hashed now: matches" if ok else "re-hashed now: DIFFERS from the record", "pass" if ok else "fail")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("expunge")
    except Exception:  # noqa: BLE001 - running from a source tree without an installed distribution
        return "0.1.0"
