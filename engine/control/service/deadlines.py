"""The legal clock of an erasure request (GDPR Art. 12(3): answer within one month of receipt, extendable by
two more with reasons): the received and due dates filed with it, audited extensions, days left."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlmodel import Session

from engine.control.service import clock
from engine.control.service.lookup import get_request
from engine.schema.errors import SpecError
from engine.schema.spec import RequestSpec
from store import audit
from store.models import Request

ANSWER_DAYS = 30  # the default and the latest due date, counted from receipt
MAX_EXTENSION_DAYS = 60  # in all, over every extension of one request


def _day_start(day: str) -> datetime:
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def filed_deadline(spec: RequestSpec, now: datetime) -> tuple[datetime, datetime]:
    """(received, due) for a new request: received defaults to now, due to received + 30 days; a due date
    before receipt, or later than 30 days after it, is refused (later only through an extension)."""
    received = _day_start(spec.received) if spec.received else now
    if received > now:
        raise SpecError(f"received: {spec.received} is in the future")
    latest = received + timedelta(days=ANSWER_DAYS)
    if spec.due is None:
        return received, latest
    due = _day_start(spec.due) + timedelta(days=1) - timedelta(microseconds=1)  # the whole due day counts
    if due < received:
        raise SpecError(f"due: {spec.due} is before the request was received")
    if due > latest + timedelta(days=1):
        raise SpecError(f"due: {spec.due} is more than {ANSWER_DAYS} days after receipt; file it with the default "
                        "and extend it with a reason (expunge extend)")
    return received, due


def received_and_due(req: Request) -> tuple[datetime, datetime]:
    """A request's dates; one filed before revision 0005 reads as received when filed, due 30 days later."""
    received = req.received_at or req.created_at
    return received, req.due_at or received + timedelta(days=ANSWER_DAYS)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def days_left(req: Request, now: datetime | None = None) -> int:
    """Whole days from today (UTC) to the due day: 0 is due today, negative is overdue."""
    _, due = received_and_due(req)
    return (_aware(due).date() - (now or clock.now()).date()).days


def answered_on_time(req: Request) -> bool | None:
    """Whether the request was closed (answered: erased and its texts purged) by its due date; None while open."""
    if req.closed_at is None:
        return None
    _, due = received_and_due(req)
    return _aware(req.closed_at) <= _aware(due)


def extend_deadline(s: Session, request_id: int, days: int, reason: str, actor: str) -> Request:
    """Move an open request's due date later by `days`, with its reason, audited; at most 60 days in all."""
    req = get_request(s, request_id)
    if req.status != "open":
        raise SpecError(f"request {request_id} is closed; its deadline no longer runs")
    if days < 1:
        raise SpecError("days: an extension is at least 1 day")
    if not reason.strip():
        raise SpecError("reason: an extension needs its reason (GDPR Art. 12(3): the data subject is told why)")
    if req.extension_days + days > MAX_EXTENSION_DAYS:
        raise SpecError(f"days: {req.extension_days} day(s) already granted; at most {MAX_EXTENSION_DAYS} in all, "
                        f"so at most {MAX_EXTENSION_DAYS - req.extension_days} more")
    received, due = received_and_due(req)
    req.received_at, req.due_at = received, _aware(due) + timedelta(days=days)
    req.extension_days += days
    req.extension_reason = reason.strip()
    s.add(req)
    audit.append(s, "request.extend", f"request:{request_id}", {
        "days": days, "reason": req.extension_reason, "due_before": _aware(due).isoformat(),
        "due": req.due_at.isoformat(), "extension_days": req.extension_days}, actor=actor)
    s.commit()
    return req
