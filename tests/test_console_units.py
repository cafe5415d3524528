"""The console's pure pieces: the escalation form's value round trip for every registered method, the
history filter syntax, the stage checklist's reading of phases, NO_COLOR styles."""

from __future__ import annotations

from datetime import date

import pytest


def test_every_methods_defaults_round_trip_through_the_escalation_form():
    from engine.compute.methods.base import list_methods, validate_hyper
    from screens.confirm import check_range, field_kind, nullable, parse_value, value_text

    for m in list_methods():
        hyper = {}
        for key, value in m["defaults"].items():
            kind, prop = field_kind(m["schema"], key)
            hyper[key] = parse_value(value_text(value, kind), kind, nullable(prop))
            assert check_range(hyper[key], prop) is None, (m["name"], key)
        assert validate_hyper(m["name"], hyper) == m["defaults"], m["name"]


def test_escalation_form_rejects_bad_values():
    from screens.confirm import check_range, parse_value

    with pytest.raises(ValueError):
        parse_value("many", "integer")
    with pytest.raises(ValueError):
        parse_value("maybe", "boolean")
    assert parse_value("", "integer", optional=True) is None
    assert check_range(0.0, {"exclusiveMinimum": 0}) == "more than 0"
    assert check_range(5, {"minimum": 1, "maximum": 4}) == "at most 4"


def test_history_filter_syntax():
    from console.widgets.history_filter import Query

    q = Query.parse("alma status:failed,running verdict:fail model:demo method:rmu since:2026-03-01 "
                    "until:2026-03-31 DSR", models=["demo"], methods=["rmu", "npo"])
    assert q.errors == [] and q.search == "alma DSR"
    assert (q.status, q.verdict, q.model, q.method) == ("failed,running", "fail", "demo", "rmu")
    assert (q.since, q.until) == (date(2026, 3, 1), date(2026, 3, 31))
    assert Query.parse("date:2026-03-02").since == Query.parse("date:2026-03-02").until == date(2026, 3, 2)
    bad = Query.parse("status:nope verdict:maybe model:other since:03/01 method:", models=["demo"])
    assert len(bad.errors) == 5 and bad.status is None and bad.model is None
    assert Query.parse("status:closed", view="requests").status == "closed"
    assert Query.parse("verdict:pass", view="requests").errors  # requests filter by status and words only
    assert Query.parse("key:value").search == "key:value"  # an unknown key is a search word


def test_checklist_reads_phases_in_order():
    from console.widgets.checklist import ITEMS, PhaseTracker

    t = PhaseTracker()
    for phase in ("start", "load", "verify:unit", "verify:control", "verify:reconstruction", "locate", "train"):
        t.see(phase)
    assert ITEMS[t.reached] == "method" and t.before_seen
    t.see("verify:unit")
    assert ITEMS[t.reached] == "unit"  # after the method: the 'after' measurement
    t.see("save")
    assert ITEMS[t.reached] == "save"
    cached = PhaseTracker()
    for phase in ("load", "train", "verify:control"):
        cached.see(phase)
    assert ITEMS[cached.reached] == "control" and not cached.before_seen
    # Opened mid-job at a verify phase: the method's step total tells 'after' from 'before'.
    late = PhaseTracker()
    late.see("verify:control", total=60)
    assert ITEMS[late.reached] == "control"


def test_no_color_styles_keep_failures_visible(monkeypatch):
    from console.widgets.format import passed, verdict

    assert str(verdict("fail").style) == "bold red"
    monkeypatch.setenv("NO_COLOR", "1")
    assert verdict("fail").plain == "✗ FAIL" and "reverse" in str(verdict("fail").style)
    assert passed(True).plain == "✓ PASS" and "green" not in str(passed(True).style)


def test_evidence_highlights_the_leaked_spans_only(monkeypatch):
    from console.widgets.evidence import highlighted, output_text

    monkeypatch.delenv("NO_COLOR", raising=False)
    text = output_text("after", "It is 415-555-0142, call.", True, [[6, 18]])
    styled = [(text.plain[s.start:s.end], str(s.style)) for s in text.spans]
    assert ("415-555-0142", "bold reverse red") in styled
    assert not any(part == "It is " or part.endswith("call.") for part, _ in styled)
    # Without colour the span is still reversed and bold.
    monkeypatch.setenv("NO_COLOR", "1")
    t = highlighted("It is 415-555-0142, call.", [[6, 18]])
    assert [(t.plain[s.start:s.end], str(s.style)) for s in t.spans] == [("415-555-0142", "bold reverse")]
    # Offsets past the end (an output edited since) are clipped, never an error.
    assert [(s.start, s.end) for s in highlighted("short", [[3, 99], [7, 9]]).spans] == [(3, 5)]
    # No spans recorded (an older engine's row): the whole leaked output is marked, as before.
    old = output_text("after", "the whole answer", True, None)
    assert any(old.plain[s.start:s.end] == "the whole answer" for s in old.spans)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_keyed_table_painted_before_it_sizes_its_columns_repaints_them_wide(anyio_backend):
    """A frame painted between `sync` (add_row) and the table's idle, where Textual sizes the columns, must not
    leave the rows cut to the header widths: on a busy event loop the history's requests table kept showing
    "Erasu" and "DSR-2026-" after its columns had been sized."""
    from textual.app import App

    from console.widgets.table import KeyedTable

    class One(App):
        def compose(self):
            yield KeyedTable([("id", "req"), ("title", "title"), ("reference", "reference")])

    app = One()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(KeyedTable)
        await pilot.pause()
        table.sync([("4", ["4", "Erasure request 4802", "DSR-2026-4802"])])
        assert "DSR-2026-4802" not in table.render_line(1).text  # painted before the idle: cut to "reference"
        await pilot.pause()
        await pilot.pause()
        assert [c.content_width for c in table.ordered_columns] == [3, 20, 13]
        shot = app.export_screenshot()
        assert "DSR-2026-4802" in shot and "Erasure request 4802" in shot.replace("&#160;", " ")
