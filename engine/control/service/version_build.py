"""Building a model version's folder for engine.control.service.versions: what the build subprocess
(engine.control.lineage) gets (the parent, the job's artifact, the regression prompts of every request the
parent carries and of the landing ones, the control set), and sealing the built folder into place. Reads the
database; writes only the version's folder."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sqlmodel import Session, select

from engine.artifacts import tree_sha256
from engine.control import lineage, sealed
from engine.control.baseline import GENERAL_TEXT
from engine.control.service.lookup import request_rows
from engine.leaks import key_spans
from engine.model_files import converted_dir, weight_files, weights_sha256
from engine.schema.datasets import as_qa, read_jsonl, rows_sha256
from engine.schema.errors import SpecError
from engine.schema.policy import load_policy
from store.files import publish_folder
from store.models import Artifact, Job, Metric, ModelEntry, ModelVersion, RegressionData, Request, StageResult
from store.paths import get_paths

GUARD_FILE = "guard.fernet"
MANIFEST = "manifest.json"


def versions_root() -> Path:
    return get_paths().models / "versions"


def source_ref(model: ModelEntry, v: ModelVersion) -> dict:
    """How the build subprocess loads version `v` (with its guard unsealed)."""
    if v.number == 0:
        converted = str(converted_dir(get_paths().converted, model.weights_sha256)) if model.kind == "gguf" else None
        return {"source": model.source, "kind": model.kind, "converted": converted, "guard": None}
    guard_file = Path(v.path) / GUARD_FILE
    guard = sealed.unseal(guard_file.read_text()) if guard_file.is_file() else None
    return {"source": v.path, "kind": "hf", "converted": None, "guard": guard}


def _control_set(model: ModelEntry) -> tuple[dict, str]:
    retain = read_jsonl(Path(model.retain_path), "retain (the model's registered sample)") if model.retain_path else None
    body = {"retain": as_qa(retain) if retain else None, "general_text": GENERAL_TEXT}
    return body, rows_sha256([body["retain"], body["general_text"]])


def _job_leak_rate(s: Session, job_id: int) -> float | None:
    row = s.exec(select(Metric).join(StageResult).where(StageResult.job_id == job_id, StageResult.stage == "unit",
                                                        Metric.name == "leak_rate")).first()
    return row.after if row is not None else None


def _incoming_data(s: Session, req: Request) -> tuple[dict, list[dict] | None]:
    """The accepting request's regression data ({prompts, spans}), and its gold answers for the answer budget:
    from its sealed row when it has one (a rebuild after a rollback, also of a closed request), else from its
    texts (open)."""
    kept = s.exec(select(RegressionData).where(RegressionData.request_id == req.id)).first()
    if kept is not None:
        return sealed.unseal(kept.token), None
    rows = request_rows(s, req.id)
    if rows.get("forget") is None:
        raise SpecError(f"request {req.id} is closed and keeps no regression data: it cannot land in a version")
    forget = as_qa(rows["forget"])
    spans = list(rows.get("sensitive") or []) or key_spans(r["answer"] for r in forget if r.get("answer"))
    data = {"prompts": [{"question": r["question"], "verbatim": bool(r.get("verbatim"))} for r in forget],
            "spans": spans, "reference": req.reference}
    return data, [{"answer": r["answer"]} for r in forget]


def carried(s: Session, parent: ModelVersion, landing: set[int]) -> tuple[list[dict], list[dict], list[int]]:
    """The build's regression entries and the judge's rows for the requests the parent carries; ids whose data
    was purged (`purge --with-regression-data`) are skipped and listed."""
    entries, meta, skipped = [], [], []
    for rid in parent.request_ids or []:
        if rid in landing:
            continue
        kept = s.exec(select(RegressionData).where(RegressionData.request_id == rid)).first()
        if kept is None:
            skipped.append(rid)
            continue
        data = sealed.unseal(kept.token)
        entries.append({"request_id": rid, "prompts": data["prompts"], "spans": data["spans"],
                        "max_new_tokens": data.get("max_new_tokens")})
        meta.append({"request_id": rid, "reference": data.get("reference", ""), "limit": data.get("limit", 0.05),
                     "landed": data.get("landed"), "incoming": False})
    return entries, meta, skipped


def build_version(s: Session, model: ModelEntry, parent: ModelVersion, v0: ModelVersion,
                  landing: list[tuple[Request, Job]]) -> dict:
    """Build and judge `parent` + the change of the landing jobs (one job, or a batch's members, which share
    one artifact) in a private folder beside the versions; returns the build's answer with `judgement`, `tmp`
    (the folder) and what the version rows need. Nothing is written to the database here; the caller keeps or
    removes the folder."""
    job = landing[0][1]
    art = s.exec(select(Artifact).where(Artifact.job_id == job.id)).first()
    if art is None:
        raise SpecError(f"job {job.id} has no artifact to build a version from")
    if not (Path(art.path) / "PURGED.json").exists() and tree_sha256(Path(art.path)) != art.sha256:
        raise SpecError(f"job {job.id}'s artifact {art.path} has changed since it was written (sha256 mismatch)")
    policy = load_policy(landing[0][0].policy)
    entries, meta, skipped = carried(s, parent, {r.id for r, _ in landing})
    incoming, answers = {}, []
    for req, member in landing:
        data, gold = _incoming_data(s, req)
        own_rate = _job_leak_rate(s, member.id)
        limit = lineage.leak_limit(load_policy(req.policy))
        incoming[req.id] = {**data, "limit": limit, "own_rate": own_rate}
        entries.append({"request_id": req.id, "prompts": data["prompts"], "spans": data["spans"],
                        "max_new_tokens": data.get("max_new_tokens")})
        meta.append({"request_id": req.id, "reference": req.reference, "limit": limit, "landed": own_rate,
                     "incoming": True})
        answers += gold or []
    control_set, control_key = _control_set(model)
    v0_cached = (v0.control or {}).get("key") == control_key
    root = versions_root() / model.name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    fresh = [rid for rid, d in incoming.items() if d.get("max_new_tokens") is None]
    request = {"options": model.options or {}, "parent": source_ref(model, parent), "artifact_dir": art.path,
               "out_dir": str(tmp), "carried": entries,
               "incoming": {"request_ids": fresh, "answers": answers} if answers else None,
               "control": control_set, "v0": None if v0_cached else source_ref(model, v0)}
    try:
        built = lineage.run_build(request)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    v0_control = (v0.control or {}).get("metrics") if v0_cached else built["v0_control"]
    judgement = lineage.judge(meta, built["regression"], built["control"], v0_control or {}, policy)
    judgement["skipped"] = skipped
    kept = {}
    for req, _ in landing:
        d = incoming[req.id]
        landed = (built["regression"].get(str(req.id)) or {}).get("leak_rate")
        kept[req.id] = {"prompts": d["prompts"], "spans": d["spans"], "reference": req.reference,
                        "max_new_tokens": d.get("max_new_tokens") or built.get("max_new_tokens"),
                        "limit": d["limit"], "landed": max(landed or 0.0, d["own_rate"] or 0.0)}
    return {**built, "judgement": judgement, "tmp": tmp, "art": art, "v0": v0, "v0_control": v0_control,
            "control_key": control_key, "policy": policy["name"], "regression_data": kept}


def seal_folder(tmp: Path, final: Path, built: dict, manifest: dict) -> tuple[str, dict]:
    """Add the sealed guard and the manifest to the built folder and rename it into place: (weights hash,
    manifest). A folder left at `final` by a build the database never recorded is replaced."""
    if built.get("guard"):
        (tmp / GUARD_FILE).write_text(sealed.seal(built["guard"]))
    sha = weights_sha256(weight_files(tmp))
    manifest = {**manifest, "weights_sha256": sha, "tree_sha256": tree_sha256(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    publish_folder(tmp, final, replace=True)
    return sha, manifest
