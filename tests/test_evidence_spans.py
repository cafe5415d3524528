"""Leaked spans stored with the evidence: written with each job's result, masked with the texts on close, and
rows from before revision 0002 (no spans column) still read, as 'spans unknown'."""

from __future__ import annotations

import json
import sqlite3

from alembic import command
from sqlmodel import Session

from engine.control import service
from engine.leaks import REDACTED
from store.db import alembic_config, make_engine, migrate
from store.paths import Paths
from tests.console_store import prefill


def test_spans_are_stored_with_the_evidence_and_follow_the_mask_on_close(tmp_path):
    paths = Paths(config=tmp_path / "c", data=tmp_path / "d", state=tmp_path / "s")
    ids = prefill(paths)  # the engine's own result path (scheduler._store_result); request 2 is closed
    db = make_engine(paths.db)
    with Session(db) as s:
        open_job = service.job_detail(s, ids["rmu"])["evidence"]
        closed_job = service.job_detail(s, ids["guard"])["evidence"]
    row = open_job[2]
    assert row["output_after"] == "Alma Rivera lives at 12 Juniper Lane, Westmere."
    assert row["spans_after"] == [[21, 46]] and row["spans_before"] == [[21, 46]]
    assert open_job[0]["spans_after"] == [] and not open_job[0]["leaked_after"]
    # Closed: the outputs are masked, and a leaked output's spans are now the masked parts.
    for r in closed_job:
        if r["leaked_before"]:
            assert r["spans_before"], r
        for a, b in r["spans_before"]:
            assert r["output_before"][a:b] == REDACTED
    db.dispose()


def test_evidence_rows_from_before_the_spans_column_still_read(tmp_path):
    dbfile = tmp_path / "expunge.db"
    command.upgrade(alembic_config(dbfile), "0001")
    con = sqlite3.connect(dbfile)
    t = "2026-03-02 09:00:00.000000"
    con.execute("insert into modelentry (name, source, kind, weights_sha256, params, options_json, created_at) "
                "values ('demo', '/x', 'hf', '', 0, '{}', ?)", (t,))
    con.execute("insert into request (title, reference, intention, model_name, policy, status, current_tier, "
                "auto_escalate, spec_json, created_at) values ('t', 'r', 'remove', 'demo', 'default', 'open', 2, "
                "0, '{}', ?)", (t,))
    con.execute("insert into job (request_id, tier, method, hyper_json, seed, priority, status, phase, step, total, "
                "progress_json, result_json, device, created_at) values (1, 2, 'rmu', '{}', 0, 0, 'succeeded', "
                "'done', 1, 1, '{}', '{}', 'cpu', ?)", (t,))
    con.execute("insert into evidence (job_id, stage, attack, prompt, output_before, output_after, leaked_before, "
                "leaked_after) values (1, 'unit', 'direct', 'q?', 'it is 415-555-0142', 'no', 1, 0)")
    con.commit()
    con.close()
    engine = migrate(dbfile)  # 0001 -> head
    with Session(engine) as s:
        ev = service.job_detail(s, 1)["evidence"]
    assert ev == [{"stage": "unit", "attack": "direct", "prompt": "q?", "output_before": "it is 415-555-0142",
                   "output_after": "no", "leaked_before": True, "leaked_after": False, "spans_before": None,
                   "spans_after": None}]
    assert json.loads(json.dumps(ev))  # plain JSON for the API
    engine.dispose()
