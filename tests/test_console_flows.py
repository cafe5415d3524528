"""Pilot tests of the console's flows against a real engine (a detached daemon on a temporary EXPUNGE_HOME)
whose store holds fixed content; no model runs here except where a job is meant to fail (the registered
model has no usable weights), which exercises the failure toast and the error display."""

from __future__ import annotations

import json
import time

import pytest

from tests.console_store import PEOPLE, forget_rows, prefilled_engine, retain_rows, settle

pytestmark = [pytest.mark.xdist_group("console-flows"), pytest.mark.anyio]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def engine_home():
    with prefilled_engine("ex-flow-") as home:
        yield home


def app_for(paths, **kwargs):
    from console.app import ExpungeApp

    return ExpungeApp(paths=paths, start_engine=False, **kwargs)


async def until(pilot, predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what} (screen {pilot.app.screen!r})")


def table_keys(screen, selector: str) -> list[str]:
    from console.widgets.table import KeyedTable

    return list(screen.query_one(selector, KeyedTable)._order)


def cell(screen, selector: str, row: str, column: str) -> str:
    from console.widgets.table import KeyedTable

    value = screen.query_one(selector, KeyedTable).get_cell(row, column)
    return getattr(value, "plain", str(value))


async def test_dashboard_lists_requests_and_opens_one(engine_home):
    paths, ids = engine_home
    app = app_for(paths)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        # Open requests by days left (4 overdue, 3 due in 3 days, 1 in 12), then the closed one.
        assert table_keys(app.screen, "#requests") == ["4", "3", "1", "2"]
        assert cell(app.screen, "#requests", "2", "verdict") == "✓ PASS"
        assert [cell(app.screen, "#requests", k, "due") for k in ("4", "3", "1", "2")] == [
            "OVERDUE 2d", "3d left", "12d left", "on time"]
        app.screen.query_one("#requests").move_cursor(row=2)
        await pilot.press("enter")
        await settle(pilot)
        from screens.request import RequestScreen

        assert isinstance(app.screen, RequestScreen) and app.screen.request_id == ids["request"]
        # The ladder: one row per tier tried, a verdict per stage.
        assert cell(app.screen, "#ladder", str(ids["rmu"]), "reconstruction") == "✗ FAIL"
        assert cell(app.screen, "#ladder", str(ids["graddiff"]), "reconstruction") == "✓ PASS"
        await pilot.press("enter")  # opens the selected job
        await settle(pilot)
        from screens.job import JobScreen

        assert isinstance(app.screen, JobScreen) and app.screen.job_id == ids["rmu"]
        assert cell(app.screen, "#metric-table", "reconstruction/relearn_recovery", "verdict") == "✗ FAIL"
        assert cell(app.screen, "#metric-table", "unit/leak_rate", "delta") == "-0.750"
        await pilot.press("l")  # leaks only: the evidence tab with the one prompt that still leaks
        await pilot.pause(0.2)
        assert table_keys(app.screen, "#evidence-table") == ["2"]
        # Only the leaked span is highlighted (the engine's offsets, through the store and the API), not the
        # whole answer "Alma Rivera lives at 12 Juniper Lane, Westmere."
        from console.widgets.evidence import SPAN_STYLE, EvidenceViewer

        viewer = app.screen.query_one(EvidenceViewer)
        assert viewer.rows[2]["spans_after"] == [[21, 46]]
        shown = viewer.detail
        marked = [shown.plain[s.start:s.end] for s in shown.spans if str(s.style) == SPAN_STYLE]
        marked = [m for m in marked if m != " LEAK "]  # the badges share the style
        assert marked == ["12 Juniper Lane, Westmere", "12 Juniper Lane, Westmere"]  # before and after


