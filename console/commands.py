"""Command palette providers: requests, jobs and actions, found by fuzzy search."""

from __future__ import annotations

import re
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

RECENT = 200
COMPARE = re.compile(r"\s*(?:compare)?\s*(?:jobs?)?\s*#?(\d+)\s*(?:vs\.?|with|and|,|\s)\s*(?:job)?\s*#?(\d+)\s*$",
                     re.IGNORECASE)


async def _items(page) -> list[dict]:
    """The items of a page the engine client is asked for (`client.requests(...)`); none if it refuses."""
    from console.client import EngineError

    try:
        return (await page)["items"]
    except (EngineError, KeyError):
        return []


class RequestCommands(Provider):
    """Open a request by id, title or reference."""

    async def startup(self) -> None:
        self.requests = await _items(self.app.client.requests(limit=RECENT))

    @staticmethod
    def _text(r: dict) -> str:
        return f"request {r['id']}: {r['title']} [{r['reference'] or 'no reference'}]"

    async def discover(self) -> Hits:
        for r in self.requests[:10]:
            yield DiscoveryHit(self._text(r), partial(self.app.open_request, r["id"]),
                               help=f"{r['intention']} · tier {r['current_tier']} · {r['status']}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        seen = {r["id"] for r in self.requests}
        extra = []
        if len(query.strip()) >= 3 and not query.strip().isdigit():  # older requests: ask the engine
            extra = [r for r in await _items(self.app.client.requests(q=query.strip(), limit=50)) if r["id"] not in seen]
        for r in self.requests + extra:
            text = self._text(r)
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.open_request, r["id"]), text=text,
                          help=f"{r['intention']} · tier {r['current_tier']} · {r['status']}")


class JobCommands(Provider):
    """Open a job by id, method or its request's title."""

    async def startup(self) -> None:
        self.jobs = await _items(self.app.client.jobs(limit=RECENT))

    @staticmethod
    def _text(j: dict) -> str:
        verdict = f" {j['verdict']}" if j.get("verdict") else ""
        return f"job {j['id']}: tier {j['tier']} {j['method']} {j['status']}{verdict} — {j.get('request_title') or ''}"

    async def discover(self) -> Hits:
        for j in self.jobs[:10]:
            yield DiscoveryHit(self._text(j), partial(self.app.open_job, j["id"]), help=f"request {j['request_id']}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for j in self.jobs:
            text = self._text(j)
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.open_job, j["id"]), text=text,
                          help=f"request {j['request_id']}")


class ActionCommands(Provider):
    """Screens and actions; 'compare 12 14' compares two jobs."""

    def _actions(self):
        app = self.app
        actions = [
            ("New request", app.action_new_request, "file an erasure request (form or spec file)"),
            ("History", app.action_history, "every request and job: filter, search, compare"),
            ("Dashboard", app.action_dashboard, "engine, queue, recent requests"),
            ("Help", app.action_help, "key bindings and what each verdict means"),
            ("Reconnect to the engine", app.action_start_engine, "start the engine if none is running"),
        ]
        screen = self.screen  # the screen the palette was opened on
        if getattr(screen, "KIND", None) == "request":
            actions.insert(0, (f"Report: write the sign-off report of request {screen.request_id}",
                               screen.action_report, "HTML or Markdown, to a file you name (r)"))
        return actions

    async def discover(self) -> Hits:
        for name, cb, help_text in self._actions():
            yield DiscoveryHit(name, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        m = COMPARE.match(query)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            text = f"Compare job {a} with job {b}"
            yield Hit(1.0, text, partial(self.app.open_compare, a, b), text=text, help="side by side")
        for name, cb, help_text in self._actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, text=name, help=help_text)
