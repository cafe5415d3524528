"""Model versions (issue 14): a registered model's line v0, v1, …, each accepted erasure one more.

v0 is the base as registered (its row is made the first time the line is written). Accepting a job builds
the next version on the current one (engine.control.lineage runs the build and judges its regression check)
and writes it here: the version's folder appears whole under the data folder's models/versions/NAME/vN
(sealed guard, manifest, weights hash) only once it has passed; the request's forget prompts and key spans are
kept sealed (RegressionData) so that every later version is checked against them, also after the request's
close. A rollback withdraws a version and rebuilds the ones after it on its parent. Every step is audited."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from sqlmodel import Session, select

from engine.control import sealed
from engine.control.service.lookup import get_request
from engine.control.service.models import get_model
from engine.control.service.version_build import build_version, carried, seal_folder, versions_root
from engine.schema.errors import NotFound, SpecError
from engine.schema.views import ModelLine, VersionView
from store import audit
from store.models import Job, ModelEntry, ModelVersion, RegressionData, Request

# One build at a time per model: two accepts racing would both build "the next" version on the same parent.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'demo@v2' (or 'demo@2') -> ('demo', 2); 'demo' -> ('demo', None)."""
    name, sep, tail = ref.partition("@")
    if not sep:
        return name, None
    digits = tail[1:] if tail[:1] in ("v", "V") else tail
    if not digits.isdigit():
        raise SpecError(f"{ref}: a version is written MODEL@vN, e.g. {name}@v1")
    return name, int(digits)


# ---------------------------------------------------------------- reading the line


def _v0(model: ModelEntry) -> ModelVersion:
    return ModelVersion(model_name=model.name, number=0, parent=None, job_id=None, request_ids=[],
                        path=model.source, sha256=model.weights_sha256, status="active",
                        manifest={"kind": model.kind, "source": model.source,
                                  "base_model_sha256": model.weights_sha256},
                        created_at=model.created_at)


def line(s: Session, name: str) -> list[ModelVersion]:
    """Every version of the model, v0 first (v0 unsaved when the line was never written)."""
    model = get_model(s, name)
    rows = list(s.exec(select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.number)))
    if not rows or rows[0].number != 0:
        rows.insert(0, _v0(model))
    return rows


def current(s: Session, name: str) -> ModelVersion:
    """The version new requests start from: the newest active one."""
    return [v for v in line(s, name) if v.status == "active"][-1]


def get_version(s: Session, name: str, number: int) -> ModelVersion:
    for v in line(s, name):
        if v.number == number:
            return v
    raise NotFound(f"model {name} has no version v{number}")


def version_view(v: ModelVersion, current_number: int | None = None) -> VersionView:
    return VersionView(model=v.model_name, number=v.number, parent=v.parent, job_id=v.job_id,
                       request_ids=list(v.request_ids or []), path=v.path, sha256=v.sha256, status=v.status,
                       verdict=v.verdict, manifest=v.manifest or {}, control=v.control or {},
                       regression=v.regression or {}, timings=v.timings or {}, withdrawn_reason=v.withdrawn_reason,
                       created_at=v.created_at, current=v.number == current_number)


def model_line(s: Session, name: str) -> ModelLine:
    versions = line(s, name)
    now = [v for v in versions if v.status == "active"][-1].number
    return ModelLine(model=name, current=now, versions=[version_view(v, now) for v in versions])


def start_version(s: Session, name: str, pinned: int | None) -> int:
    """The version a new request's jobs start from: the spec's pinned one (active), or the current one."""
    if pinned is None:
        return current(s, name).number
    v = get_version(s, name, pinned)
    if v.status != "active":
        raise SpecError(f"model: {name}@v{pinned} was withdrawn ({v.withdrawn_reason}); "
                        f"the current version is v{current(s, name).number}")
    return pinned


def version_source(s: Session, model: ModelEntry, number: int | None) -> dict | None:
    """What a worker loads for a job starting from version `number`: None for v0 (the registered source)."""
    if not number:
        return None
    v = get_version(s, model.name, number)
    if not Path(v.path).is_dir():
        raise SpecError(f"model {model.name}@v{number}: its folder {v.path} is missing")
    return {"source": v.path, "kind": "hf", "weights_sha256": v.sha256, "version": number}


def carried_prompts(s: Session, model: ModelEntry, number: int | None) -> list[dict]:
    """What a job starting from version `number` keeps: the forget prompts and key spans of every request that
    version carries ({request_id, prompts, spans}; none for v0, and none of a request purged with its data)."""
    if not number:
        return []
    entries, _, _ = carried(s, get_version(s, model.name, number), set())
    return [{k: e[k] for k in ("request_id", "prompts", "spans")} for e in entries]