async def test_history_filters_search_sort_and_compare(engine_home):
    paths, ids = engine_home
    app = app_for(paths)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        screen = app.screen
        assert table_keys(screen, "#jobs-table") == ["6", "5", "4", "3", "2", "1"]

        async def filter_to(text: str) -> list[str]:
            await pilot.press("slash")
            screen.query_one("#filter").value = text
            await pilot.press("enter")  # back to the table
            await pilot.pause(0.5)
            await settle(pilot)
            return table_keys(screen, "#jobs-table")

        assert await filter_to("status:failed") == [str(ids["failed"])]
        assert await filter_to("verdict:pass") == [str(ids["guard"]), str(ids["graddiff"])]
        assert await filter_to("method:rmu") == [str(ids["rmu"])]
        assert await filter_to("model:demo status:succeeded,interrupted") == ["4", "3", "2", "1"]
        assert await filter_to("4711") == [str(ids["graddiff"]), str(ids["rmu"])]  # title or reference
        assert await filter_to("DSR-2026-4790") == [str(ids["interrupted"])]
        assert await filter_to("until:2026-03-01") == []
        assert await filter_to("since:2026-03-02 until:2026-03-02") == ["6", "5", "4", "3", "2", "1"]
        assert await filter_to("status:nonsense") == ["6", "5", "4", "3", "2", "1"]
        assert "status: nonsense?" in str(screen.query_one("#history-info").render())
        await filter_to("")
        # The date fields of the filter bar (the engine filters: no client-side scan).
        screen.query_one("#since").value = "2026-03-03"
        await pilot.pause(0.5)
        await settle(pilot)
        assert table_keys(screen, "#jobs-table") == []
        screen.query_one("#since").value = "2026-03-02"
        screen.query_one("#until").value = "2026-03-02"
        await pilot.pause(0.5)
        await settle(pilot)
        assert table_keys(screen, "#jobs-table") == ["6", "5", "4", "3", "2", "1"]
        screen.query_one("#until").value = "2026-13-01"
        await pilot.pause(0.5)
        await settle(pilot)
        assert "until: a date YYYY-MM-DD" in str(screen.query_one("#history-info").render())
        screen.query_one("#since").value = screen.query_one("#until").value = ""
        screen.query_one("#jobs-table").focus()
        await pilot.pause(0.5)
        await settle(pilot)
        # Sorting is the engine's: s cycles the column, o reverses, a header click sorts by that column.
        await pilot.press("s")  # updated, newest first
        await settle(pilot)
        assert screen.sort == "updated" and table_keys(screen, "#jobs-table") == ["6", "5", "4", "3", "2", "1"]
        await pilot.press("s")  # status, A to Z: cancelled, failed, interrupted, succeeded (by id)
        await settle(pilot)
        assert table_keys(screen, "#jobs-table") == ["6", "5", "4", "1", "2", "3"]
        assert "by status" in str(screen.query_one("#history-info").render())
        await pilot.press("o")
        await settle(pilot)
        assert table_keys(screen, "#jobs-table") == ["3", "2", "1", "4", "5", "6"]
        table = screen.query_one("#jobs-table")
        table.post_message(table.HeaderSelected(table, table.columns["method"].key, 4, table.columns["method"].label))
        await pilot.pause(0.2)
        await settle(pilot)
        assert screen.sort == "method" and table_keys(screen, "#jobs-table") == [
            str(ids[k]) for k in ("graddiff", "failed", "guard", "interrupted", "rmu", "cancelled")]
        table.post_message(table.HeaderSelected(table, table.columns["created"].key, 8, table.columns["created"].label))
        await pilot.pause(0.2)
        await settle(pilot)
        await pilot.press("o")  # oldest first
        await settle(pilot)
        assert table_keys(screen, "#jobs-table") == ["1", "2", "3", "4", "5", "6"]
        # Mark two jobs and compare them.
        await pilot.press("space", "down", "space", "c")
        await settle(pilot)
        from screens.compare import CompareScreen

        assert isinstance(app.screen, CompareScreen) and app.screen.ids == [ids["rmu"], ids["graddiff"]]
        assert cell(app.screen, "#compare-metrics", "reconstruction/relearn_recovery", "diff") == "-0.430"
        assert cell(app.screen, "#compare-hyper", "method", "b") == "graddiff"
        await pilot.press("escape", "v")  # the requests view
        await settle(pilot)
        assert table_keys(app.screen, "#requests-table") == ["4", "3", "2", "1"]
        app.screen.query_one("#filter").value = "status:closed"
        await pilot.pause(0.5)
        await settle(pilot)
        assert table_keys(app.screen, "#requests-table") == [str(ids["suppress_request"])]


