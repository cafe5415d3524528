"""Purging a closed request's personal data, and proving it is gone.

Closing a request (engine.control.service.close_request) nulls its raw texts in the database and masks the
evidence; this module removes the copies elsewhere, while the engine still holds the texts in memory:

- 'before' metrics cached for exactly this request's data (BaselineCache: they hold generations);
- artifact files that contain a sensitive string or a forget answer (guard.json lists the strings);
- the request's job work dirs (checkpoints, scratch);
- the SQLite write-ahead log: the database runs with secure_delete=ON (store/db.py), so overwritten
  rows are zeroed, and a TRUNCATE checkpoint empties the -wal file of the old page images.

`scan` is the proof: it reads the raw bytes of the database file, its -wal and every file under the
data dir (and the artifacts and state dirs) and reports each string it finds, with where. Closing runs
it with the texts the engine had; later, `expunge purge --check REQUEST --spec SPEC` runs it with the
texts of the operator's own copy of the request (checked against the SHA-256 hashes the engine kept).

No torch here: the API server imports this module."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session, select

from engine.control.baseline import GENERAL_TEXT, baseline_key, job_model_options, measurement_setup
from engine.leaks import mask_sensitive
from engine.schema.datasets import as_qa
from store.models import Artifact, BaselineCache, Job, ModelEntry, ModelVersion, Request
from store.paths import Paths, get_paths

# Shorter strings ("yes", "42") match by chance in binary files: reported as not checkable instead.
MIN_CHECK_CHARS = 4
CHUNK = 4 << 20
PURGED_NOTE = "PURGED.json"


def request_strings(rows: dict) -> list[str]:
    """What must not survive a close: the sensitive strings and every forget answer (the continuation of
    a text row), deduplicated, longest first."""
    out = list(rows.get("sensitive") or [])
    out += [r["answer"] for r in as_qa(rows.get("forget") or []) if r.get("answer")]
    return sorted({s.strip() for s in out if s and s.strip()}, key=lambda s: (-len(s), s))


def _needles(strings: list[str]) -> tuple[list[bytes], dict[bytes, int]]:
    """The byte forms a string takes on disk: UTF-8 as is, lower-cased, and JSON-escaped (rows are stored
    as JSON with ASCII escapes)."""
    needles: dict[bytes, int] = {}
    for i, s in enumerate(strings):
        if len(s) < MIN_CHECK_CHARS:
            continue
        for form in {s, s.lower(), json.dumps(s)[1:-1], json.dumps(s.lower())[1:-1]}:
            needles.setdefault(form.encode("utf-8"), i)
    return sorted(needles, key=len, reverse=True), needles


def _scan_file(path: Path, pattern: re.Pattern, overlap: int) -> set[bytes]:
    found: set[bytes] = set()
    tail = b""
    try:
        with path.open("rb") as fh:
            while True:
                block = fh.read(CHUNK)
                if not block:
                    break
                data = tail + block
                found.update(m.group(0) for m in pattern.finditer(data))
                tail = data[-overlap:] if overlap else b""
    except OSError:
        pass
    return found


def scan_roots(paths: Paths) -> list[Path]:
    roots = [paths.data, paths.artifacts, paths.state]
    out: list[Path] = []
    for r in roots:
        if r.exists() and not any(r == o or o in r.parents for o in out):
            out.append(r)
    return out


def scan(strings: list[str], paths: Paths | None = None, db_path: Path | None = None) -> dict:
    """Every file under the data, artifacts and state dirs (the database, its -wal, artifacts, work dirs,
    logs), byte by byte, for each string. Base models (the data dir's models/) are inputs, never written
    or purged by expunge, and are not scanned."""
    ordered, index = _needles(strings)
    files: list[Path] = []
    roots = scan_roots(paths) if paths is not None else []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d != paths.models]
            files += [here / f for f in filenames]
    if db_path is not None:
        for suffix in ("", "-wal"):
            p = Path(str(db_path) + suffix)
            if p.exists() and p not in files:
                files.append(p)
    hits: dict[int, set[str]] = {}
    scanned_bytes = 0
    regular = [f for f in files if f.is_file() and not f.is_symlink()]
    if ordered:
        pattern = re.compile(b"|".join(re.escape(n) for n in ordered))
        overlap = max(len(n) for n in ordered) - 1
        for f in regular:
            scanned_bytes += f.stat().st_size
            for needle in _scan_file(f, pattern, overlap):
                hits.setdefault(index[needle], set()).add(str(f))
    short = [i for i, s in enumerate(strings) if len(s) < MIN_CHECK_CHARS]
    return {
        "clean": not hits,
        "strings": len(strings),
        "checked": len(strings) - len(short),
        "too_short_to_check": len(short),
        "files": len(regular),
        "bytes": scanned_bytes,
        "roots": [str(r) for r in roots],
        "hits": [{"index": i, "sha256": hashlib.sha256(strings[i].encode()).hexdigest(),
                  "preview": preview(strings[i]), "files": sorted(where)} for i, where in sorted(hits.items())],
    }


def preview(s: str) -> str:
    """Enough of a string to recognise it in a report, not enough to leak it."""
    return s[:2] + "…" + s[-2:] if len(s) > 6 else s[:1] + "…"


# ------------------------------------------------------------------ purge


def _file_has(path: Path, pattern: re.Pattern, overlap: int) -> bool:
    return bool(_scan_file(path, pattern, overlap))


def purge_request(s: Session, request_id: int, rows: dict, paths: Paths | None = None) -> dict:
    """Remove the copies of a request's texts outside RequestData, in the caller's transaction (files
    first: if a file cannot be removed the close fails and the request stays open)."""
    paths = paths or paths_for(s)
    strings = request_strings(rows)
    ordered, _ = _needles(strings)
    pattern = re.compile(b"|".join(re.escape(n) for n in ordered)) if ordered else None
    overlap = max((len(n) for n in ordered), default=1) - 1
    report = {"baseline_cache_rows": 0, "artifact_files_removed": [], "work_dirs_removed": 0}

    # 'Before' metrics of this data: by key for the model as registered now, and by content for any other.
    req = s.get(Request, request_id)
    model = s.exec(select(ModelEntry).where(ModelEntry.name == req.model_name)).first()
    keys = set()
    if model is not None:
        options = job_model_options(model.options, req.spec)
        sources = [(model.source, model.kind, model.weights_sha256)]
        if req.base_version:  # a request filed on a later model version measured its 'before' on that version
            v = s.exec(select(ModelVersion).where(ModelVersion.model_name == model.name,
                                                  ModelVersion.number == req.base_version)).first()
            sources += [(v.path, "hf", v.sha256)] if v is not None else []
        for device in ("cpu", "cuda"):  # the key holds the device type the 'before' was measured on
            for source, kind, sha in sources:
                setup = measurement_setup(source, kind, options, device)
                keys.add(baseline_key(sha, rows, GENERAL_TEXT, options, setup))
    for row in s.exec(select(BaselineCache)):
        if row.key in keys or (pattern is not None and pattern.search(json.dumps(row.payload).encode("utf-8"))):
            s.delete(row)
            report["baseline_cache_rows"] += 1

    jobs = s.exec(select(Job).where(Job.request_id == request_id)).all()
    for job in jobs:
        if paths is not None:
            wd = paths.job_work_dir(job.id)
            if wd.exists():
                shutil.rmtree(wd)
                report["work_dirs_removed"] += 1
            folders = {paths.job_artifacts(job.id)}
            folders.update(Path(a.path) for a in s.exec(select(Artifact).where(Artifact.job_id == job.id)))
            for folder in folders:
                report["artifact_files_removed"] += _purge_folder(folder, pattern, overlap, paths)
        masked = mask_values(job.result, strings)
        if masked != job.result:
            job.result = masked
            s.add(job)
        for art in s.exec(select(Artifact).where(Artifact.job_id == job.id)):
            masked = mask_values(art.manifest, strings)
            if masked != art.manifest:
                art.manifest = masked
                s.add(art)
    return report


def mask_values(value, strings: list[str]):
    """A JSON value (a job's result, an artifact's manifest) with the strings masked inside its strings."""
    if not strings:
        return value
    if isinstance(value, str):
        return mask_sensitive(value, strings)
    if isinstance(value, list):
        return [mask_values(v, strings) for v in value]
    if isinstance(value, dict):
        return {k: mask_values(v, strings) for k, v in value.items()}
    return value


def _purge_folder(folder: Path, pattern: re.Pattern | None, overlap: int, paths: Paths) -> list[str]:
    """Delete the files of an artifact folder that hold any of the texts; leave a note listing them.
    Only folders inside the artifacts dir are touched."""
    try:
        folder = folder.resolve()
        root = paths.artifacts.resolve()
    except OSError:
        return []
    if pattern is None or not folder.is_dir() or root not in folder.parents:
        return []
    removed = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.is_symlink() and f.name != PURGED_NOTE and _file_has(f, pattern, overlap):
            f.unlink()
            removed.append(f)
    if removed:
        note = folder / PURGED_NOTE
        note.write_text(json.dumps({"purged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "reason": "the request was closed; these files held its texts",
                                    "removed": [str(f.relative_to(folder)) for f in removed]}, indent=2) + "\n")
    return [str(f.relative_to(root)) for f in removed]


def checkpoint_wal(s: Session, attempts: int = 20) -> bool:
    """Copy the WAL into the database and truncate it, so no old page image (with purged text) stays
    in the -wal file. A reader in the middle of a transaction can hold it up: retried briefly."""
    for _ in range(attempts):
        busy, _log, _done = s.connection().execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).one()
        s.commit()
        if not busy:
            return True
        time.sleep(0.05)
    return False


def db_path_of(s: Session) -> Path | None:
    db = s.get_bind().url.database
    return Path(db).resolve() if db and db != ":memory:" else None


def paths_for(s: Session) -> Paths | None:
    """The folders that belong to this session's database: the configured ones when it is the configured
    database; else only the database's own folder (a copy, a test), so a purge or a scan never reaches
    another installation's files; None for a database without a file."""
    db = db_path_of(s)
    if db is None:
        return None
    configured = get_paths()
    if configured.db.resolve() == db:
        return configured
    return Paths(config=db.parent, data=db.parent, state=db.parent)
