"""The operator's story through the console alone, on a real engine and the shared tiny model: file a request
through the form, watch its job run live and finish, read the verdicts and metric diffs, escalate from the
ladder, find both jobs in history and compare them."""

from __future__ import annotations

import time

import pytest

from tests.console_store import settle

pytest.importorskip("tests.fixtures_model")

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.xdist_group("console-e2e")]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def until(pilot, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.2)
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what} (screen {pilot.app.screen!r})")


async def test_file_watch_verdicts_escalate_history_compare(engine, tiny, demo_request, home):
    from console.app import ExpungeApp
    from console.widgets.table import KeyedTable
    from screens.compare import CompareScreen
    from screens.history import HistoryScreen
    from screens.job import JobScreen
    from screens.request import RequestScreen

    engine.add_model("tiny", str(tiny["dir"]))
    folder = demo_request["folder"]
    app = ExpungeApp(paths=home, start_engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # 1. File the request through the form.
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        form.query_one("#title").value = demo_request["spec"]["title"]
        form.query_one("#reference").value = "DSR-TEST-CONSOLE"
        form.query_one("#model").value = "tiny"
        for kind in ("forget", "retain", "holdout"):
            form.query_one(f"#{kind}").value = str(folder / f"{kind}.jsonl")
        form.query_one("#sensitive").text = "\n".join(demo_request["spec"]["sensitive"])
        await until(pilot, lambda: form.counts.get("forget") == len(demo_request["forget"]), 30, "the preview")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RequestScreen), 60, "the request screen")
        await settle(pilot)
        request_id = app.screen.request_id
        first = app.screen.detail["jobs"][0]

        # 2. Watch the job live: the progress moves, the checklist fills in, then the verdicts arrive.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen), 30, "the job screen")
        job_screen = app.screen
        phases = set()
        deadline = time.monotonic() + 800
        while job_screen.detail is None or job_screen.detail["job"]["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the first job did not finish"
            await pilot.pause(0.25)
            live = app.live.get(first["id"])
            if live:
                phases.add(live.phase)
        await settle(pilot)
        job = job_screen.detail["job"]
        assert job["status"] == "succeeded", job["error"]
        assert {"load", "verify:unit"} <= phases or "train" in phases, phases
        assert any(n.title == "job finished" for n in app._notifications)
        metrics = job_screen.query_one("#metric-table", KeyedTable)
        forget = metrics.get_cell("unit/forget_rouge_l", "after")
        assert forget not in ("…", "—")
        assert job_screen.query_one("#checklist").tracker.reached >= 7

        # 3. The ladder shows each stage's verdict; escalate with an edited hyperparameter.
        await pilot.press("escape")
        await settle(pilot)
        ladder = app.screen.query_one("#ladder", KeyedTable)
        assert ladder.get_cell(str(first["id"]), "verdict").plain in ("✓ PASS", "✗ FAIL")
        # The neighbours the engine built, and what was trained on and what judged.
        head = str(app.screen.query_one("#request-head").render())
        assert "neighbours (built) " in head and " judged · retain: " in head, head
        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#hp-steps"), 30, "the escalation modal")
        modal = app.screen
        assert "tier 3" in str(modal.query_one("#escalate-title").render())
        modal.query_one("#hp-steps").value = "4"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RequestScreen) and len(app.screen.detail["jobs"]) == 2,
                    60, "the escalated job")
        second = app.screen.detail["jobs"][1]
        assert second["tier"] == 3 and second["hyper"]["steps"] == 4
        await until(pilot, lambda: app.screen.detail["jobs"][1]["status"] in ("succeeded", "failed"), 800,
                    "the escalated job to finish")
        assert app.screen.detail["jobs"][1]["status"] == "succeeded"

        # 4. History finds both; compare them.
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.loaded, 30, "history")
        await settle(pilot)
        table = app.screen.query_one("#jobs-table", KeyedTable)
        assert table._order[:2] == [str(second["id"]), str(first["id"])]
        await pilot.press("space", "down", "space", "c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), 30, "compare")
        await settle(pilot)
        rows = app.screen.query_one("#compare-metrics", KeyedTable)._order
        assert "unit/forget_rouge_l" in rows and "control/retain_rouge_l" in rows
        assert app.screen.ids == sorted([first["id"], second["id"]])
        assert request_id == second["request_id"]
