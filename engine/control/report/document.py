"""The report's content, top to bottom, as blocks (engine.control.report.blocks): title, summary, the request, the
ladder of tiers, each job, the policy, the artifact to sign, the audit trail and the sign-off table. Built from
`collect`'s facts alone (already masked); charts are drawn only for the HTML page."""

from __future__ import annotations

import hashlib
import json

from engine.control.report.accountability import accountability_section, deadline_words
from engine.control.report.blocks import UL, Figure, H, Note, P, Signature, Table
from engine.control.report.charts import chart_locate, chart_loss, chart_tradeoff, job_label
from engine.control.report.kept import kept_blocks
from engine.control.report.lineage import version_section
from engine.control.report.prose import (
    INTENTION_TEXT,
    METRICS,
    STAGE_QUESTION,
    TIER_TEXT,
    after_with_interval,
    compact,
    fmt_delta,
    fmt_num,
    metric_sentence,
    policy_rule,
    rule_display,
    short,
    stage_sentence,
    verdict_word,
)
from engine.control.report.trials import trials_blocks
from engine.schema.errors import SpecError
from engine.schema.status import STAGES

STAGE_ORDER = STAGES
EVIDENCE_ROWS = 6  # per stage and job


def document(f: dict, charts: bool = True) -> list:
    """The report of `collect`'s facts as a list of blocks; `charts=False` leaves the charts' images out."""
    out = title_and_summary(f) + request_section(f) + ladder_section(f, charts)
    for j in f["jobs"]:
        out += job_section(f, j, charts)
    return (out + policy_section(f) + artifact_section(f) + version_section(f) + audit_section(f)
            + accountability_section(f)
            + signoff_section(f))


def _metric_values(job: dict, when: str) -> dict:
    return {m["name"]: m[when] for st in job["stages"] for m in st["metrics"]}


def _overall(job: dict) -> str | None:
    return job["job"]["verdict"] if job["job"]["status"] == "succeeded" else job["job"]["status"]


def _manifest_file_sha256(manifest: dict) -> str:
    """What `write_atomically` wrote as manifest.json, hashed."""
    return hashlib.sha256(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()).hexdigest()


def title_and_summary(f: dict) -> list:
    req, jobs = f["request"], f["jobs"]
    intention = req["intention"]
    out: list = []
    out.append(H(1, f"Erasure report — {req['title'] or 'request ' + str(req['id'])}"))
    out.append(P([("Request ", "muted"), (f"#{req['id']}", "b"), (" · reference ", "muted"), (req["reference"] or "—", "b"),
                  (f" · generated {f['generated_at']} by expunge {f['version']}", "muted")]))
    out.append(H(2, "Summary", "summary"))
    cand, acc = f["candidate"], f["accepted"]
    ladder = ", ".join(f"tier {j['job']['tier']} {j['job']['method']} {verdict_word(_overall(j))[0]}"
                       if _overall(j) in ("pass", "fail") else f"tier {j['job']['tier']} {j['job']['method']} "
                       f"{j['job']['status']}" for j in jobs) or "no job has run"
    out.append(P([f"The request asks to {intention} the data of its forget set "
                  f"({f['n_forget']} rows) from model ", (req["model"], "code"), ". ",
                  f"Ladder so far: {ladder}."]))
    if acc is not None:
        j = acc["job"]
        word, style = verdict_word(j["verdict"])
        by = req.get("accepted_by") or "the operator"
        out.append(Note([f"Job {j['id']} (tier {j['tier']}, {j['method']}) was accepted by {by}; its "
                         "verdict over the stages judged for this request is ", (word, style), "."],
                        "ok" if j["verdict"] == "pass" else "warn"))
    elif cand is not None:
        j = cand["job"]
        out.append(Note([f"Not yet accepted. Job {j['id']} (tier {j['tier']}, {j['method']}) passed every stage "
                         f"the policy judges for a {intention} request. Accept it before signing: ",
                         (f"expunge accept {req['id']} {j['id']}", "code"), "."], "warn"))
    else:
        out.append(Note(["No job of this request has passed its verification. ",
                         ("This request is not ready for sign-off.", "b")], "warn"))
    chain = f["chain"]
    summary_rows = [
        ["Overall verdict (latest job)", verdict_word(req["verdict"]) if req["verdict"] else "—"],
        ["Artifact to sign", f"job {cand['job']['id']} — {cand['artifacts'][0]['sha256']}" if cand and cand["artifacts"]
         else "—"],
        ["Audit chain", (f"intact — {chain['rows']} rows, head {chain['head']}", "pass") if chain["ok"] else
         (f"BROKEN at row {chain['bad_id']}: {chain['reason']}", "fail")],
        ["Request texts", "purged (request closed)" if req["status"] == "closed" else
         "still stored (request open): close it after sign-off to purge them"],
        ["Legal deadline", deadline_words(req)],
    ]
    out.append(Table(["", ""], summary_rows, cls="kv"))
    return out


