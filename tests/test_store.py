"""The store: migrations on empty and existing databases, WAL, private files, the audit chain."""

from __future__ import annotations

import sqlite3
import stat

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlmodel import Session, select

from store import audit
from store.db import alembic_config, make_engine, migrate


def test_migrate_creates_private_wal_database(tmp_path):
    db = tmp_path / "expunge.db"
    migrate(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"request", "job", "stageresult", "metric", "evidence", "artifact", "auditevent", "modelentry"} <= tables
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert con.execute("select version_num from alembic_version").fetchone()[0] == head


def test_every_revision_upgrades_an_existing_database_without_losing_rows(tmp_path):
    db = tmp_path / "expunge.db"
    cfg = alembic_config(db)
    revisions = list(reversed(list(ScriptDirectory.from_config(cfg).walk_revisions())))
    command.upgrade(cfg, revisions[0].revision)
    engine = make_engine(db)
    with Session(engine) as s:
        audit.append(s, "test.event", "x", {"n": 1})
        s.commit()
    engine.dispose()
    migrate(db)  # to head, through every later revision
    migrate(db)  # and again: a no-op on an up-to-date database
    with Session(make_engine(db)) as s:
        check = audit.verify(s)
    assert check.ok and check.rows == 1


def _chain(tmp_path, n=5):
    db = tmp_path / "expunge.db"
    engine = migrate(db)
    with Session(engine) as s:
        for i in range(n):
            audit.append(s, "test.event", f"thing:{i}", {"i": i})
        s.commit()
    return db, engine


def _verify(engine):
    with Session(engine) as s:
        return audit.verify(s)


def test_audit_chain_intact(tmp_path):
    _, engine = _chain(tmp_path)
    check = _verify(engine)
    assert check.ok and check.rows == 5 and len(check.head) == 64


def test_audit_chain_names_an_edited_row(tmp_path):
    db, engine = _chain(tmp_path)
    con = sqlite3.connect(db)
    con.execute("update auditevent set detail_json='{\"i\": 99}' where id=3")
    con.commit()
    check = _verify(engine)
    assert not check.ok and check.bad_id == 3 and "edited" in check.reason


def test_audit_chain_names_a_deleted_row(tmp_path):
    db, engine = _chain(tmp_path)
    con = sqlite3.connect(db)
    con.execute("delete from auditevent where id=2")
    con.commit()
    check = _verify(engine)
    assert not check.ok and check.bad_id == 3 and "missing" in check.reason


def test_audit_chain_names_reordered_rows(tmp_path):
    db, engine = _chain(tmp_path)
    con = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in con.execute("select id, ts, action, subject, detail_json, prev_hash, hash "
                                              "from auditevent where id in (2, 3)")}
    for row_id, other in ((2, 3), (3, 2)):
        con.execute("update auditevent set ts=?, action=?, subject=?, detail_json=?, prev_hash=?, hash=? where id=?",
                    (*rows[other], row_id))
    con.commit()
    check = _verify(engine)
    assert not check.ok and check.bad_id == 2


def test_audit_chain_detects_deleted_newest_rows(tmp_path):
    db, engine = _chain(tmp_path)
    con = sqlite3.connect(db)
    con.execute("delete from auditevent where id=5")
    con.commit()
    check = _verify(engine)
    assert not check.ok and check.bad_id == 5 and "anchor" in check.reason


def test_an_append_waits_for_a_writer_that_appends_next(tmp_path):
    """The engine's request threads and its scheduler append concurrently. One holds SQLite's write lock
    (its job update flushed) and appends next, while the other is already appending: both land, in order,
    with no 'database is locked' after the busy timeout (the audit lock was once taken before the write lock,
    so the two waited on each other until SQLite gave up)."""
    import threading
    import time

    from store.models import Job, Request

    engine = migrate(tmp_path / "race.db")
    with Session(engine) as s:
        req = Request(title="t", reference="r", intention="remove", model_name="m", policy="default",
                      spec={})
        s.add(req)
        s.flush()
        s.add(Job(request_id=req.id, tier=1, method="guard", hyper={}))
        audit.append(s, "request.create", f"request:{req.id}")
        s.commit()
        job_id = s.exec(select(Job)).first().id

    holder = Session(engine)
    job = holder.get(Job, job_id)
    job.status = "running"
    holder.add(job)
    holder.flush()  # the scheduler's claim: the write lock is held from here to its commit
    errors: list[BaseException] = []

    def other_append():
        try:
            with Session(engine) as s:
                audit.append(s, "job.cancel", f"job:{job_id}", actor="operator")
                s.commit()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    t = threading.Thread(target=other_append)
    started = time.monotonic()
    t.start()
    time.sleep(0.5)  # the other thread is now waiting for the write lock
    audit.append(holder, "job.start", f"job:{job_id}")
    holder.commit()
    holder.close()
    t.join(timeout=60)
    assert errors == [] and time.monotonic() - started < 10
    with Session(engine) as s:
        assert [e.action for e in s.exec(select(audit.AuditEvent).order_by(audit.AuditEvent.id))] == [
            "request.create", "job.start", "job.cancel"]
        assert audit.verify(s).ok


