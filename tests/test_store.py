"""The store: migrations on empty and existing databases, WAL, private files, the audit chain."""

from __future__ import annotations

import sqlite3
import stat

from alembic import command
from alembic.script import ScriptDirectory
from sqlmodel import Session

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