def request_section(f: dict) -> list:
    req = f["request"]
    out: list = [H(2, "The request", "request")]
    model = f["model"] or {}
    rows = [["Title", req["title"] if req["title"] is not None else
             ("withheld: the request is closed and the sensitive strings that would mask it are purged", "muted")],
            ["Reference", req["reference"] or "—"],
            ["Intention", INTENTION_TEXT.get(req["intention"], req["intention"])],
            ["Model", f"{req['model']} ({model.get('kind', '?')}, {model.get('params', 0):,} parameters)"
             if model else req["model"]],
            ["Model weights SHA-256", (model.get("weights_sha256") or "—", "code")],
            ["Policy", req["policy"]], ["Status", req["status"]],
            ["Filed", req["created_at"][:19].replace("T", " ") + " UTC"],
            ["Closed", (req["closed_at"] or "")[:19].replace("T", " ") + " UTC" if req["closed_at"] else "—"]]
    if f["sensitive_masked"] is None:
        sens = f"purged on close ({f['data'].get('sensitive', {}).get('count', 0)} strings)"
    else:
        sens = ", ".join(f["sensitive_masked"]) or "none given"
    rows.append(["Sensitive strings (masked)", sens])
    for w in req["warnings"]:
        rows.append(["Warning", (w, "fail")])
    out.append(Table(["", ""], rows, cls="kv"))
    data_rows = [[kind, str(d["count"]), ("purged" if d["purged"] else "stored"), (d["sha256"], "code")]
                 for kind, d in f["data"].items()]
    out.append(P(["The request's data sets, identified by the SHA-256 of their rows (the texts themselves are not "
                  "printed here):"]))
    out.append(Table(["data", "rows", "texts", "SHA-256"], data_rows, numeric={1}, cls="hashes"))
    return out


def ladder_section(f: dict, charts: bool) -> list:
    jobs = f["jobs"]
    out: list = [H(2, "The ladder", "ladder")]
    out.append(P(["Each tier starts again from the base model; a higher tier is tried when a lower one fails. "
                  "A stage marked “not judged” measured nothing the policy judges for this intention."]))
    stages_seen = [s for s in STAGE_ORDER if any(st["stage"] == s for j in jobs for st in j["stages"])]
    rows = [_ladder_row(f, j, stages_seen) for j in jobs]
    out.append(Table(["tier", "what changes", "method", "status", *stages_seen, "verdict", ""], rows, cls="ladder"))
    measured = [j for j in jobs if j["stages"]]
    if measured and charts:
        out.append(_tradeoff_figure(measured))
    elif measured:
        out.append(Figure(None, "Forget/retain trade-off across tiers", "forget/retain trade-off chart"))
    return out


def _ladder_row(f: dict, j: dict, stages_seen: list[str]) -> list:
    """One job's row of the ladder table: its stages' verdicts, its own, and whether it is the one to sign."""
    job, acc, cand = j["job"], f["accepted"], f["candidate"]
    by = {st["stage"]: st for st in j["stages"]}
    cells = [str(job["tier"]), TIER_TEXT.get(job["tier"], ""), f"{job['method']} (job {job['id']})", job["status"]]
    for name in stages_seen:
        st = by.get(name)
        if st is None:
            cells.append("—")
        else:
            word, style = verdict_word(st["verdict"])
            cells.append((word + ("" if st["required"] else " (not judged)"), style))
    cells.append(verdict_word(job["verdict"]) if job["status"] == "succeeded" else (job["status"], "fail"))
    note = "accepted" if acc is not None and acc["job"]["id"] == job["id"] else (
        "candidate" if cand is not None and cand["job"]["id"] == job["id"] else "")
    cells.append(note)
    return cells


