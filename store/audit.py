"""The append-only audit chain: each row's hash covers its id, its content and the previous row's hash,
so an edited, deleted or reordered row breaks the chain at that row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlmodel import Session, select

from store.models import AuditAnchor, AuditEvent

GENESIS = "0" * 64


def row_hash(row_id: int, ts: str, actor: str, action: str, subject: str, detail_json: str, prev_hash: str) -> str:
    body = json.dumps([row_id, ts, actor, action, subject, detail_json, prev_hash], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def append(session: Session, action: str, subject: str = "", detail: dict | None = None, actor: str = "engine") -> AuditEvent:
    """Add one event in the caller's transaction (the caller commits).

    Appends are serialised by SQLite's write lock alone, taken before the chain's head is read: the caller
    holds it until it commits, so no other writer (thread or process) can read the same head. A lock of our
    own taken first would deadlock against a session that already holds the write lock and appends next."""
    session.flush()
    # A write that changes nothing: it takes the write lock now (or waits for it), so the head read below is
    # the newest one.
    session.execute(update(AuditAnchor).where(AuditAnchor.id == 1).values(rows=AuditAnchor.rows))
    last = session.exec(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    row_id = (last.id if last else 0) + 1
    ts = datetime.now(UTC).isoformat(timespec="microseconds")
    detail_json = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False)
    ev = AuditEvent(id=row_id, ts=ts, actor=actor, action=action, subject=subject, detail_json=detail_json,
                    prev_hash=prev, hash=row_hash(row_id, ts, actor, action, subject, detail_json, prev))
    session.add(ev)
    anchor = session.get(AuditAnchor, 1) or AuditAnchor(id=1)
    anchor.rows, anchor.head = row_id, ev.hash
    session.add(anchor)
    session.flush()
    return ev


@dataclass
class ChainCheck:
    ok: bool
    rows: int
    head: str
    bad_id: int | None = None
    reason: str = ""


def verify(session: Session) -> ChainCheck:
    prev = GENESIS
    expected_id = 1
    count = 0
    for ev in session.exec(select(AuditEvent).order_by(AuditEvent.id)):
        count += 1
        if ev.id != expected_id:
            return ChainCheck(False, count, prev, ev.id, f"row {expected_id} is missing (next row is {ev.id})")
        if ev.prev_hash != prev:
            return ChainCheck(False, count, prev, ev.id, "its previous-hash does not match the row before it")
        if row_hash(ev.id, ev.ts, ev.actor, ev.action, ev.subject, ev.detail_json, ev.prev_hash) != ev.hash:
            return ChainCheck(False, count, prev, ev.id, "its content does not match its hash (edited)")
        prev = ev.hash
        expected_id += 1
    anchor = session.get(AuditAnchor, 1)
    if anchor is not None and (anchor.rows != count or anchor.head != prev):
        return ChainCheck(False, count, prev, anchor.rows if anchor.rows > count else count,
                          f"the chain ends at row {count} but its anchor records {anchor.rows} rows "
                          "(newest rows deleted, or the anchor edited)")
    return ChainCheck(True, count, prev)
