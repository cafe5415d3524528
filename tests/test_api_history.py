"""History listing over the engine's real unix socket: server-side sorting and date windows on /jobs and
/requests, paged, and a 422 naming the field for a bad sort, order or date."""

from __future__ import annotations

import json

import pytest

from console.client import EngineClient, EngineError
from tests.console_store import prefilled_engine

pytestmark = [pytest.mark.xdist_group("api-history")]


@pytest.fixture(scope="module")
def client():
    with prefilled_engine("ex-apih-") as (paths, ids), EngineClient(paths) as c:
        yield c, ids


def job_ids(c, **params) -> list[int]:
    return [j["id"] for j in c.jobs(**params)["items"]]


def test_jobs_sort_by_each_key_both_ways(client):
    c, ids = client
    assert job_ids(c) == [6, 5, 4, 3, 2, 1]  # the default: newest id first
    assert job_ids(c, sort="created", order="asc") == [1, 2, 3, 4, 5, 6]
    # method names sort alphabetically; ties (two graddiff jobs) by id in the same direction
    assert job_ids(c, sort="method", order="asc") == [ids["graddiff"], ids["failed"], ids["guard"],
                                                       ids["interrupted"], ids["rmu"], ids["cancelled"]]
    assert job_ids(c, sort="method", order="desc") == [ids["cancelled"], ids["rmu"], ids["interrupted"],
                                                        ids["guard"], ids["failed"], ids["graddiff"]]
    # no verdict (not finished) sorts last in both directions
    assert job_ids(c, sort="verdict", order="asc") == [1, 2, 3, 4, 5, 6]  # fail < pass
    assert job_ids(c, sort="verdict", order="desc") == [3, 2, 1, 6, 5, 4]
    assert job_ids(c, sort="status", order="asc") == [6, 5, 4, 1, 2, 3]  # cancelled, failed, interrupted, succ.
    # updated = finished, else started: the cancelled job finished last, the interrupted one never did
    assert job_ids(c, sort="updated") == [6, 5, 4, 3, 2, 1]
    titles = [j["request_title"] for j in c.jobs(sort="title", order="asc")["items"]]
    assert titles == sorted(titles)


def test_jobs_sort_pages_agree_with_the_whole_list(client):
    c, _ = client
    whole = job_ids(c, sort="method", order="asc")
    pages = [job_ids(c, sort="method", order="asc", limit=2, offset=o) for o in (0, 2, 4)]
    assert sum(pages, []) == whole


def test_date_window_on_jobs_and_requests(client):
    c, ids = client
    # every prefilled job was created on 2026-03-02 between 09:04:30 and 09:40:30 UTC
    assert c.jobs(since="2026-03-02", until="2026-03-02")["total"] == 6  # until includes its whole day
    assert c.jobs(until="2026-03-01")["total"] == 0
    assert c.jobs(since="2026-03-03")["total"] == 0
    res = c.jobs(since="2026-03-02T09:20:00", until="2026-03-02T09:35:00")
    assert [j["id"] for j in res["items"]] == [ids["failed"], ids["interrupted"]] and res["total"] == 2
    assert job_ids(c, since="2026-03-02T09:20:00+00:00", sort="created", order="asc") == [4, 5, 6]
    assert job_ids(c, since="2026-03-02T10:20:00+01:00", sort="created", order="asc") == [4, 5, 6]  # any zone
    assert [r["id"] for r in c.requests(since="2026-03-02T09:10", until="2026-03-02T09:30")["items"]] == [3, 2]
    # updated for a request: its close, else its jobs' newest activity
    assert [r["id"] for r in c.requests(sort="updated")["items"]] == [4, 3, 2, 1]
    assert [r["id"] for r in c.requests(sort="title", order="asc")["items"]] == [1, 3, 4, 2]


@pytest.mark.parametrize(("params", "field"), [
    ({"sort": "colour"}, "query.sort"),
    ({"order": "sideways"}, "query.order"),
    ({"since": "yesterday"}, "query.since"),
    ({"until": "2026-02-30"}, "query.until"),
    ({"since": "2026-03-03", "until": "2026-03-02"}, "query.until"),
])
def test_bad_sort_or_dates_are_a_422_naming_the_field(client, params, field):
    c, _ = client
    for call in (c.jobs, c.requests):
        with pytest.raises(EngineError) as err:
            call(**params)
        assert err.value.status == 422 and str(err.value).startswith(field)


def test_the_cli_listings_sort_and_filter_by_date(client, monkeypatch):
    from click.testing import CliRunner

    from console.cli import cli

    c, ids = client
    monkeypatch.setenv("EXPUNGE_HOME", str(c.paths.config.parent))
    res = CliRunner().invoke(cli, ["jobs", "--sort", "method", "--order", "asc", "--since", "2026-03-02", "--json"])
    assert res.exit_code == 0, res.output
    assert [j["id"] for j in json.loads(res.output)["items"]][:2] == [ids["graddiff"], ids["failed"]]
    res = CliRunner().invoke(cli, ["requests", "--until", "2026-03-01", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["total"] == 0
    res = CliRunner().invoke(cli, ["jobs", "--since", "soon"])
    assert res.exit_code != 0 and "query.since" in res.output