def _tradeoff_figure(measured: list) -> Figure:
    """Forget and retain scores before and after each measured tier, with the last tier's policy limits."""
    before = _metric_values(measured[0], "before")
    points = [("before\n(base model)", before)] + [(job_label(j["job"]), _metric_values(j, "after"))
                                                  for j in measured]
    limits = {}
    for key, stage_name in (("forget_rouge_l", "unit"), ("retain_rouge_l", "control")):
        st = next((st for st in measured[-1]["stages"] if st["stage"] == stage_name), None)
        m = next((m for m in (st or {}).get("metrics", []) if m["name"] == key), None)
        rule = policy_rule(st, m) if st and m else None
        if rule and rule["rule"].startswith("ratio") and before.get(key) is not None:
            limits[key] = rule["threshold"] * before[key]
        elif rule:
            limits[key] = rule["threshold"]
    return Figure(chart_tradeoff(points, limits),
                  "Forget and retain scores before any change and after each tier (dotted: the policy's "
                  "limits). A good result drops the red lines and keeps the green and blue ones.",
                  "forget/retain trade-off chart")


def job_section(f: dict, j: dict, charts: bool) -> list:
    """One job: its facts, each stage's metrics in a table and in sentences, evidence, training and locate."""
    job, intention = j["job"], f["request"]["intention"]
    out: list = []
    word, style = verdict_word(job["verdict"]) if job["status"] == "succeeded" else (job["status"], "fail")
    out.append(H(2, f"Tier {job['tier']} — {job['method']} (job {job['id']}): {word}", f"job-{job['id']}"))
    timings = (j["result"] or {}).get("timings") or {}
    facts = [f"{TIER_TEXT.get(job['tier'], '')}", f"status {job['status']}", f"device {job['device'] or '—'}"]
    if timings.get("total_s") is not None:
        facts.append(f"took {timings['total_s']:.0f} s")
    out.append(P([" · ".join(facts) + ". Hyperparameters: ", (compact(job["hyper"]), "code")]))
    if job["error"]:
        out.append(Note([f"Error: {job['error']}"], "warn"))
    for st in j["stages"]:
        out.append(H(3, f"{st['stage'].capitalize()} — {STAGE_QUESTION.get(st['stage'], '')}"))
        out.append(P(stage_sentence(st, intention)))
        rows = []
        for m in st["metrics"]:
            label = METRICS.get(m["name"], (m["name"],))[0]
            verdict = ("—", "skip") if m["passed"] is None else verdict_word("pass" if m["passed"] else "fail")
            rows.append([(m["name"], "code"), label, fmt_num(m["before"]), after_with_interval(m),
                         fmt_delta(m["before"], m["after"]), rule_display(m["rule"]), verdict, m.get("note") or ""])
        out.append(Table(["metric", "what it measures", "before", "after [95% interval]", "Δ", "threshold", "verdict",
                          "note (waiver, why not measured, which side failed)"], rows, numeric={2, 3, 4},
                         cls="metrics"))
        out.append(UL([metric_sentence(job, st, m, f["n_forget"], f["n_retain"]) for m in st["metrics"]]))
        out += evidence_block(j, st["stage"])
    return (out + kept_blocks(f, j) + _training_blocks(j, charts) + _locate_blocks(j, charts)
            + trials_blocks(j, charts))


def _training_blocks(j: dict, charts: bool) -> list:
    job = j["job"]
    losses = (j["progress"] or {}).get("losses") or []
    if not losses:
        return []
    first, last = losses[0], losses[-1]
    return [P([f"Training: {len(losses)} logged steps; loss {first[1]:.3f} at step {first[0]} → "
               f"{last[1]:.3f} at step {last[0]}."]),
            Figure(chart_loss(job, losses) if charts else None, f"Training loss of job {job['id']}.",
                   f"loss curve of job {job['id']}")]