# ---------------------------------------------------------------- building a version


def _make_version(s: Session, model: ModelEntry, parent: ModelVersion, landing: list[tuple[Request, Job]],
                  actor: str, rebuilt_from: int | None = None) -> tuple[ModelVersion | None, dict]:
    """Build, judge and (when it passes) record parent + the landing jobs' change as the model's next version,
    in the caller's transaction. (version, judgement); version None when refused (its folder removed)."""
    built = build_version(s, model, parent, line(s, model.name)[0], landing)
    judgement, tmp = built["judgement"], built["tmp"]
    if judgement["verdict"] != "pass":
        shutil.rmtree(tmp, ignore_errors=True)
        return None, judgement
    number = max(v.number for v in line(s, model.name)) + 1
    if parent.number == 0 and parent.id is None:  # v0's row is written with the line's first version
        s.add(parent)
    v0 = parent if parent.number == 0 else s.exec(select(ModelVersion).where(
        ModelVersion.model_name == model.name, ModelVersion.number == 0)).first()
    if v0 is not None and (v0.control or {}).get("key") != built["control_key"]:
        v0.control = {"key": built["control_key"], "metrics": built["v0_control"]}
        s.add(v0)
    landed_ids = [r.id for r, _ in landing]
    job = landing[0][1]
    carried = [r for r in (parent.request_ids or []) if r not in landed_ids] + landed_ids
    manifest = {"model": model.name, "version": number, "parent": parent.number, "parent_sha256": parent.sha256,
                "base_model_sha256": model.weights_sha256, "job_id": job.id, "job_method": job.method,
                "jobs": [j.id for _, j in landing], "landed_requests": landed_ids,
                "job_artifact_sha256": built["art"].sha256, "job_started_from": landing[0][0].base_version or 0,
                "change_kind": built["kind"], "requests": carried, "rebuilt_from": rebuilt_from,
                "device": built.get("device"), "policy": built["policy"]}
    final = versions_root() / model.name / f"v{number}"
    sha, manifest = seal_folder(tmp, final, built, manifest)
    v = ModelVersion(model_name=model.name, number=number, parent=parent.number, job_id=job.id,
                     request_ids=carried, path=str(final), sha256=sha, status="active", verdict="pass",
                     manifest=manifest, control={"key": built["control_key"], "metrics": built["control"],
                                                 "v0": built["v0_control"]},
                     regression=judgement, timings=built["timings"])
    s.add(v)
    for req, _ in landing:
        kept = s.exec(select(RegressionData).where(RegressionData.request_id == req.id)).first()
        data = built["regression_data"][req.id]
        if kept is None:
            s.add(RegressionData(request_id=req.id, model_name=model.name, token=sealed.seal(data),
                                 prompts=len(data["prompts"]), spans=len(data["spans"])))
        req.landed_version = number
        s.add(req)
    audit.append(s, "model.version", f"model:{model.name}", {
        "version": number, "parent": parent.number, "jobs": [j.id for _, j in landing], "landed": landed_ids,
        "requests": carried, "sha256": sha, "regression": "pass", "rebuilt_from": rebuilt_from,
        "leak_rates": {k: r["leak_rate"] for k, r in judgement["requests"].items()}}, actor=actor)
    return v, judgement


def landing_of(s: Session, req: Request, job: Job) -> list[tuple[Request, Job]]:
    """What accepting `job` lands: the job alone, or every member of its batch (one change, one version); each
    member must have finished and none of their requests may have landed already."""
    pairs = [(req, job)]
    if job.batch:
        pairs = [(s.get(Request, j.request_id), j) for j in (s.get(Job, jid) for jid in job.batch["jobs"])]
    for r, j in pairs:
        if r.landed_version is not None:
            raise SpecError(f"request {r.id} already landed in {r.model_name}@v{r.landed_version}; "
                            "roll that version back first (`expunge models rollback`)")
        if j.status != "succeeded":
            raise SpecError(f"job {j.id} of the batch is {j.status}; a batch lands only when every member finished")
    return pairs


def land_job(s: Session, req: Request, job: Job, actor: str = "operator") -> tuple[ModelVersion, list]:
    """Accepting `job` on `req`: build the model's next version and check it; SpecError naming the failing
    request (or metric) when the regression check fails, after auditing the refusal. (version, the landed
    (request, job) pairs: a batch lands together.) The caller commits."""
    landing = landing_of(s, req, job)
    model = get_model(s, req.model_name)
    with _lock(model.name):
        parent = current(s, model.name)
        version, judgement = _make_version(s, model, parent, landing, actor)
        if version is None:
            s.rollback()
            audit.append(s, "model.version.refuse", f"model:{model.name}", {
                "parent": parent.number, "jobs": [j.id for _, j in landing], "requests": [r.id for r, _ in landing],
                "failures": judgement["failures"]}, actor=actor)
            s.commit()
            raise SpecError(f"accept refused: the new version of {model.name} (v{parent.number} + job {job.id}) "
                            f"fails its regression check: " + "; ".join(judgement["failures"]))
        return version, landing


