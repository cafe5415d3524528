"""The console's side of tuning: the escalation modal's "tune first" box files a tuned job, and a tuned job's screen
gets a Trials tab (the table, ★ the winner, and the forget-vs-retain scatter); an untuned job's screen has none."""

from __future__ import annotations

import pytest

from tests.console_store import prefilled_engine, settle
from tests.test_console_flows import app_for, cell, table_keys, until

pytestmark = [pytest.mark.xdist_group("console-flows"), pytest.mark.anyio]

TRIALS = [
    {"number": 0, "state": "complete", "params": {"lr": 0.005, "steps": 40}, "passed": True, "score": 0.52,
     "objective": 0.52, "steps": 18, "seconds": 8.6, "stages": {"unit": "pass", "control": "pass"},
     "metrics": {"forget_rouge_l": 0.33, "leak_rate": 0.0, "retain_rouge_l": 0.91, "retain_kl": 0.26},
     "reason": "the unit targets are met", "winner": False},
    {"number": 1, "state": "pruned", "params": {"lr": 0.0004, "steps": 90}, "seconds": 10.8,
     "reason": "the forget metrics stopped moving by step 24"},
    {"number": 2, "state": "complete", "params": {"lr": 0.0078, "steps": 50}, "passed": False, "score": 1.1,
     "objective": 11.1, "steps": 50, "seconds": 12.8, "stages": {"unit": "pass", "control": "fail"},
     "metrics": {"forget_rouge_l": 0.0, "leak_rate": 0.0, "retain_rouge_l": 0.62, "retain_kl": 0.9}},
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def engine_home():
    with prefilled_engine("ex-tune-") as home:
        yield home


async def test_the_tune_box_files_a_tuned_job_whose_screen_shows_its_trials(engine_home):
    from console.client import EngineClient
    from engine.control.service.trials import store_trial
    from screens.confirm import EscalateScreen
    from store.db import make_engine, session

    paths, ids = engine_home
    app = app_for(paths, open_request=ids["interrupted_request"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#tune"), what="the escalation modal")
        modal = app.screen
        modal.query_one("#tune").value = True
        modal.query_one("#tune-trials").value = "3"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, EscalateScreen), what="the job to be filed")
    client = EngineClient(paths)
    job = client.jobs(request_id=ids["interrupted_request"], sort="id", order="desc")["items"][0]
    client.close()
    assert job["tune"] == {"trials": 3, "minutes": None, "seed": 0}

    # The trials as the scheduler stores a worker's reports of them (the fake model here trains nothing).
    db = make_engine(paths.db)
    with session(db) as s:
        for trial in TRIALS:
            store_trial(s, job["id"], trial)
        store_trial(s, job["id"], {**TRIALS[0], "winner": True})
    db.dispose()

    app = app_for(paths, open_job=job["id"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await until(pilot, lambda: app.screen.query("#trials-table") and table_keys(app.screen, "#trials-table"),
                    what="the trials tab")
        screen = app.screen
        assert table_keys(screen, "#trials-table") == ["0", "1", "2"]
        assert cell(screen, "#trials-table", "0", "trial") == "0 ★"
        assert cell(screen, "#trials-table", "1", "state") == "pruned"
        assert cell(screen, "#trials-table", "2", "control") == "fail"
        for _ in range(5):  # `t` cycles through the tabs, the trials tab last
            await pilot.press("t")
        await pilot.pause(0.2)
        assert screen.query_one("#job-tabs").active == "trials"
        plot = screen.query_one("#trials-plot")
        assert plot.plt is not None and plot.region.height > 0

    # An untuned job's screen is as it was: no trials tab.
    app = app_for(paths, open_job=ids["graddiff"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not app.screen.query("#trials")
