"""The report's "Who decided, who ran, who signed" section: who filed the request, who ran each tier, who
accepted the result and when, against the policy's acceptance rule and the legal deadline; each fact with the
audit row that records it (the hash chain's ids), so a reader can check it there."""

from __future__ import annotations

from engine.control.report.blocks import H, Note, P, Table
from engine.schema.errors import SpecError
from engine.schema.policy import APPROVAL_WORDS, approval_rule


def _when(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") + " UTC" if stamp else "—"


def _row_of(f: dict, action: str, subject: str) -> dict | None:
    """The newest audit event of this action on this subject."""
    return next((e for e in reversed(f["events"]) if e["action"] == action and e["subject"] == subject), None)


def _cite(event: dict | None) -> tuple[str, str]:
    return (f"audit #{event['id']}", "code") if event else ("not in the audit", "fail")


def _policy_rule(f: dict) -> str:
    try:
        from engine.schema.policy import load_policy

        return approval_rule(load_policy(f["request"]["policy"]))
    except SpecError:
        return "one_person"


def deadline_words(req: dict) -> tuple[str, str]:
    """The deadline's state as (words, style): on time / late once closed, days left or overdue while open."""
    due = _when(req.get("due_at"))[:10]
    if req["status"] == "closed":
        if req.get("on_time"):
            return f"answered on time: closed {_when(req['closed_at'])[:10]}, due {due}", "pass"
        return f"answered LATE: closed {_when(req['closed_at'])[:10]}, due {due}", "fail"
    left = req.get("days_left")
    if left is None:
        return f"due {due}", "muted"
    if left < 0:
        return f"OVERDUE by {-left} day(s): due {due}", "fail"
    return f"open, {left} day(s) left: due {due}", "pass" if left > 7 else "skip"


def accountability_section(f: dict) -> list:
    req = f["request"]
    rid = req["id"]
    rule = _policy_rule(f)
    out: list = [H(2, "Who decided, who ran, who signed", "who")]
    created = _row_of(f, "request.create", f"request:{rid}")
    rows = [["Requested by", f"{req.get('requested_by') or '— (filed before identities were recorded)'}, "
             f"filed {_when(req['created_at'])}", _cite(created)],
            ["Received", f"{_when(req.get('received_at'))[:10]} — legal basis: {req.get('legal_basis') or '—'}",
             _cite(created)]]
    for j in f["jobs"]:
        job = j["job"]
        queued = _row_of(f, "job.queue", f"job:{job['id']}")
        finished = _row_of(f, "job.finish", f"job:{job['id']}")
        ran = (f"{job.get('requested_by') or '—'}: queued {_when(job['created_at'])}, started "
               f"{_when(job['started_at'])}, finished {_when(job['finished_at'])} ({job['status']}"
               + (f", verdict {job['verdict']})" if job["verdict"] else ")"))
        rows.append([f"Tier {job['tier']} ({job['method']}, job {job['id']}) executed by", ran,
                     _cite(finished or queued)])
    accepted = _row_of(f, "request.accept", f"request:{rid}")
    if req.get("accepted_by"):
        comment = f" — comment: “{req['accept_comment']}”" if req.get("accept_comment") else ""
        rows.append(["Approved by", f"{req['accepted_by']}, {_when(req.get('accepted_at'))}, accepting job "
                     f"{req['accepted_job_id']}{comment}", _cite(accepted)])
    else:
        rows.append(["Approved by", ("not yet accepted", "skip"), ""])
    rows.append(["Acceptance rule", f"policy {req['policy']}: {rule} — {APPROVAL_WORDS[rule]}", ""])
    extended = _row_of(f, "request.extend", f"request:{rid}")
    if req.get("extension_days"):
        rows.append(["Deadline extended", f"by {req['extension_days']} day(s) in all — {req.get('extension_reason')}",
                     _cite(extended)])
    rows.append(["Deadline", deadline_words(req), _cite(extended or created)])
    closed = _row_of(f, "request.close", f"request:{rid}")
    if closed:
        rows.append(["Closed (texts purged) by", f"{closed['actor']}, {_when(closed['ts'])}", _cite(closed)])
    out.append(Table(["", "", "recorded in"], rows, cls="kv"))
    executor = next((j["job"].get("requested_by") for j in f["jobs"] if j["job"]["id"] == req["accepted_job_id"]),
                    None)
    if rule == "second_person" and req.get("accepted_by"):
        if req["accepted_by"] != executor:
            out.append(Note([f"Four-eyes acceptance held: job {req['accepted_job_id']} was run by {executor} and "
                             f"accepted by {req['accepted_by']}."], "ok"))
        else:
            out.append(Note(["Four-eyes acceptance did NOT hold: the job's executor accepted it."], "warn"))
    out.append(P(["Every name above is the engine's caller as the kernel (unix socket) or a named token (TCP) "
                  "identified it, never a name a client sent; the engine's own steps are recorded as ",
                  ("engine", "code"), "."]))
    return out
