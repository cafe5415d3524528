"""Private data: closing a request purges every copy of its texts (database rows, free pages, WAL, cached
'before' generations, artifact files, work dirs) and `expunge purge --check` proves it byte by byte."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from engine.schema.spec import load_spec_file


def needles(strings: list[str]) -> list[bytes]:
    """How a string can sit in a file: UTF-8, or JSON-escaped (the rows are stored as JSON)."""
    out = set()
    for s in strings:
        out.add(s.encode())
        out.add(json.dumps(s)[1:-1].encode())
    return sorted(out)


def raw_hits(roots: list[Path], strings: list[str], skip: tuple[Path, ...] = ()) -> dict[str, list[str]]:
    """Independent of engine.control.privacy: every regular file under the roots, read whole, searched."""
    hits: dict[str, list[str]] = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if not f.is_file() or f.is_symlink() or any(s == f or s in f.parents for s in skip):
                continue
            data = f.read_bytes()
            for n in needles(strings):
                if n in data:
                    hits.setdefault(n.decode(errors="replace"), []).append(str(f))
    return hits


def request_texts(spec: dict) -> list[str]:
    return sorted(set(spec["sensitive"]) | {r["answer"] for r in spec["forget"]})


def test_close_purges_the_texts_from_the_database_file_wal_cache_artifacts_and_work_dirs(home, tiny, demo_request):
    """In-process, no worker: a request with a cached baseline, an artifact holding its strings and a work
    dir; closing leaves none of its texts anywhere under the data dir, and the check says so."""
    from engine.control import privacy, service
    from engine.control.baseline import GENERAL_TEXT, baseline_key, measurement_setup
    from store import audit
    from store.db import migrate, session
    from store.models import BaselineCache

    spec = load_spec_file(demo_request["spec_path"])
    shutil.rmtree(demo_request["folder"])  # the operator's own files are not expunge's to purge
    texts = request_texts(spec)
    db = migrate(home.db)
    with session(db) as s:
        model = service.register_model(s, "tiny", str(tiny["dir"]))
        req, _ = service.create_request(s, spec, start=False)
        job = service.submit_job(s, req.id, "graddiff", {"steps": 2})
        service.cancel_job(s, job.id)
        rows = service.request_rows(s, req.id)
        setup = measurement_setup(model.source, model.kind, {}, "cpu")
        s.add(BaselineCache(key=baseline_key(model.weights_sha256, rows, GENERAL_TEXT, {}, setup),
                            payload={"unit": {"evidence": [{"output": spec["sensitive"][0]}]}}))
        s.add(BaselineCache(key="another-request", payload={"unit": {}}))
        s.commit()
    art = home.artifacts / f"job-{job.id}"
    art.mkdir(parents=True)
    (art / "guard.json").write_text(json.dumps({"strings": spec["sensitive"]}, ensure_ascii=False))
    (art / "adapter.bin").write_bytes(b"\x00weights only\x00")
    work = home.data / "jobs" / f"job-{job.id}" / "checkpoint"
    work.mkdir(parents=True)
    (work / "state.pt").write_text(spec["forget"][0]["answer"])

    found = privacy.scan(texts, home, home.db)
    assert not found["clean"]
    where = {f for h in found["hits"] for f in h["files"]}
    assert str(home.db) in where or str(home.db) + "-wal" in where
    assert str(art / "guard.json") in where and str(work / "state.pt") in where

    report: dict = {}
    with session(db) as s:
        service.close_request(s, req.id, report=report, full_check=True)
    assert report["check"]["clean"], report["check"]["hits"]
    assert report["baseline_cache_rows"] == 1 and report["work_dirs_removed"] == 1
    assert report["artifact_files_removed"] == [f"job-{job.id}/guard.json"] and report["wal_truncated"]
    assert (art / "adapter.bin").exists() and (art / "PURGED.json").exists()
    db.dispose()
    assert raw_hits([home.config.parent], texts) == {}
    wal = Path(str(home.db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    con = sqlite3.connect(home.db)
    assert con.execute("select count(*) from baselinecache").fetchone()[0] == 1  # another request's stays
    data = con.execute("select kind, rows_json, sha256, count from requestdata").fetchall()
    assert data and all(r[1] is None and len(r[2]) == 64 and r[3] > 0 for r in data)
    con.close()
    with session(migrate(home.db)) as s:
        assert s.exec(text("pragma secure_delete")).one()[0] == 1  # every engine connection zeroes deletions
        assert audit.verify(s).ok


def test_purge_check_of_a_closed_request_needs_the_operators_copy(engine, tiny, demo_request):
    from console.cli import cli

    engine.add_model("tiny", str(tiny["dir"]))
    res = engine.submit(load_spec_file(demo_request["spec_path"]), start=False)
    rid = res["request"]["id"]
    # Open: the texts are in the database, and the check finds them there.
    out = CliRunner().invoke(cli, ["purge", "--check", str(rid), "--json"])
    assert out.exit_code == 1, out.output
    assert any("expunge.db" in f for h in json.loads(out.output)["check"]["hits"] for f in h["files"])
    engine.close_request(rid)
    out = CliRunner().invoke(cli, ["purge", "--check", str(rid)])
    assert out.exit_code != 0 and "nothing to check" in out.output


@pytest.mark.slow
def test_purge_closes_a_request_with_a_finished_job_and_proves_its_texts_are_gone(engine, home, tiny,
                                                                                 demo_request, tmp_path):
    """A real guard job (its artifact lists the sensitive strings; its 'before' generations are cached):
    `expunge purge` closes the request and finds none of the texts in the database, its WAL, the data,
    artifacts and state dirs; `purge --check --spec` proves it again later from the operator's copy, and
    finds a copy planted in the data dir."""
    from console.cli import cli

    folder = tmp_path / "request"
    shutil.move(demo_request["folder"], folder)  # the operator's files live outside the data dir
    spec_path = folder / "spec.json"
    spec = load_spec_file(spec_path)
    texts = request_texts(spec)
    engine.add_model("tiny", str(tiny["dir"]))
    res = engine.submit(spec, method="guard")
    rid, jid = res["request"]["id"], res["job"]["id"]
    deadline = time.time() + 600
    while (detail := engine.job(jid))["job"]["status"] not in ("succeeded", "failed"):
        assert time.time() < deadline
        time.sleep(0.3)
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    guard = home.artifacts / f"job-{jid}" / "guard.json"
    assert guard.is_file() and any(s in guard.read_text() for s in spec["sensitive"])
    evidence_before = len(detail["evidence"])
    metrics_before = sum(len(st["metrics"]) for st in detail["stages"])

    runner = CliRunner()
    out = runner.invoke(cli, ["purge", "--check", str(rid), "--json"])
    assert out.exit_code == 1, out.output
    hit_files = {f for h in json.loads(out.output)["check"]["hits"] for f in h["files"]}
    assert str(guard) in hit_files

    out = runner.invoke(cli, ["purge", str(rid), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["check"]["clean"] and result["check"]["checked"] == len(texts)
    assert f"job-{jid}/guard.json" in result["closed"]["artifact_files_removed"]
    assert result["closed"]["baseline_cache_rows"] == 1
    assert raw_hits([home.config.parent], texts, skip=(home.models,)) == {}

    # What stays: hashes, metrics, evidence (masked).
    req = engine.request(rid)
    assert req["request"]["status"] == "closed"
    assert all(d["purged"] and len(d["sha256"]) == 64 for d in req["data"])
    after = engine.job(jid)
    assert len(after["evidence"]) == evidence_before
    assert sum(len(st["metrics"]) for st in after["stages"]) == metrics_before
    assert engine.audit_verify()["ok"]

    # Later, from the operator's copy of the request: matched to the kept hashes, and clean.
    out = runner.invoke(cli, ["purge", "--check", str(rid), "--spec", str(spec_path), "--json"])
    assert out.exit_code == 0, out.output
    check = json.loads(out.output)["check"]
    assert check["clean"] and check["matches_request"] == {"forget": True, "sensitive": True}
    # A copy left in the data dir is found and named.
    planted = home.data / "notes.txt"
    planted.write_text(f"call back on {spec['sensitive'][0]}")
    out = runner.invoke(cli, ["purge", "--check", str(rid), "--spec", str(spec_path)])
    assert out.exit_code == 1 and str(planted) in out.output
