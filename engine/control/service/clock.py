"""The service's clock: every timestamp the service writes comes from here (the snapshot tests fix it)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)  # aware: sqlmodel >= 0.0.50 refuses naive datetimes
