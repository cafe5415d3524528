"""The audit chain as a file an external auditor checks alone: one JSON header line (the range, the hash the
range continues from, its head), then one line per row with exactly the fields its hash covers. verify_lines
recomputes every hash and link from the file only, and names the first line that does not match."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Session, select

from store.audit import GENESIS, row_hash
from store.models import AuditAnchor, AuditEvent

FORMAT = "expunge-audit-export/1"
ROW_FIELDS = ("id", "ts", "actor", "action", "subject", "detail_json", "prev_hash", "hash")


def export_lines(session: Session, since: str | None = None) -> list[str]:
    """The header and the rows whose time is at or after `since` (an ISO time, UTC), as JSON lines."""
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    if since:
        stmt = stmt.where(AuditEvent.ts >= since)
    rows = list(session.exec(stmt))
    anchor = session.get(AuditAnchor, 1)
    header = {"format": FORMAT, "since": since, "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "first_id": rows[0].id if rows else None, "rows": len(rows),
              "prev_hash": rows[0].prev_hash if rows else (anchor.head if anchor else GENESIS),
              "head": rows[-1].hash if rows else (anchor.head if anchor else GENESIS),
              "chain_rows": anchor.rows if anchor else 0, "chain_head": anchor.head if anchor else GENESIS,
              "verify": "expunge audit verify --file FILE.jsonl"}
    out = [json.dumps(header, ensure_ascii=False)]
    out += [json.dumps({f: getattr(r, f) for f in ROW_FIELDS}, ensure_ascii=False) for r in rows]
    return out


@dataclass
class FileCheck:
    ok: bool
    rows: int
    head: str
    bad_line: int | None = None
    bad_id: int | None = None
    reason: str = ""


def verify_lines(lines: list[str]) -> FileCheck:
    """Check an export from its text alone: every row's hash, every link, the ids without a gap, and the
    header's count and head. Line numbers count from 1 (the header)."""
    lines = [x for x in lines if x.strip()]
    if not lines:
        return FileCheck(False, 0, "", 1, None, "the file is empty")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return FileCheck(False, 0, "", 1, None, "the header is not JSON")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return FileCheck(False, 0, "", 1, None, f"not an expunge audit export (format {FORMAT} expected)")
    prev, expected_id, count = header.get("prev_hash", ""), header.get("first_id"), 0
    for number, text in enumerate(lines[1:], start=2):
        try:
            row = json.loads(text)
            values = [row[f] for f in ROW_FIELDS]
        except (json.JSONDecodeError, KeyError, TypeError):
            return FileCheck(False, count, prev, number, None, f"not a row (JSON with {', '.join(ROW_FIELDS)})")
        row_id = values[0]
        if expected_id is not None and row_id != expected_id:
            return FileCheck(False, count, prev, number, row_id, f"row {expected_id} is missing (this line is row "
                             f"{row_id})")
        if row["prev_hash"] != prev:
            return FileCheck(False, count, prev, number, row_id, "its previous-hash does not match the line before "
                             "it (or the header's prev_hash)")
        if row_hash(*values[:7]) != row["hash"]:
            return FileCheck(False, count, prev, number, row_id, "its content does not match its hash (edited)")
        prev, count = row["hash"], count + 1
        expected_id = row_id + 1
    if count != header.get("rows") or prev != header.get("head"):
        return FileCheck(False, count, prev, 1, None, f"the header records {header.get('rows')} rows ending at "
                         f"{str(header.get('head'))[:16]}…, the file holds {count} ending at {prev[:16]}… (rows cut "
                         "off the end, or the header edited)")
    return FileCheck(True, count, prev)
