"""Snapshots of every screen at 80×24 and 120×40, from a real engine over a store with fixed content
(tests/console_store.py writes it through the engine's own service and scheduler functions, with a fixed
clock). Update with `pytest tests/test_console_snapshots.py --snapshot-update` and review the SVGs."""

from __future__ import annotations

import pytest

from tests.console_store import prefilled_engine, settle

pytestmark = pytest.mark.xdist_group("console-snapshots")

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(scope="module")
def engine_home():
    with prefilled_engine("ex-snap-") as home:
        yield home


def make_app(paths, **kwargs):
    from console.app import ExpungeApp

    return ExpungeApp(paths=paths, start_engine=False, **kwargs)


def keys(*pressed):
    async def run(pilot):
        await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)
    return run


def screens(ids):
    """name -> (app kwargs, keys pressed once the screen has loaded)."""
    return {
        "dashboard": ({}, ()),
        "new_request": ({}, ("n",)),
        "request": ({"open_request": ids["request"]}, ()),
        "escalate": ({"open_request": ids["request"]}, ("e",)),
        "close_confirm": ({"open_request": ids["request"]}, ("C",)),
        "report": ({"open_request": ids["request"]}, ("r",)),
        "closed_request": ({"open_request": ids["suppress_request"]}, ()),
        "job_overview": ({"open_job": ids["rmu"]}, ()),
        "job_metrics": ({"open_job": ids["rmu"]}, ("t",)),
        "job_locate": ({"open_job": ids["rmu"]}, ("t", "t")),
        "job_evidence": ({"open_job": ids["rmu"]}, ("t", "t", "t")),
        "job_details": ({"open_job": ids["graddiff"]}, ("t", "t", "t", "t")),
        "job_interrupted": ({"open_job": ids["interrupted"]}, ()),
        "job_failed": ({"open_job": ids["failed"]}, ()),
        "history": ({}, ("h",)),
        "history_requests": ({}, ("h", "v")),
        "compare": ({}, ()),
        "help": ({}, ("question_mark",)),
    }


NAMES = ["dashboard", "new_request", "request", "escalate", "close_confirm", "report", "closed_request", "job_overview",
         "job_metrics", "job_locate", "job_evidence", "job_details", "job_interrupted", "job_failed", "history",
         "history_requests", "compare", "help"]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_screen(snap_compare, engine_home, name, size):
    paths, ids = engine_home
    kwargs, pressed = screens(ids)[name]
    app = make_app(paths, **kwargs)
    if name == "compare":
        async def run(pilot):
            await settle(pilot)
            pilot.app.open_compare(ids["rmu"], ids["graddiff"])
            await settle(pilot)
        assert snap_compare(app, terminal_size=size, run_before=run)
    else:
        assert snap_compare(app, terminal_size=size, run_before=keys(*pressed))


@pytest.mark.parametrize("mode", ["no_color", "ansi_theme"])
@pytest.mark.parametrize("name", ["dashboard", "request", "job_metrics", "job_evidence"])
def test_screen_is_readable_without_colour_and_in_the_ansi_theme(snap_compare, engine_home, monkeypatch, name, mode):
    """Verdicts and leaks carry words and glyphs, not only colour (NO_COLOR), and the terminal's own palette
    works (the textual-ansi theme)."""
    paths, ids = engine_home
    if mode == "no_color":
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.setenv("EXPUNGE_THEME", "textual-ansi")
    kwargs, pressed = screens(ids)[name]
    app = make_app(paths, **kwargs)
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys(*pressed))