def rollback(s: Session, name: str, number: int, reason: str, actor: str = "operator") -> dict:
    """Withdraw version `number` and the versions after it; rebuild each later one on the withdrawn one's
    parent by re-applying its job, each re-verified. A rebuild that fails its check leaves its request
    unlanded (named in the answer). Commits."""
    if not reason.strip():
        raise SpecError("rollback: give the reason (--reason)")
    model = get_model(s, name)
    with _lock(name):
        target = get_version(s, name, number)
        if number == 0:
            raise SpecError("v0 is the registered base: it cannot be withdrawn")
        if target.status != "active":
            raise SpecError(f"{name}@v{number} is already withdrawn ({target.withdrawn_reason})")
        later = [v for v in line(s, name) if v.status == "active" and v.number > number]
        base = get_version(s, name, target.parent)
        for v in [target, *later]:
            v.status = "withdrawn"
            v.withdrawn_reason = reason if v is target else f"rebuilt after the rollback of v{number}: {reason}"
            s.add(v)
        for rid in _landed_by(target):  # the requests whose job made the withdrawn version
            req = s.get(Request, rid)
            req.landed_version, req.accepted_job_id = None, None
            s.add(req)
        rebuilt, refused = {}, {}
        for old in later:
            landing = [(s.get(Request, rid), s.get(Job, jid)) for rid, jid in
                       zip(_landed_by(old), old.manifest.get("jobs") or [old.job_id], strict=True)]
            for req, _ in landing:
                req.landed_version = None
            version, judgement = _make_version(s, model, base, landing, actor, rebuilt_from=old.number)
            if version is None:
                for req, _ in landing:
                    req.accepted_job_id = None
                    s.add(req)
                refused[old.number] = judgement["failures"]
                continue
            s.flush()
            rebuilt[old.number] = version.number
            base = version
        audit.append(s, "model.rollback", f"model:{name}", {
            "version": number, "reason": reason, "withdrawn": [number] + [v.number for v in later],
            "rebuilt": {str(k): v for k, v in rebuilt.items()}, "refused": {str(k): v for k, v in refused.items()}},
            actor=actor)
        s.commit()
        return {"model": name, "withdrawn": [number] + [v.number for v in later],
                "rebuilt": {str(k): v for k, v in rebuilt.items()},
                "refused": {str(k): v for k, v in refused.items()}, "current": current(s, name).number}


def _landed_by(v: ModelVersion) -> list[int]:
    """The requests whose job (or batch) made version `v`."""
    return list(v.manifest.get("landed_requests") or v.request_ids[-1:])


def purge_regression_data(s: Session, request_id: int, actor: str = "operator") -> int:
    """Delete a request's sealed regression data: later versions are no longer checked against it. Commits."""
    req = get_request(s, request_id)
    rows = list(s.exec(select(RegressionData).where(RegressionData.request_id == request_id)))
    for row in rows:
        s.delete(row)
    audit.append(s, "request.purge_regression_data", f"request:{req.id}", {"rows": len(rows)}, actor=actor)
    s.commit()
    return len(rows)


def retire_line(s: Session, name: str, actor: str = "operator") -> dict:
    """Retire a model's line: every version after v0 withdrawn, its folder removed, the regression data of its
    requests deleted. New requests start from v0 again. Commits."""
    get_model(s, name)
    with _lock(name):
        withdrawn = []
        for v in line(s, name):
            if v.number == 0 or v.status != "active":
                continue
            v.status, v.withdrawn_reason = "withdrawn", "the model line was retired"
            s.add(v)
            withdrawn.append(v.number)
        for v in line(s, name):
            if v.number and Path(v.path).is_dir():
                shutil.rmtree(v.path)
        data = list(s.exec(select(RegressionData).where(RegressionData.model_name == name)))
        for row in data:
            s.delete(row)
        for req in s.exec(select(Request).where(Request.model_name == name, Request.landed_version.is_not(None))):
            req.landed_version = None
            s.add(req)
        audit.append(s, "model.retire", f"model:{name}", {"withdrawn": withdrawn, "regression_data_rows": len(data)},
                     actor=actor)
        s.commit()
        return {"model": name, "withdrawn": withdrawn, "regression_data_rows": len(data)}
