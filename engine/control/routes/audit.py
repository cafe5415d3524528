"""The audit chain's check, and its export for an external auditor (checked with the file alone)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from engine.control import service
from engine.control.routes.deps import Db, Viewer
from engine.schema.errors import SpecError
from engine.schema.views import AuditCheck
from store import audit
from store.audit_export import export_lines

router = APIRouter()


@router.get("/audit/verify", response_model=AuditCheck)
def audit_verify(s: Db, _who: Viewer):
    check = audit.verify(s)
    return AuditCheck(ok=check.ok, rows=check.rows, head=check.head, bad_id=check.bad_id, reason=check.reason)


@router.get("/audit/export", response_class=PlainTextResponse)
def audit_export(s: Db, _who: Viewer, since: str | None = Query(default=None, max_length=40)):
    """JSON lines: a header (range, the hash it continues from, its head), then the rows from `since` on."""
    try:
        bound = service.parse_when(since, "since")
    except SpecError as exc:
        raise HTTPException(status_code=422, detail=[{"loc": ["query", "since"], "msg": str(exc),
                                                      "type": "value_error"}]) from None
    return PlainTextResponse("\n".join(export_lines(s, bound.isoformat() if bound else None)) + "\n",
                             media_type="application/x-ndjson")