def _locate_blocks(j: dict, charts: bool) -> list:
    locate = (j["result"] or {}).get("locate")
    if not locate:
        return []
    edited = j["result"].get("edited_blocks")
    if not edited and j["result"].get("rmu_layer") is not None:
        edited = [j["result"]["rmu_layer"]]
    edited_lens = {int(b) + 1 for b in (edited or [])}
    out: list = [P(["Locate: a logit-lens pass over the forget prompts shows at which layers the gold answers "
                    "become decodable; tier 2 edits the layers where they appear"
                    + (f" (decoder blocks {', '.join(str(b) for b in edited)})." if edited else ".")])]
    if charts:
        out.append(Figure(chart_locate(locate, edited_lens), "Per-layer logit lens of the forget answers "
                          "(orange: edited layers).", "locate per-layer chart"))
    out.append(Table(["layer", "gold prob", "gold rank", "top-1 share"],
                     [[str(r["layer"]), fmt_num(r.get("prob")),
                       "—" if r.get("rank") is None else f"{r['rank']:.1f}", fmt_num(r.get("top1"))]
                      for r in sorted(locate, key=lambda r: r["layer"])], numeric={0, 1, 2, 3}, cls="locate"))
    return out


def evidence_block(j: dict, stage: str) -> list:
    """A stage's evidence: counts of what leaked before and after, per attack, and a sample of the answers."""
    rows = [e for e in j["evidence"] if e["stage"] == stage]
    if not rows:
        return []
    if stage == "control":
        same = sum(e["output_before"].strip() == e["output_after"].strip() for e in rows)
        return [P([f"Evidence: of {len(rows)} sampled retain answers, {same} are word for word unchanged. "
                   "(Retain answers are other people's data and are not printed.)"])]
    out: list = []
    by_attack: dict[str, list] = {}
    for e in rows:
        by_attack.setdefault(e["attack"], []).append(e)
    leaked_before, leaked_after = sum(e["leaked_before"] for e in rows), sum(e["leaked_after"] for e in rows)
    out.append(P([f"Evidence: {len(rows)} answers to {'attack' if stage == 'reconstruction' else 'forget'} prompts; "
                  f"{leaked_before} contained a sensitive string before, ", (str(leaked_after), "b"), " after."]))
    if len(by_attack) > 1:
        out.append(Table(["attack", "prompts", "leaked before", "leaked after"],
                         [[attack, str(len(es)), str(sum(e["leaked_before"] for e in es)),
                           (str(sum(e["leaked_after"] for e in es)), "fail") if any(e["leaked_after"] for e in es)
                           else "0"] for attack, es in by_attack.items()], numeric={1, 2, 3}, cls="attacks"))
    out.append(P(["A sample, before and after (personal data masked as [REDACTED]):"]))
    table = []
    for e in _evidence_sample(rows):
        leak = f"{'yes' if e['leaked_before'] else 'no'} → {'yes' if e['leaked_after'] else 'no'}"
        table.append([e["attack"], short(e["prompt"], 120), short(e["output_before"]), short(e["output_after"]),
                      (leak, "fail" if e["leaked_after"] else "pass")])
    out.append(Table(["attack", "prompt", "answer before", "answer after", "leaked"], table, cls="evidence"))
    return out


def _evidence_sample(rows: list[dict]) -> list[dict]:
    """The telling rows first (what still leaks, then what leaked and no longer does), one per attack at first."""
    ranked = sorted(rows, key=lambda e: (not e["leaked_after"], not e["leaked_before"]))
    pick, seen = [], set()
    for e in ranked:
        if e["attack"] not in seen and len(pick) < EVIDENCE_ROWS:
            pick.append(e)
            seen.add(e["attack"])
    return pick + [e for e in ranked if e not in pick][: EVIDENCE_ROWS - len(pick)]