async def test_filter_line_completes_keys_and_values(engine_home):
    paths, _ = engine_home
    app = app_for(paths)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        from console.widgets.history_filter import FilterSuggester

        s = FilterSuggester(app.screen)
        assert await s.get_suggestion("sta") == "status:"
        assert await s.get_suggestion("alma status:fa") == "alma status:failed"
        assert await s.get_suggestion("status:failed,int") == "status:failed,interrupted"
        assert await s.get_suggestion("method:gr") == "method:graddiff"
        assert await s.get_suggestion("model:de") == "model:demo"


async def test_command_palette_opens_requests_jobs_and_compare(engine_home):
    paths, ids = engine_home
    app = app_for(paths)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        from screens.compare import CompareScreen
        from screens.job import JobScreen
        from screens.request import RequestScreen

        for query, check in (("DSR-2026-4802", lambda s: isinstance(s, RequestScreen) and s.request_id == 4),
                             ("job 3: tier 1 guard", lambda s: isinstance(s, JobScreen) and s.job_id == 3),
                             ("compare 2 1", lambda s: isinstance(s, CompareScreen) and s.ids == [1, 2])):
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*query)
            await pilot.pause(1.5)
            await pilot.press("enter")
            await until(pilot, lambda check=check: check(app.screen), what=query)
            await settle(pilot)
            await pilot.press("escape")
            await settle(pilot)


