"""The audit chain's check."""

from __future__ import annotations

from fastapi import APIRouter

from engine.control.routes.deps import Db
from engine.schema.views import AuditCheck
from store import audit

router = APIRouter()


@router.get("/audit/verify", response_model=AuditCheck)
def audit_verify(s: Db):
    check = audit.verify(s)
    return AuditCheck(ok=check.ok, rows=check.rows, head=check.head, bad_id=check.bad_id, reason=check.reason)