@pytest.mark.parametrize("revision", ["0002", "0003"])
def test_json_columns_of_an_older_database_read_as_values(tmp_path, revision):
    """Revision 0004 declares the JSON-as-text columns JSON: rows written before it read back as the values
    they held (a purged row's NULL stays None), every table's rows and references survive the rebuild, and
    job.checkpoint_dir is gone."""
    from store.models import (
        Artifact,
        BaselineCache,
        Evidence,
        Job,
        Metric,
        ModelEntry,
        Request,
        RequestData,
        StageResult,
    )

    db = tmp_path / "expunge.db"
    command.upgrade(alembic_config(db), revision)
    con = sqlite3.connect(db)
    t = "2026-03-02 09:00:00.000000"
    con.executescript(f"""
        insert into modelentry (name, source, kind, weights_sha256, params, options_json, created_at)
            values ('demo', '/x', 'hf', '', 0, '{{"dtype": "auto"}}', '{t}');
        insert into request (title, reference, intention, model_name, policy, status, current_tier, auto_escalate,
            spec_json, created_at) values ('t', 'r', 'remove', 'demo', 'default', 'open', 2, 0,
            '{{"warnings": ["w"]}}', '{t}');
        insert into requestdata (request_id, kind, rows_json, sha256, count)
            values (1, 'forget', '[{{"question": "q", "answer": "a"}}]', 'x', 1), (1, 'retain', NULL, 'y', 1);
        insert into job (request_id, tier, method, hyper_json, seed, priority, status, phase, step, total,
            progress_json, result_json, device, created_at, checkpoint_dir) values (1, 2, 'rmu', '{{"steps": 3}}', 0,
            0, 'succeeded', 'done', 1, 1, '{{"losses": [[1, 2.5]]}}', '{{}}', 'cpu', '{t}', NULL);
        insert into stageresult (job_id, stage, verdict, required, policy_name, policy_json)
            values (1, 'unit', 'pass', 1, 'default', '{{"name": "default"}}');
        insert into metric (stage_result_id, name, rule) values (1, 'leak_rate', 'max');
        insert into evidence (job_id, stage, attack, prompt, output_before, output_after, leaked_before,
            leaked_after, spans_json) values (1, 'unit', 'direct', 'q?', 'a', 'b', 1, 0,
            '{{"before": [[0, 1]], "after": []}}');
        insert into artifact (job_id, kind, path, sha256, manifest_json, created_at)
            values (1, 'delta', '/p', 's', '{{"k": 1}}', '{t}');
        insert into baselinecache (key, payload_json, created_at) values ('k', '{{"unit": {{}}}}', '{t}');
    """)
    con.close()
    engine = migrate(db)
    with Session(engine) as s:
        assert s.get(ModelEntry, 1).options == {"dtype": "auto"}
        assert s.get(Request, 1).spec == {"warnings": ["w"]}
        assert [d.rows for d in s.exec(select(RequestData).order_by(RequestData.id))] == [
            [{"question": "q", "answer": "a"}], None]
        job = s.get(Job, 1)
        assert (job.hyper, job.progress, job.result) == ({"steps": 3}, {"losses": [[1, 2.5]]}, {})
        assert s.get(StageResult, 1).policy == {"name": "default"} and s.get(Metric, 1).name == "leak_rate"
        assert s.get(Evidence, 1).spans == {"before": [[0, 1]], "after": []}
        assert s.get(Artifact, 1).manifest == {"k": 1}
        assert s.get(BaselineCache, 1).payload == {"unit": {}}
    engine.dispose()
    con = sqlite3.connect(db)
    assert "checkpoint_dir" not in {r[1] for r in con.execute("pragma table_info(job)")}
    assert con.execute("pragma foreign_key_check").fetchall() == []
