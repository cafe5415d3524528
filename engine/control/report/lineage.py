"""The report's model-version section (issue 14): the version a request's accepted job landed in, what that
version carries, the regression check at that accept (every carried request's leak rate on its forget prompts,
cumulative control against v0), and what is kept for later checks (sealed regression data)."""

from __future__ import annotations

from sqlmodel import Session, select

from engine.control.report.blocks import H, Note, P, Table
from engine.control.report.prose import fmt_num
from engine.control.sealed import key_path
from engine.control.service import versions
from store.models import RegressionData


def collect_lineage(s: Session, req: dict, mask) -> dict:
    """The facts of the section: the landed version (None when the request has not landed), the model's current
    version, and the sealed regression data kept for the request."""
    kept = s.exec(select(RegressionData).where(RegressionData.request_id == req["id"])).first()
    out = {"base_version": req.get("base_version"), "landed": None, "current": None,
           "kept": {"prompts": kept.prompts, "spans": kept.spans} if kept else None, "key_path": str(key_path())}
    try:
        line = versions.model_line(s, req["model"])
    except Exception:  # noqa: BLE001 - the model is no longer registered: the section says so
        return out
    out["current"] = line.current
    if req.get("landed_version") is not None:
        landed = next((v for v in line.versions if v.number == req["landed_version"]), None)
        out["landed"] = mask(landed.model_dump()) if landed is not None else None
    return out


def version_section(f: dict) -> list:
    lin, req = f.get("lineage") or {}, f["request"]
    out: list = [H(2, "Model version", "version")]
    started = lin.get("base_version")
    landed = lin.get("landed")
    if started is not None:
        out.append(P(["Its jobs started from ", (f"{req['model']}@v{started}", "code"),
                      " (v0 is the model as registered)."]))
    if landed is None:
        out.append(Note(["This request has not landed in a model version: accepting its job builds the model's "
                         "next version and checks it against every erasure it carries."], "warn"))
        return out + _kept(lin)
    current = lin.get("current")
    out.append(P(["Its accepted job landed in ", (f"{req['model']}@v{landed['number']}", "b"),
                  f" (v{landed['parent']} + job {landed['job_id']}), status {landed['status']}"
                  + (f": {landed['withdrawn_reason']}" if landed.get("withdrawn_reason") else "")
                  + (f"; the model's current version is v{current}." if current is not None else ".")]))
    out.append(Table(["", ""], [
        ["Version folder", (landed["path"], "code")], ["Weights SHA-256", (landed["sha256"], "code")],
        ["Requests it carries", ", ".join(str(r) for r in landed["request_ids"])],
        ["Regression check at accept", (landed["verdict"] or "—").upper()]], cls="kv"))
    reg = landed.get("regression") or {}
    rows = [[str(r["request_id"]), r.get("reference") or "—", f"{r['leaked']}/{r['n']}", fmt_num(r["leak_rate"]),
             f"≤ {fmt_num(r['allowed'])}", ("pass", "pass") if r["passed"] else ("FAIL", "fail")]
            for r in (reg.get("requests") or {}).values()]
    if rows:
        out.append(P(["Every request the version carries, asked its forget prompts again (one batched greedy pass "
                      "through the version as deployed):"]))
        out.append(Table(["request", "reference", "leaking answers", "leak rate", "allowed", "result"], rows,
                         numeric={0, 3}))
    cum = [[name, fmt_num(c["v0"]), fmt_num(c["after"]), c["rule"].replace("before", "v0"),
            ("pass", "pass") if c["passed"] else ("—", "skip") if c["passed"] is None else ("FAIL", "fail")]
           for name, c in (reg.get("cumulative") or {}).items()]
    if cum:
        out.append(P(["Control against v0 (cumulative utility over the whole line):"]))
        out.append(Table(["metric", "v0", "this version", "rule", "result"], cum, numeric={1, 2}))
    if reg.get("skipped"):
        out.append(P([f"Not checked (their regression data was purged): requests "
                      f"{', '.join(map(str, reg['skipped']))}."]))
    return out + _kept(lin)


def _kept(lin: dict) -> list:
    kept = lin.get("kept")
    if kept is None:
        return [P(["No regression data is kept for this request."])]
    return [P([f"Kept for the regression checks of later versions (and given to later jobs on the line, which "
               f"keep those versions' answers to them), also after the close: its {kept['prompts']} "
               f"forget prompts and {kept['spans']} key spans, encrypted (Fernet) under a key outside the "
               "database (", (lin["key_path"], "code"), ", mode 0600); deleted when the model line is retired "
               "(", ("expunge models retire", "code"), ") or with ", ("expunge purge --with-regression-data", "code"),
               "."])]