def policy_section(f: dict) -> list:
    out: list = [H(2, "The policy used", "policy")]
    ref = f["candidate"] or next((j for j in reversed(f["jobs"]) if j["stages"]), None)
    content = None
    if ref is not None:
        content = next((st["policy_content"] for st in ref["stages"] if st.get("policy_content")), None)
    if content is None:
        try:
            from engine.schema.policy import load_policy

            content = load_policy(f["request"]["policy"])
        except SpecError as exc:
            out.append(P([f"Policy {f['request']['policy']}: {exc}"]))
            return out
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    out.append(P(["Policy ", (content.get("name", f["request"]["policy"]), "b"),
                  f": {content.get('description', '')} It is stored with every verdict; content SHA-256 ",
                  (digest, "code"), "."]))
    rule_words = {"max": "after ≤ threshold", "min": "after ≥ threshold", "ratio_max": "after ≤ threshold × before",
                  "ratio_min": "after ≥ threshold × before"}
    rows = []
    for stage in STAGE_ORDER:
        for metric, spec in (content.get(stage) or {}).items():
            if isinstance(spec, dict):
                rows.append([stage, (metric, "code"), rule_words.get(spec.get("rule"), str(spec.get("rule"))),
                             fmt_num(spec.get("threshold"))])
    out.append(Table(["stage", "metric", "rule", "threshold"], rows, numeric={3}, cls="policy"))
    out.append(P([f"A {f['request']['intention']} request is judged on "
                  + ("black-box metrics only; white-box ones are shown but not judged."
                     if f["request"]["intention"] == "suppress" else "every metric above.")]))
    return out


def artifact_section(f: dict) -> list:
    cand, acc = f["candidate"], f["accepted"]
    out: list = [H(2, "The artifact to sign", "artifact")]
    if cand is None or not cand["artifacts"]:
        return out + [P(["There is no passing artifact to sign."])]
    for art in cand["artifacts"]:
        man = art["manifest"]
        libs = ", ".join(f"{k} {v}" for k, v in sorted((man.get("libraries") or {}).items()))
        rows = [["Job", f"{cand['job']['id']} (tier {cand['job']['tier']}, {cand['job']['method']})"
                 + ("" if acc is not None else " — not yet accepted")],
                ["Kind", art["kind"]], ["Path", (art["path"], "code")],
                ["Artifact SHA-256", (art["sha256"], "code")], ["On disk", art["on_disk"]],
                ["Manifest SHA-256", (_manifest_file_sha256(man), "code")],
                ["Base model", f"{man.get('base_model', '—')}"],
                ["Base model SHA-256", (man.get("base_model_sha256", "—"), "code")],
                ["Method / tier / seed", f"{man.get('method', '—')} / {man.get('tier', '—')} / {man.get('seed', '—')}"],
                ["Hyperparameters", (compact(man.get("hyper", {})), "code")],
                ["Libraries", libs or "—"], ["Device", str(man.get("device", "—"))],
                ["Written", str(man.get("created_at", "—"))]]
        out.append(Table(["", ""], rows, cls="kv"))
    return out


def audit_section(f: dict) -> list:
    chain = f["chain"]
    out: list = [H(2, "Audit trail", "audit")]
    if chain["ok"]:
        out.append(P(["The audit log is an append-only hash chain; recomputing it now gives ", ("intact", "pass"),
                      f" over {chain['rows']} rows. Chain head (the hash that fixes every row up to now):"]))
    else:
        out.append(P([("The audit chain is BROKEN", "fail"), f" at row {chain['bad_id']}: {chain['reason']}. "
                      "Do not sign: someone has edited, removed or reordered a row. Last intact head:"]))
    out.append(P([(chain["head"], "code")]))
    ev_rows = [[str(e["id"]), e["ts"][:19].replace("T", " "), e["actor"], e["action"], e["subject"],
                short(compact(e["detail"]), 110), (e["hash"][:12] + "…", "code")] for e in f["events"]]
    out.append(P([f"This request's {len(ev_rows)} audit events:"]))
    out.append(Table(["#", "time (UTC)", "actor", "action", "subject", "detail", "hash"], ev_rows, numeric={0},
                     cls="audit"))
    return out


def signoff_section(f: dict) -> list:
    req, cand, chain = f["request"], f["candidate"], f["chain"]
    subject = (f"confirm the verdicts above for the artifact with SHA-256 {cand['artifacts'][0]['sha256']}"
               if cand and cand["artifacts"] else "confirm that no artifact of it has passed its verification")
    return [H(2, "Sign-off", "signoff"),
            Signature(["Prepared by (operator)", "Approved by (compliance)"],
                      f"I have read this report of request {req['id']} ({req['reference'] or 'no reference'}) "
                      f"and {subject}, as recorded in the audit chain with head {chain['head']}.")]