async def test_escalate_modal_names_the_method_and_validates_hyperparameters(engine_home):
    paths, ids = engine_home
    app = app_for(paths, open_request=ids["interrupted_request"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#hp-steps"), what="the escalation modal")
        from screens.confirm import EscalateScreen

        modal = app.screen
        assert isinstance(modal, EscalateScreen)
        assert "tier 3 · npo" in str(modal.query_one("#escalate-title").render())  # the engine's default
        modal.query_one("#hp-steps").value = "many"
        modal.query_one("#hp-lr").value = "-1"
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
        error = str(modal.query_one("#escalate-error").render())
        assert "steps: expected integer" in error and "lr: more than 0" in error
        assert app.screen is modal  # nothing was filed
        await pilot.press("escape")
        await settle(pilot)


async def test_close_request_asks_first_and_purges(engine_home):
    paths, ids = engine_home
    app = app_for(paths, open_request=ids["failed_request"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("C")
        await pilot.pause(0.3)
        await pilot.press("n")  # the safe answer
        await settle(pilot)
        assert app.screen.detail["request"]["status"] == "open"
        await pilot.press("C")
        await pilot.pause(0.3)
        await pilot.press("y")
        await until(pilot, lambda: app.screen.detail["request"]["status"] == "closed", what="the close")
        assert all(d["purged"] for d in app.screen.detail["data"])


async def test_report_action_writes_the_sign_off_report_off_the_ui(engine_home, tmp_path, monkeypatch):
    """r on the request screen: a modal asks for the path (default ./<reference>-report.html); the engine renders
    the report in a thread worker, the file is written atomically, and a toast names its absolute path."""
    from screens.report import ReportScreen

    paths, ids = engine_home
    monkeypatch.chdir(tmp_path)
    app = app_for(paths, open_request=ids["request"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert any(b.action == "report" for _, b, *_ in app.screen.active_bindings.values())  # in the footer
        await pilot.press("r")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ReportScreen)
        field = app.screen.query_one("#report-path")
        assert field.value == "./DSR-2026-4711-report.html"
        # Refused in the modal, naming the problem: a suffix other than .html/.md, a folder that is not there.
        for bad, message in (("notes.txt", "must end in .html or .md"), ("nowhere/r.html", "no such folder")):
            field.value = bad
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ReportScreen)
            assert message in str(app.screen.query_one("#report-error").render())
        field.value = "./DSR-2026-4711-report.html"
        await pilot.press("enter")
        target = tmp_path / "DSR-2026-4711-report.html"
        await until(pilot, lambda: any(n.title.endswith("written") for n in app._notifications), what="the toast")
        text = target.read_text()
        assert text.lstrip().lower().startswith("<!doctype html") and "DSR-2026-4711" in text
        assert [n for n in app._notifications if n.message.startswith(str(target))]  # the absolute path
        assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file left
        # Markdown for a .md name, also from the command palette's action.
        from console.commands import ActionCommands

        provider = ActionCommands(app.screen)
        name, callback, _ = provider._actions()[0]
        assert name.startswith("Report:")
        callback()
        await pilot.pause(0.2)
        app.screen.query_one("#report-path").value = str(tmp_path / "signoff.md")
        await pilot.press("enter")
        md = tmp_path / "signoff.md"
        await until(pilot, md.exists, what="the markdown report")
        assert "DSR-2026-4711" in md.read_text() and not md.read_text().lstrip().startswith("<")
        # An engine refusal is an error toast naming the problem (a request that does not exist).
        app.screen.request_id = 999_999
        app.screen.write_report(tmp_path / "ghost.html")
        await until(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="the error toast")
        error = next(n for n in app._notifications if n.severity == "error")
        assert "999999" in error.message and not (tmp_path / "ghost.html").exists()


async def test_form_validates_as_typed_and_a_failed_job_toasts(engine_home, tmp_path):
    paths, ids = engine_home
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(r) + "\n" for r in forget_rows("Bo Lindqvist")))
    (tmp_path / "bad.jsonl").write_text('{"question": "q?"}\n')
    retain = tmp_path / "retain.jsonl"
    retain.write_text("".join(json.dumps(r) + "\n" for r in retain_rows()))
    app = app_for(paths)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        await pilot.press("ctrl+s")  # nothing typed yet: refused, with the reasons
        await pilot.pause(0.3)
        assert "title: a title is required" in str(form.query_one("#form-error").render())
        form.query_one("#forget").value = str(tmp_path / "bad.jsonl")
        await until(pilot, lambda: "forget" in form.errors, what="the forget error")
        assert "'answer'" in form.errors["forget"]
        form.query_one("#forget").value = str(forget)
        await until(pilot, lambda: form.counts.get("forget") == 5, what="the forget preview")
        assert "5 rows" in str(form.query_one("#forget-note").render())
        form.query_one("#retain").value = str(retain)
        await until(pilot, lambda: form.counts.get("retain") == 6, what="the retain preview")
        form.query_one("#title").value = "Erasure request 4900 — Bo Lindqvist"
        form.query_one("#reference").value = "DSR-2026-4900"
        form.query_one("#sensitive").text = PEOPLE["Bo Lindqvist"]["phone"]
        form.query_one("#method").value = "ga"
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        from screens.request import RequestScreen

        await until(pilot, lambda: isinstance(app.screen, RequestScreen), what="the request screen")
        await settle(pilot)
        request = app.screen.detail["request"]
        assert request["title"] == "Erasure request 4900 — Bo Lindqvist" and request["reference"] == "DSR-2026-4900"
        jobs = app.screen.detail["jobs"]
        assert [j["method"] for j in jobs] == ["ga"]
        # The registered model has no usable weights: the worker fails the job, the console says so.
        await until(pilot, lambda: any(n.title == "job failed" for n in app._notifications), timeout=240,
                    what="the failure toast")
        await until(pilot, lambda: app.screen.detail["jobs"][0]["status"] == "failed", what="the failed row")
        assert cell(app.screen, "#ladder", str(jobs[0]["id"]), "status") == "failed"


async def test_spec_file_fills_the_form(engine_home, tmp_path):
    paths, _ = engine_home
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget_rows("Alma Rivera")))
    import yaml

    (tmp_path / "request.yaml").write_text(yaml.safe_dump({
        "title": "Erasure request 4712 — Alma Rivera", "reference": "DSR-2026-4712", "intention": "suppress",
        "model": "demo", "forget": "forget.jsonl", "retain": retain_rows(), "sensitive": ["415-555-0142"],
        "policy": "strict", "verification": "quick", "chat_template": "none", "received": "2026-03-01",
        "legal_basis": "GDPR Art. 17(1)(d)"}, allow_unicode=True))
    app = app_for(paths)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        form.query_one("#spec-file").value = str(tmp_path / "request.yaml")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: form.counts.get("forget") == 5, what="the forget preview")
        assert form.query_one("#title").value == "Erasure request 4712 — Alma Rivera"
        assert form.query_one("#intention").value == "suppress"
        assert form.query_one("#policy").value == "strict"
        assert form.counts["retain"] == 6 and "inline in the spec" in str(form.query_one("#retain-note").render())
        assert form.sensitive() == ["415-555-0142"]
        spec, problems = form.build()
        assert problems == [] and len(spec["forget"]) == 5 and spec["retain"] == retain_rows()
        assert spec["verification"] == "quick" and spec["chat_template"] == "none"
        # The legal clock: as the spec gave it; the due date left blank takes the engine's default.
        assert (spec["received"], spec["legal_basis"]) == ("2026-03-01", "GDPR Art. 17(1)(d)") and "due" not in spec
        form.query_one("#chat-template").value = "model"  # the model's own setting: the field is left out
        spec, _ = form.build()
        assert "chat_template" not in spec and spec["verification"] == "quick"


