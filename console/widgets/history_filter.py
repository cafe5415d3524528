"""The history screen's filter line: `key:value` tokens and free words (`status:failed method:rmu
since:2026-03-01 alma`), parsed into the engine's query parameters, and completed as typed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from textual.suggester import Suggester

from engine.schema.status import JOB_STATUSES

REQUEST_STATUSES = ("open", "closed")
VERDICTS = ("pass", "fail")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
KEYS = ("status", "verdict", "model", "method", "since", "until", "date")
HINT = ("filter: words search title/reference · status:failed,running · verdict:fail · model:NAME · method:NAME · "
        "since:2026-03-01 · until:2026-03-31 · date:2026-03-02")


def parse_date(text: str) -> date | None:
    text = text.strip()
    if not DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@dataclass
class Query:
    """The filter line, parsed: `key:value` tokens and free words (searched in title and reference)."""

    words: list[str] = field(default_factory=list)
    status: str | None = None
    verdict: str | None = None
    model: str | None = None
    method: str | None = None
    since: date | None = None
    until: date | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, view: str = "jobs", models=(), methods=()) -> Query:
        q = cls()
        statuses = JOB_STATUSES if view == "jobs" else REQUEST_STATUSES
        for token in text.split():
            key, sep, value = token.partition(":")
            key = key.lower()
            if not sep or key not in KEYS:
                q.words.append(token)
                continue
            if not value:
                q.errors.append(f"{key}: needs a value")
            elif key == "status":
                bad = [v for v in value.split(",") if v not in statuses]
                if bad:
                    q.errors.append(f"status: {', '.join(bad)}? ({', '.join(statuses)})")
                else:
                    q.status = value
            elif view != "jobs" and key not in ("since", "until", "date"):
                q.errors.append(f"{key}: requests filter by status, dates and words only")
            elif key == "verdict":
                if value not in VERDICTS:
                    q.errors.append("verdict: pass or fail")
                else:
                    q.verdict = value
            elif key == "model":
                if models and value not in models:
                    q.errors.append(f"model: {value}? ({', '.join(models)})")
                else:
                    q.model = value
            elif key == "method":
                if methods and value not in methods:
                    q.errors.append(f"method: {value}? ({', '.join(methods)})")
                else:
                    q.method = value
            else:
                day = parse_date(value)
                if day is None:
                    q.errors.append(f"{key}: a date YYYY-MM-DD")
                elif key == "since":
                    q.since = day
                elif key == "until":
                    q.until = day
                else:
                    q.since = q.until = day
        return q

    @property
    def search(self) -> str | None:
        return " ".join(self.words) or None


class FilterSuggester(Suggester):
    """Completes the key or value of the last token of the filter line."""

    def __init__(self, screen) -> None:  # the history screen: its view, models and methods
        super().__init__(use_cache=False, case_sensitive=True)
        self.screen = screen

    async def get_suggestion(self, value: str) -> str | None:
        if not value or value.endswith(" "):
            return None
        head, _, last = value.rpartition(" ")
        prefix = head + " " if head else ""
        key, sep, partial = last.partition(":")
        if not sep:
            for k in KEYS:
                if k.startswith(last) and k != last:
                    return f"{prefix}{k}:"
            return None
        options = {"status": JOB_STATUSES if self.screen.view == "jobs" else REQUEST_STATUSES,
                   "verdict": VERDICTS, "model": self.screen.models, "method": self.screen.methods}.get(key, ())
        done, _, current = partial.rpartition(",")
        for option in options:
            if current and option.startswith(current) and option != current:
                return f"{prefix}{key}:{done + ',' if done else ''}{option}"
        return None
