"""Who decided, who ran, who signed (issue 15), over the engine's real sockets: the unix socket's peer named by
the kernel (SO_PEERCRED), a second identity through a named TCP token, roles refused with 403 naming the role,
four-eyes acceptance, the legal deadline with audited extensions, and the audit export checked from the file
alone. The CLI runs as a subprocess; EXPUNGE_URL and EXPUNGE_TOKEN make it a token's client."""

from __future__ import annotations

import json
import os
import pwd
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

EXPUNGE = str(Path(sys.executable).parent / "expunge")
ME = pwd.getpwuid(os.getuid()).pw_name  # the socket's peer, as the kernel names this test process


def run(home, *args, token: str | None = None, url: str | None = None, check=True):
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent), "COLUMNS": "200"}  # wide enough for every column
    env.pop("EXPUNGE_URL", None)
    env.pop("EXPUNGE_TOKEN", None)
    if url:
        env.update(EXPUNGE_URL=url, EXPUNGE_TOKEN=token or "")
    res = subprocess.run([EXPUNGE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"expunge {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture
def tcp_engine(home):
    """A real engine on its unix socket and a loopback TCP port: (client on the socket, the TCP url)."""
    from console.client import EngineClient
    from engine.control.daemon import start, stop

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start(home, tcp=f"127.0.0.1:{port}")
    client = EngineClient(home)
    yield client, f"http://127.0.0.1:{port}"
    client.close()
    stop(home)


def add_token(home, name: str, *roles: str) -> str:
    args = ["tokens", "add", name, "--json"]
    for role in roles:
        args += ["--role", role]
    return json.loads(run(home, *args).stdout)["token"]


def audit_rows(home) -> list[tuple]:
    con = sqlite3.connect(home.db)
    try:
        return con.execute("select id, actor, action, subject, detail_json from auditevent order by id").fetchall()
    finally:
        con.close()


def spec_body(demo_request, **changes) -> dict:
    from engine.schema.spec import load_spec_file

    return {**load_spec_file(demo_request["spec_path"]), **changes}


def test_each_row_names_its_real_caller_and_a_body_cannot_set_it(tcp_engine, home, tiny, demo_request):
    client, url = tcp_engine
    client.add_model("tiny", str(tiny["dir"]))
    assert client.whoami() == {"name": ME, "roles": ["approver", "operator", "viewer"], "via": "socket",
                               "owner": True}
    req = client.submit(spec_body(demo_request), start=False)["request"]
    assert req["requested_by"] == ME

    bob = add_token(home, "bob", "operator")
    assert json.loads(run(home, "whoami", "--json", url=url, token=bob).stdout)["name"] == "bob"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bob}"}) as http:
        # A body naming an actor is refused, naming the field; a query parameter of that name is ignored.
        r = http.post("/jobs", json={"request_id": req["id"], "method": "graddiff", "actor": "mallory"})
        assert r.status_code == 422 and "actor" in r.text
        r = http.post("/jobs", params={"actor": "mallory"}, json={"request_id": req["id"], "method": "graddiff",
                                                                 "hyper": {"steps": 2}})
        assert r.status_code == 201 and r.json()["requested_by"] == "bob"
        job_id = r.json()["id"]
        assert http.post(f"/jobs/{job_id}/cancel").status_code == 200

    rows = audit_rows(home)
    by_action = {(a, subj): actor for _id, actor, a, subj, _d in rows}
    assert by_action[("request.create", f"request:{req['id']}")] == ME
    assert by_action[("token.add", "token:bob")] == ME
    assert by_action[("job.queue", f"job:{job_id}")] == "bob"
    assert by_action[("job.cancel", f"job:{job_id}")] == "bob"
    assert not any(actor in ("operator", "mallory") for _id, actor, *_ in rows)
    # Engine-side rows are the engine's, carrying the job's requester.
    for _id, actor, action, _subj, detail in rows:
        if action == "job.start":
            assert actor == "engine" and json.loads(detail)["requester"] == "bob"

    # Revoked: the next request is refused, and the revocation is audited as the owner's.
    run(home, "tokens", "revoke", "bob")
    res = run(home, "whoami", url=url, token=bob, check=False)
    assert res.returncode == 1 and "revoked" in res.stderr
    assert audit_rows(home)[-1][1:4] == (ME, "token.revoke", "token:bob")
    listed = json.loads(run(home, "tokens", "list", "--json").stdout)
    assert listed[0]["name"] == "bob" and listed[0]["revoked_at"] and "token" not in listed[0]
    # Only the hash is stored.
    con = sqlite3.connect(home.db)
    assert bob not in json.dumps(con.execute("select * from apitoken").fetchall())
    con.close()


def test_a_viewer_token_reads_but_is_refused_filing_naming_the_role(tcp_engine, home, demo_request):
    client, url = tcp_engine
    viewer = add_token(home, "vera", "viewer")
    assert run(home, "requests", "--json", url=url, token=viewer).returncode == 0
    res = run(home, "submit", str(demo_request["spec_path"]), url=url, token=viewer, check=False)
    assert res.returncode == 1
    assert "needs the operator role" in res.stderr and "vera has viewer" in res.stderr
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {viewer}"}) as http:
        r = http.post("/requests", json={"spec": spec_body(demo_request), "start": False})
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        # Tokens are the socket owner's to make, whatever the token's roles.
        assert http.post("/tokens", json={"name": "eve", "roles": ["approver"]}).status_code == 403
        assert http.get("/health", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert sqlite3.connect(home.db).execute("select count(*) from request").fetchone()[0] == 0


def test_access_config_takes_roles_from_the_socket_owner(home, tiny):
    """access.toml: the owner may run but not accept; a malformed file stops the engine, naming it."""
    from console.client import EngineClient, EngineError
    from engine.control.daemon import start, stop

    (home.config / "access.toml").write_text('owner = ["viewer", "operator", "judge"]\n')
    with pytest.raises(RuntimeError, match="unknown role judge"):
        start(home, wait=30)
    (home.config / "access.toml").write_text('owner = ["viewer", "operator"]\n')
    start(home)
    try:
        with EngineClient(home) as c:
            assert c.whoami()["roles"] == ["operator", "viewer"]
            with pytest.raises(EngineError, match="needs the approver role") as err:
                c.accept(1, 1)
            assert err.value.status == 403
    finally:
        stop(home)


def test_due_date_defaults_and_the_extension_is_audited(engine, home, tiny, demo_request):
    engine.add_model("tiny", str(tiny["dir"]))
    today = datetime.now(UTC).date()
    fresh = engine.submit(spec_body(demo_request), start=False)["request"]
    assert fresh["received_at"][:10] == today.isoformat()
    assert fresh["due_at"][:10] == (today + timedelta(days=30)).isoformat() and fresh["days_left"] == 30
    assert fresh["legal_basis"].startswith("GDPR Art. 17")
    soon = engine.submit(spec_body(demo_request, received=(today - timedelta(days=25)).isoformat(),
                                   legal_basis="GDPR Art. 17(1)(a)"), start=False)["request"]
    late = engine.submit(spec_body(demo_request, received=(today - timedelta(days=33)).isoformat()),
                         start=False)["request"]
    assert soon["days_left"] == 5 and not soon["overdue"]
    assert late["days_left"] == -3 and late["overdue"]
    from console.client import EngineError

    with pytest.raises(EngineError, match="more than 30 days after receipt"):
        engine.submit(spec_body(demo_request, due=(today + timedelta(days=45)).isoformat()), start=False)
    with pytest.raises(EngineError, match="in the future"):
        engine.submit(spec_body(demo_request, received=(today + timedelta(days=2)).isoformat()), start=False)

    listed = json.loads(run(home, "requests", "--due", "7d", "--json").stdout)["items"]
    assert [r["id"] for r in listed] == [late["id"], soon["id"]]  # overdue first, then by due date
    text = run(home, "requests", "--due", "7d").stdout
    assert "OVERDUE 3d" in text and "5d left" in text

    res = json.loads(run(home, "extend", str(soon["id"]), "--days", "40", "--reason", "complex request, "
                         "data subject informed", "--json").stdout)
    assert res["days_left"] == 45 and res["extension_days"] == 40
    over = run(home, "extend", str(soon["id"]), "--days", "30", "--reason", "more", check=False)
    assert over.returncode == 1 and "at most 20 more" in over.stderr
    ext = [r for r in audit_rows(home) if r[2] == "request.extend"]
    assert len(ext) == 1 and ext[0][1] == ME and ext[0][3] == f"request:{soon['id']}"
    assert json.loads(ext[0][4])["days"] == 40 and "complex request" in json.loads(ext[0][4])["reason"]
    assert engine.audit_verify()["ok"]


def test_an_exported_audit_file_verifies_alone_and_an_edited_line_is_named(engine, home, tmp_path):
    engine.add_token("auditor", ["viewer"])
    engine.add_token("clerk", ["operator"])
    out = tmp_path / "audit.jsonl"
    run(home, "audit", "export", "--since", date.today().isoformat(), "--out", str(out))
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["rows"] == len(lines) - 1 == 2 and header["head"] == engine.audit_verify()["head"]
    # The check needs only the file: no engine, no database.
    bare = {**os.environ, "EXPUNGE_HOME": str(tmp_path / "nowhere")}
    ok = subprocess.run([EXPUNGE, "audit", "verify", "--file", str(out)], capture_output=True, text=True, env=bare)
    assert ok.returncode == 0 and "intact: 2 rows" in ok.stdout
    assert not (tmp_path / "nowhere").exists()

    edited = lines[:]
    edited[2] = edited[2].replace('"actor": "' + ME + '"', '"actor": "someone-else"')
    assert edited[2] != lines[2]
    out.write_text("\n".join(edited) + "\n")
    bad = subprocess.run([EXPUNGE, "audit", "verify", "--file", str(out), "--json"], capture_output=True,
                         text=True, env=bare)
    res = json.loads(bad.stdout)
    assert bad.returncode == 1 and res["bad_line"] == 3 and "edited" in res["reason"]
    out.write_text("\n".join(lines[:-1]) + "\n")  # the newest row cut off: the header's count and head say so
    cut = subprocess.run([EXPUNGE, "audit", "verify", "--file", str(out)], capture_output=True, text=True, env=bare)
    assert cut.returncode == 1 and "line 1" in cut.stdout and "cut off" in cut.stdout


FOUR_EYES = 'approval = "second_person"\n'


@pytest.mark.slow
def test_four_eyes_acceptance_refuses_the_executor_and_the_report_names_everyone(tcp_engine, home, tiny,
                                                                               demo_request):
    """A policy with approval = "second_person": the job's executor is refused; an approver token accepts
    with a comment; the report names who filed, ran and approved, with the rule and the deadline."""
    client, url = tcp_engine
    client.add_model("tiny", str(tiny["dir"]))
    home.policies.mkdir(parents=True, exist_ok=True)
    default = (Path(__file__).resolve().parent.parent / "engine" / "policies" / "default.toml").read_text()
    (home.policies / "foureyes.toml").write_text(FOUR_EYES + default)
    body = spec_body(demo_request, policy="foureyes", verification="quick")
    res = client.submit(body, method="graddiff", hyper={"steps": 2})
    rid, jid = res["request"]["id"], res["job"]["id"]
    deadline = time.time() + 600
    while time.time() < deadline and client.job(jid)["job"]["status"] not in ("succeeded", "failed"):
        time.sleep(0.5)
    assert client.job(jid)["job"]["status"] == "succeeded", client.job(jid)["job"]["error"]

    # The worker's rows are the engine's, each with the job's requester.
    worker_rows = [(actor, json.loads(d)) for _id, actor, action, subj, d in audit_rows(home)
                   if subj == f"job:{jid}" and action in ("job.start", "job.finish")]
    assert len(worker_rows) == 2 and all(a == "engine" and d["requester"] == ME for a, d in worker_rows)

    refused = run(home, "accept", str(rid), str(jid), check=False)
    assert refused.returncode == 1
    assert f"{ME} ran job {jid}" in refused.stderr and "second person" in refused.stderr
    carol = add_token(home, "carol", "approver")
    ok = run(home, "accept", str(rid), str(jid), "--comment", "checked the evidence", url=url, token=carol)
    assert "accepted job" in ok.stdout and "by carol" in ok.stdout
    req = client.request(rid)["request"]
    assert (req["accepted_by"], req["accept_comment"]) == ("carol", "checked the evidence")
    accept_row = [r for r in audit_rows(home) if r[2] == "request.accept"][-1]
    detail = json.loads(accept_row[4])
    assert accept_row[1] == "carol" and detail["executed_by"] == ME and detail["approval"] == "second_person"
    assert detail["comment"] == "checked the evidence"

    report = client.report(rid, "md")
    assert "Who decided, who ran, who signed" in report
    assert f"| Requested by | {ME}, filed" in report
    assert f"executed by | {ME}: queued" in report
    assert "| Approved by | carol," in report and "checked the evidence" in report
    assert "second_person" in report and "Four-eyes acceptance held" in report
    assert "open, 30 day(s) left" in report
    assert f"audit #{accept_row[0]}" in report