async def test_reconnects_when_the_engine_restarts(engine_home):
    from engine.control.daemon import start, stop

    paths, _ = engine_home
    app = app_for(paths)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        first_pid = app.engine_pid
        loads = app.screen.load_count
        stop(paths)
        await until(pilot, lambda: not app.connected, what="the disconnect")
        assert "retrying" in app.connection_detail
        start(paths)
        await until(pilot, lambda: app.connected, timeout=60, what="the reconnect")
        await settle(pilot)
        assert app.engine_pid != first_pid
        assert app.screen.load_count > loads  # the dashboard reloaded from the new engine


async def test_progress_floods_are_coalesced(engine_home):
    """A worker reports every step; the console hands the screens at most ~4 updates a second, loses no loss
    point and shows the newest step."""
    paths, ids = engine_home
    app = app_for(paths, open_job=ids["interrupted"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        applied = []
        original = screen.apply
        screen.apply = lambda update: (applied.append(update), original(update))
        job_id = ids["interrupted"]
        started = time.monotonic()
        for step in range(1, 2001):
            app._take({"type": "progress", "job_id": job_id, "phase": "train", "step": step, "total": 2000,
                       "loss": 3.0 - step / 1000, "eta": (2000 - step) * 0.01})
            if step % 100 == 0:
                await pilot.pause(0.05)
        await pilot.pause(0.6)
        elapsed = time.monotonic() - started
        assert 1 <= len(applied) <= elapsed / 0.25 + 2
        assert sum(len(u.progress[job_id].points) for u in applied) == 2000
        from console.widgets.charts import LossChart

        assert max(screen.query_one(LossChart).points) == 2000
        from console.widgets.progress import JobProgressView

        assert "2000/2000" in screen.query_one(JobProgressView).render().plain
