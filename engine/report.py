"""The sign-off report: one page a compliance reader can read top to bottom and sign.

`build_report(session, request_id, fmt)` reads the store directly and returns a self-contained HTML page
(inline CSS, matplotlib charts embedded as base64 PNGs, no network access needed) or GitHub Markdown with
the same content (charts left out). Raw personal data never reaches the page: the request's sensitive
strings are shown masked ("4••••••••••2") and every free text (evidence, title, audit details, errors,
hyperparameters) goes through `engine.leaks.mask_sensitive` with the sensitive strings and the
forget answers, as `close_request` does. Answers to retain questions (other people's data) are summarised,
never printed.

matplotlib is imported inside the chart functions only, so the API server does not load it at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select

from engine.control import service
from engine.schema.datasets import as_qa
from engine.schema.errors import SpecError
from engine.schema.policy import band_limits
from store import audit
from store.models import ModelEntry

FORMATS = ("html", "md")
STAGE_ORDER = ("unit", "control", "reconstruction")
STAGE_QUESTION = {"unit": "are the targeted outputs gone?", "control": "is everything else intact?",
                  "reconstruction": "can an attacker bring it back?"}
INTENTION_TEXT = {"suppress": "suppress — the model must no longer say the data (judged on black-box tests only)",
                  "remove": "remove — the knowledge must be gone from the weights (judged on every test)"}
TIER_TEXT = {1: "output suppression (nothing in the weights changes)", 2: "model editing (a few located layers)",
             3: "gradient-based removal (many weights)"}
EVIDENCE_ROWS = 6  # per stage and job
ARTIFACT_REHASH_LIMIT = 4 << 30  # bytes: larger artifacts are not re-hashed while the report waits

# metric: (label, kind, clause). kind "pct" values are shares in [0, 1], shown as percentages in sentences.
METRICS = {
    "forget_rouge_l": ("forget answers recalled (ROUGE-L)", "pct",
                       "the model's answers to the {n_forget} forget questions recall {after} of the gold "
                       "answers (was {before})"),
    "forget_prob": ("forget answer probability", "prob",
                    "the model gives the correct forget answers a mean probability of {after} (was {before})"),
    "leak_rate": ("forget answers leaking a sensitive string", "pct",
                  "{after} of its answers to the forget questions contain a sensitive string (was {before})"),
    "retain_rouge_l": ("retain answers recalled (ROUGE-L)", "pct",
                       "its answers to the {n_retain} retain questions (facts that must stay) recall {after} of "
                       "the gold answers (was {before})"),
    "retain_prob": ("retain answer probability", "prob",
                    "it gives the correct retain answers a mean probability of {after} (was {before})"),
    "general_ppl": ("perplexity on general text", "num",
                    "its perplexity on general text is {after} (was {before}; lower is better)"),
    "retain_kl": ("divergence from the original model on retain prompts", "num",
                  "its next-token predictions on retain prompts differ from the original model's by {after} "
                  "nats of KL divergence (0 = identical)"),
    "attack_leak_rate": ("answers leaking under attack", "pct",
                         "under paraphrase, format and sampling attacks {after} of its answers contain a "
                         "sensitive string (was {before})"),
    "relearn_recovery": ("recovery after a relearning fine-tune", "pct",
                         "a small fine-tune on half of the forget set brings back {after} of the other half "
                         "(was {before})"),
    "mia_auc": ("membership-inference AUC", "num",
                "a membership-inference test tells forget facts from never-seen facts with an AUC of {after} "
                "(0.5 = cannot tell; was {before})"),
    "logit_lens_presence": ("answer readable in intermediate layers", "prob",
                            "the gold answers are readable in the model's intermediate layers at {after} "
                            "(was {before})"),
}
RATIO_WORDS = {0.25: "a quarter of", 0.5: "half of", 0.75: "three quarters of", 1.0: "the same as", 2.0: "twice"}
HASH_KEYS = ("sha256", "hash", "head")


# ------------------------------------------------------------------ the document (shared by both formats)

@dataclass
class H:
    level: int
    text: str
    anchor: str = ""


@dataclass
class P:
    parts: list  # str or (text, style): style in b, code, pass, fail, skip, muted


@dataclass
class UL:
    items: list  # each a list of parts


@dataclass
class Table:
    headers: list[str]
    rows: list[list]  # cells: str or (text, style)
    numeric: set[int] = field(default_factory=set)
    cls: str = ""


@dataclass
class Figure:
    png: bytes | None
    caption: str
    alt: str


@dataclass
class Note:
    parts: list
    kind: str = "warn"  # warn | ok | info


@dataclass
class Signature:
    roles: list[str]
    statement: str


# ------------------------------------------------------------------ entry point

def build_report(s: Session, request_id: int, fmt: str = "html") -> str:
    """The report of one request as HTML (self-contained) or Markdown; raises NotFound / SpecError."""
    if fmt not in FORMATS:
        raise SpecError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    facts = collect(s, request_id)
    blocks = document(facts, charts=fmt == "html")
    title = f"Erasure report — request {facts['request']['id']}"
    return render_html(blocks, title) if fmt == "html" else render_markdown(blocks)


# ------------------------------------------------------------------ masking

def mask_string(value: str) -> str:
    """A sensitive string for display: first and last character kept, the rest as bullets."""
    if len(value) <= 4:
        return "•" * len(value)
    return value[0] + "•" * (len(value) - 2) + value[-1]


def _masker(terms: list[str]):
    from engine.leaks import mask_sensitive

    terms = [t for t in dict.fromkeys(terms) if t]

    def mask(obj, key: str = ""):
        if key == "extra_strings" and isinstance(obj, list):  # the guard's extra banned strings: never shown
            return [f"({len(obj)} strings withheld)"] if obj else []
        if isinstance(obj, str):
            if not terms or any(key.endswith(k) for k in HASH_KEYS):
                return obj
            return mask_sensitive(obj, terms)
        if isinstance(obj, dict):
            return {k: mask(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mask(v, key) for v in obj]
        return obj

    return mask


# ------------------------------------------------------------------ facts from the store

def collect(s: Session, request_id: int) -> dict:
    detail = service.request_detail(s, request_id)
    rows = service.request_rows(s, request_id)
    sensitive = [str(x) for x in (rows.get("sensitive") or [])]
    forget = rows.get("forget") or []
    # As on close: the sensitive strings and the forget answers; also the rows' own "value" fields when given.
    terms = sensitive + [r["answer"] for r in as_qa(forget)]
    terms += [r["value"] for r in forget if isinstance(r.get("value"), str) and r["value"].strip()]
    mask = _masker(terms)

    req = dict(detail["request"])
    for key in ("title", "reference", "warnings"):
        req[key] = mask(req[key])
    if rows.get("sensitive") is None:
        # Closed: the strings that would mask the title are purged, and a title often names the person.
        req["title"] = None
    data = {d["kind"]: d for d in detail["data"]}
    jobs = []
    for j in detail["jobs"]:
        jd = service.job_detail(s, j["id"], evidence_limit=100_000)
        job = dict(jd["job"])
        job["hyper"] = mask(job["hyper"])
        job["error"] = mask(job["error"]) if job["error"] else None
        job["request_title"] = None
        jobs.append({
            "job": job, "stages": jd["stages"], "progress": jd["progress"], "result": jd["result"],
            "evidence": [{**e, "prompt": mask(e["prompt"]), "output_before": mask(e["output_before"]),
                          "output_after": mask(e["output_after"])} for e in jd["evidence"]],
            "artifacts": [{**a, "manifest": mask(a["manifest"])} for a in jd["artifacts"]],
        })
    model = s.exec(select(ModelEntry).where(ModelEntry.name == req["model"])).first()
    chain = audit.verify(s)
    events = [{**e, "detail": mask(e["detail"])} for e in detail["audit"]]

    accepted = next((j for j in jobs if j["job"]["id"] == req["accepted_job_id"]), None)
    candidate = accepted or next((j for j in reversed(jobs)
                                  if j["job"]["status"] == "succeeded" and j["job"]["verdict"] == "pass"), None)
    return {
        "request": req, "jobs": jobs, "data": data, "events": events,
        "sensitive_masked": [mask_string(x) for x in sensitive] if rows.get("sensitive") is not None else None,
        "model": service.model_out(model) if model else None,
        "chain": {"ok": chain.ok, "rows": chain.rows, "head": chain.head, "bad_id": chain.bad_id,
                  "reason": chain.reason},
        "accepted": accepted, "candidate": candidate,
        "n_forget": data.get("forget", {}).get("count", 0), "n_retain": data.get("retain", {}).get("count", 0),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": _version(),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("expunge")
    except Exception:  # noqa: BLE001 - running from a source tree without an installed distribution
        return "0.1.0"


# ------------------------------------------------------------------ numbers and words

def fmt_num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def fmt_delta(before, after) -> str:
    if before is None or after is None:
        return "—"
    d = after - before
    return f"{d:+.3f}" if abs(d) < 1000 else f"{d:+,.0f}"


def fmt_kind(value, kind: str) -> str:
    if value is None:
        return "not measured"
    if kind == "pct":
        pct = value * 100
        return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.1f}%"
    if kind == "prob":
        return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def verdict_word(v: str | None) -> tuple[str, str]:
    if v == "pass":
        return ("PASS", "pass")
    if v == "fail":
        return ("FAIL", "fail")
    if v == "incomplete":  # a judged metric was not measured or shows no signal: not a pass
        return ("INCOMPLETE", "fail")
    if v == "skipped":
        return ("skipped", "skip")
    return ("—", "skip")


def _policy_rule(stage: dict, metric: dict) -> dict | None:
    rule = (stage.get("policy_content") or {}).get(stage["stage"], {}).get(metric["name"])
    if isinstance(rule, dict) and "rule" in rule and ("threshold" in rule or rule["rule"] == "band"):
        return rule
    text = metric.get("rule") or ""
    if metric.get("threshold") is None or "reported only" in text:
        return None
    le = "<=" in text or "≤" in text
    kind = ("ratio_max" if le else "ratio_min") if "before" in text else ("max" if le else "min")
    return {"rule": kind, "threshold": metric["threshold"]}


def policy_clause(rule: dict | None, kind: str, before) -> str:
    if rule is None:
        return "the policy reports it without judging it"
    if rule["rule"] == "band":
        lo, hi = band_limits(rule)
        return f"the policy requires it between {fmt_kind(lo, kind)} and {fmt_kind(hi, kind)} (both sides)"
    t = float(rule["threshold"])
    if rule["rule"] == "max":
        return f"the policy allows at most {fmt_kind(t, kind)}"
    if rule["rule"] == "min":
        return f"the policy requires at least {fmt_kind(t, kind)}"
    words = RATIO_WORDS.get(t, f"{t:g} ×")
    limit = f" ({'≤' if rule['rule'] == 'ratio_max' else '≥'} {fmt_kind(t * before, kind)})" if before is not None \
        else ""
    if rule["rule"] == "ratio_max":
        return f"the policy requires at most {words} before{limit}"
    if t < 1:
        return f"the policy requires at least {t * 100:g}% of before{limit}"
    return f"the policy requires at least {words} before{limit}"


def metric_sentence(job: dict, stage: dict, metric: dict, n_forget: int, n_retain: int) -> list:
    """'After tier 3 (graddiff), the model's answers ... recall 4% of the gold answers (was 98%); the policy
    requires at most half of before: PASS.' as parts (the verdict styled)."""
    label, kind, clause = METRICS.get(metric["name"], (metric["name"], "num", "{name} is {after} (was {before})"))
    head = f"After tier {job['tier']} ({job['method']}), "
    if metric["after"] is None:
        why = " (this tier leaves the weights unchanged)" if job["tier"] == 1 else ""
        return [head + f"{label} was not measured{why}; not judged."]
    text = clause.format(after=fmt_kind(metric["after"], kind), before=fmt_kind(metric["before"], kind),
                         n_forget=n_forget, n_retain=n_retain, name=metric["name"])
    rule = _policy_rule(stage, metric)
    if "not judged for suppress" in (metric.get("rule") or ""):
        return [head + text + "; a white-box measure, not judged for a suppress request."]
    if metric["passed"] is None:
        return [head + text + f"; {policy_clause(rule, kind, metric['before']) if rule else 'reported only, not judged by this policy'}."]
    word, style = verdict_word("pass" if metric["passed"] else "fail")
    return [head + text + f"; {policy_clause(rule, kind, metric['before'])}: ", (word, style), "."]


def stage_sentence(stage: dict, intention: str) -> list:
    word, style = verdict_word(stage["verdict"])
    lead = "Stage verdict: "
    if not stage["required"]:
        return [lead, (word, style), f": nothing this stage measured is judged for a {intention} request."]
    if stage["verdict"] == "pass":
        return [lead, (word, style), ": every metric the policy judges is within its threshold."]
    failed = [m["name"] for m in stage["metrics"] if m["passed"] is False]
    return [lead, (word, style), ": outside the threshold: ", (", ".join(failed) or "—", "code"), "."]


# ------------------------------------------------------------------ charts (matplotlib, Agg)

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, facecolor="white")
    return buf.getvalue()


def _job_label(job: dict) -> str:
    return f"tier {job['tier']}\n{job['method']} (job {job['id']})"


def chart_tradeoff(points: list[tuple[str, dict]], limits: dict[str, float]) -> bytes:
    fig = _new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    series = [("forget_rouge_l", "forget recall (ROUGE-L) — should fall", "#c0392b", "o-"),
              ("leak_rate", "forget answers leaking — should fall", "#7d3c98", "^:"),
              ("retain_rouge_l", "retain recall (ROUGE-L) — should stay", "#1e8449", "o-"),
              ("retain_prob", "retain answer probability — should stay", "#2471a3", "s--")]
    for key, label, color, style in series:
        ys = [p.get(key) for _, p in points]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [float("nan") if y is None else y * 100 for y in ys], style, color=color, label=label,
                linewidth=1.8, markersize=5)
    for key, label, color in (("forget_rouge_l", "forget limit", "#c0392b"),
                              ("retain_rouge_l", "retain floor", "#1e8449")):
        if limits.get(key) is not None:
            ax.axhline(limits[key] * 100, color=color, linestyle=(0, (2, 3)), linewidth=1, alpha=0.8)
            ax.annotate(label, (0, limits[key] * 100), xytext=(2, 2), textcoords="offset points",
                        fontsize=7, color=color)
    ax.set_xticks(xs, [label for label, _ in points], fontsize=8)
    ax.set_ylim(-4, 104)
    ax.set_ylabel("% (after each tier)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title("Forget / retain trade-off across the ladder", fontsize=10, loc="left")
    return _png(fig)


def chart_loss(job: dict, losses: list) -> bytes:
    fig = _new_figure(7.0, 2.3)
    ax = fig.add_subplot()
    steps = [p[0] for p in losses]
    values = [p[1] for p in losses]
    ax.plot(steps, values, color="#2c3e50", linewidth=1.4)
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Training loss — tier {job['tier']} {job['method']} (job {job['id']})", fontsize=10, loc="left")
    return _png(fig)


def chart_locate(rows: list[dict], edited_lens_layers: set[int]) -> bytes:
    fig = _new_figure(7.0, 2.6)
    ax = fig.add_subplot()
    rows = sorted(rows, key=lambda r: r["layer"])
    xs = [r["layer"] for r in rows]
    colors = ["#d35400" if x in edited_lens_layers else "#5d6d7e" for x in xs]
    ax.bar(xs, [r.get("prob") or 0.0 for r in rows], color=colors, width=0.7, label="gold-answer probability")
    if any(r.get("top1") is not None for r in rows):
        ax.plot(xs, [r.get("top1") for r in rows], "o-", color="#1a5276", markersize=4, linewidth=1.2,
                label="share with the answer's first token on top")
    if edited_lens_layers:
        from matplotlib.patches import Patch

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="#d35400"))
        labels.append("edited by tier 2")
        ax.legend(handles, labels, fontsize=7, loc="upper left", frameon=False)
    else:
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_xticks(xs, [str(x) for x in xs], fontsize=8)
    ax.set_xlabel("hidden state (0 = embeddings, i = output of decoder block i, last = model output)", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Locate — where the forget answers become decodable (logit lens)", fontsize=10, loc="left")
    return _png(fig)


# ------------------------------------------------------------------ the document

def _metric_values(job: dict, when: str) -> dict:
    return {m["name"]: m[when] for st in job["stages"] for m in st["metrics"]}


def _overall(job: dict) -> str | None:
    return job["job"]["verdict"] if job["job"]["status"] == "succeeded" else job["job"]["status"]


def _manifest_file_sha256(manifest: dict) -> str:
    """What `write_atomically` wrote as manifest.json, hashed."""
    return hashlib.sha256(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()).hexdigest()


def _artifact_check(art: dict) -> tuple[str, str]:
    """Re-hash the artifact folder on disk against its recorded hash (small enough ones)."""
    path = Path(art["path"])
    if not path.is_dir():
        return ("not found on this machine", "skip")
    try:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if size > ARTIFACT_REHASH_LIMIT:
            return (f"not re-hashed ({size / 2**30:.1f} GiB)", "skip")
        from engine.artifacts import tree_sha256

        ok = tree_sha256(path) == art["sha256"]
    except OSError as exc:
        return (f"cannot be read: {exc.strerror}", "fail")
    return ("re-hashed now: matches" if ok else "re-hashed now: DIFFERS from the record", "pass" if ok else "fail")


def _rule_display(rule: str) -> str:
    if not rule:
        return "—"
    text = rule.replace("<=", "≤").replace(">=", "≥").replace(" x before", "×before")
    return text.replace("×before", " × before")


def _short(text: str, n: int = 220) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _compact(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def document(f: dict, charts: bool = True) -> list:
    req, jobs = f["request"], f["jobs"]
    intention = req["intention"]
    out: list = []
    out.append(H(1, f"Erasure report — {req['title'] or 'request ' + str(req['id'])}"))
    out.append(P([("Request ", "muted"), (f"#{req['id']}", "b"), (" · reference ", "muted"), (req["reference"] or "—", "b"),
                  (f" · generated {f['generated_at']} by expunge {f['version']}", "muted")]))

    # ---- summary
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
        out.append(Note([f"Job {j['id']} (tier {j['tier']}, {j['method']}) was accepted by the operator; its "
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
    ]
    out.append(Table(["", ""], summary_rows, cls="kv"))

    # ---- the request
    out.append(H(2, "The request", "request"))
    model = f["model"] or {}
    rows = [["Title", req["title"] if req["title"] is not None else
             ("withheld: the request is closed and the sensitive strings that would mask it are purged", "muted")],
            ["Reference", req["reference"] or "—"],
            ["Intention", INTENTION_TEXT.get(intention, intention)],
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

    # ---- the ladder
    out.append(H(2, "The ladder", "ladder"))
    out.append(P(["Each tier starts again from the base model; a higher tier is tried when a lower one fails. "
                  "A stage marked “not judged” measured nothing the policy judges for this intention."]))
    stages_seen = [s for s in STAGE_ORDER if any(st["stage"] == s for j in jobs for st in j["stages"])]
    ladder_rows = []
    for j in jobs:
        job = j["job"]
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
        ladder_rows.append(cells)
    out.append(Table(["tier", "what changes", "method", "status", *stages_seen, "verdict", ""], ladder_rows,
                     cls="ladder"))
    measured = [j for j in jobs if j["stages"]]
    if measured and charts:
        before = _metric_values(measured[0], "before")
        points = [("before\n(base model)", before)] + [(_job_label(j["job"]), _metric_values(j, "after"))
                                                      for j in measured]
        limits = {}
        for key, stage_name in (("forget_rouge_l", "unit"), ("retain_rouge_l", "control")):
            st = next((st for st in measured[-1]["stages"] if st["stage"] == stage_name), None)
            m = next((m for m in (st or {}).get("metrics", []) if m["name"] == key), None)
            rule = _policy_rule(st, m) if st and m else None
            if rule and rule["rule"].startswith("ratio") and before.get(key) is not None:
                limits[key] = rule["threshold"] * before[key]
            elif rule:
                limits[key] = rule["threshold"]
        out.append(Figure(chart_tradeoff(points, limits),
                          "Forget and retain scores before any change and after each tier (dotted: the policy's "
                          "limits). A good result drops the red lines and keeps the green and blue ones.",
                          "forget/retain trade-off chart"))
    elif measured:
        out.append(Figure(None, "Forget/retain trade-off across tiers", "forget/retain trade-off chart"))

    # ---- each job
    for j in jobs:
        out += job_section(f, j, charts)

    # ---- the policy
    out += policy_section(f)

    # ---- the artifact
    out.append(H(2, "The artifact to sign", "artifact"))
    if cand is None or not cand["artifacts"]:
        out.append(P(["There is no passing artifact to sign."]))
    else:
        for art in cand["artifacts"]:
            man = art["manifest"]
            libs = ", ".join(f"{k} {v}" for k, v in sorted((man.get("libraries") or {}).items()))
            check, style = _artifact_check(art)
            rows = [["Job", f"{cand['job']['id']} (tier {cand['job']['tier']}, {cand['job']['method']})"
                     + ("" if acc is not None else " — not yet accepted")],
                    ["Kind", art["kind"]], ["Path", (art["path"], "code")],
                    ["Artifact SHA-256", (art["sha256"], "code")], ["On disk", (check, style)],
                    ["Manifest SHA-256", (_manifest_file_sha256(man), "code")],
                    ["Base model", f"{man.get('base_model', '—')}"],
                    ["Base model SHA-256", (man.get("base_model_sha256", "—"), "code")],
                    ["Method / tier / seed", f"{man.get('method', '—')} / {man.get('tier', '—')} / {man.get('seed', '—')}"],
                    ["Hyperparameters", (_compact(man.get("hyper", {})), "code")],
                    ["Libraries", libs or "—"], ["Device", str(man.get("device", "—"))],
                    ["Written", str(man.get("created_at", "—"))]]
            out.append(Table(["", ""], rows, cls="kv"))

    # ---- the audit trail
    out.append(H(2, "Audit trail", "audit"))
    if chain["ok"]:
        out.append(P(["The audit log is an append-only hash chain; recomputing it now gives ", ("intact", "pass"),
                      f" over {chain['rows']} rows. Chain head (the hash that fixes every row up to now):"]))
    else:
        out.append(P([("The audit chain is BROKEN", "fail"), f" at row {chain['bad_id']}: {chain['reason']}. "
                      "Do not sign: someone has edited, removed or reordered a row. Last intact head:"]))
    out.append(P([(chain["head"], "code")]))
    ev_rows = [[str(e["id"]), e["ts"][:19].replace("T", " "), e["actor"], e["action"], e["subject"],
                _short(_compact(e["detail"]), 110), (e["hash"][:12] + "…", "code")] for e in f["events"]]
    out.append(P([f"This request's {len(ev_rows)} audit events:"]))
    out.append(Table(["#", "time (UTC)", "actor", "action", "subject", "detail", "hash"], ev_rows, numeric={0},
                     cls="audit"))

    # ---- sign-off
    out.append(H(2, "Sign-off", "signoff"))
    subject = (f"confirm the verdicts above for the artifact with SHA-256 {cand['artifacts'][0]['sha256']}"
               if cand and cand["artifacts"] else "confirm that no artifact of it has passed its verification")
    out.append(Signature(["Prepared by (operator)", "Approved by (compliance)"],
                         f"I have read this report of request {req['id']} ({req['reference'] or 'no reference'}) "
                         f"and {subject}, as recorded in the audit chain with head {chain['head']}."))
    return out


def job_section(f: dict, j: dict, charts: bool) -> list:
    job, intention = j["job"], f["request"]["intention"]
    out: list = []
    word, style = verdict_word(job["verdict"]) if job["status"] == "succeeded" else (job["status"], "fail")
    out.append(H(2, f"Tier {job['tier']} — {job['method']} (job {job['id']}): {word}", f"job-{job['id']}"))
    timings = (j["result"] or {}).get("timings") or {}
    facts = [f"{TIER_TEXT.get(job['tier'], '')}", f"status {job['status']}", f"device {job['device'] or '—'}"]
    if timings.get("total_s") is not None:
        facts.append(f"took {timings['total_s']:.0f} s")
    out.append(P([" · ".join(facts) + ". Hyperparameters: ", (_compact(job["hyper"]), "code")]))
    if job["error"]:
        out.append(Note([f"Error: {job['error']}"], "warn"))
    for st in j["stages"]:
        out.append(H(3, f"{st['stage'].capitalize()} — {STAGE_QUESTION.get(st['stage'], '')}"))
        out.append(P(stage_sentence(st, intention)))
        rows = []
        for m in st["metrics"]:
            label = METRICS.get(m["name"], (m["name"],))[0]
            verdict = ("—", "skip") if m["passed"] is None else verdict_word("pass" if m["passed"] else "fail")
            rows.append([(m["name"], "code"), label, fmt_num(m["before"]), fmt_num(m["after"]),
                         fmt_delta(m["before"], m["after"]), _rule_display(m["rule"]), verdict])
        out.append(Table(["metric", "what it measures", "before", "after", "Δ", "threshold", "verdict"], rows,
                         numeric={2, 3, 4}, cls="metrics"))
        out.append(UL([metric_sentence(job, st, m, f["n_forget"], f["n_retain"]) for m in st["metrics"]]))
        out += evidence_block(j, st["stage"])
    losses = (j["progress"] or {}).get("losses") or []
    if losses:
        first, last = losses[0], losses[-1]
        out.append(P([f"Training: {len(losses)} logged steps; loss {first[1]:.3f} at step {first[0]} → "
                      f"{last[1]:.3f} at step {last[0]}."]))
        out.append(Figure(chart_loss(job, losses) if charts else None, f"Training loss of job {job['id']}.",
                          f"loss curve of job {job['id']}"))
    locate = (j["result"] or {}).get("locate")
    if locate:
        edited = j["result"].get("edited_blocks")
        if not edited and j["result"].get("rmu_layer") is not None:
            edited = [j["result"]["rmu_layer"]]
        edited_lens = {int(b) + 1 for b in (edited or [])}
        out.append(P(["Locate: a logit-lens pass over the forget prompts shows at which layers the gold answers "
                      "become decodable; tier 2 edits the layers where they appear"
                      + (f" (decoder blocks {', '.join(str(b) for b in edited)})." if edited else ".")]))
        if charts:
            out.append(Figure(chart_locate(locate, edited_lens), "Per-layer logit lens of the forget answers "
                              "(orange: edited layers).", "locate per-layer chart"))
        out.append(Table(["layer", "gold prob", "gold rank", "top-1 share"],
                         [[str(r["layer"]), fmt_num(r.get("prob")),
                           "—" if r.get("rank") is None else f"{r['rank']:.1f}", fmt_num(r.get("top1"))]
                          for r in sorted(locate, key=lambda r: r["layer"])], numeric={0, 1, 2, 3}, cls="locate"))
    return out


def evidence_block(j: dict, stage: str) -> list:
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
    # The telling rows first (what still leaks, then what leaked and no longer does), one per attack at first.
    ranked = sorted(rows, key=lambda e: (not e["leaked_after"], not e["leaked_before"]))
    pick, seen = [], set()
    for e in ranked:
        if e["attack"] not in seen and len(pick) < EVIDENCE_ROWS:
            pick.append(e)
            seen.add(e["attack"])
    pick += [e for e in ranked if e not in pick][: EVIDENCE_ROWS - len(pick)]
    out.append(P(["A sample, before and after (personal data masked as [REDACTED]):"]))
    table = []
    for e in pick:
        leak = f"{'yes' if e['leaked_before'] else 'no'} → {'yes' if e['leaked_after'] else 'no'}"
        table.append([e["attack"], _short(e["prompt"], 120), _short(e["output_before"]), _short(e["output_after"]),
                      (leak, "fail" if e["leaked_after"] else "pass")])
    out.append(Table(["attack", "prompt", "answer before", "answer after", "leaked"], table, cls="evidence"))
    return out


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


# ------------------------------------------------------------------ HTML

CSS = """
@page { size: A4; margin: 14mm 13mm 16mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Helvetica, Arial, sans-serif; font-size: 10pt; color: #111;
  line-height: 1.45; max-width: 190mm; margin: 0 auto; padding: 8mm 6mm; background: #fff; }
h1 { font-size: 17pt; margin: 0 0 1mm; }
h2 { font-size: 13pt; margin: 8mm 0 2mm; padding-bottom: 1mm; border-bottom: 1.5px solid #222;
  break-after: avoid; page-break-after: avoid; }
h3 { font-size: 10.5pt; margin: 4mm 0 1mm; break-after: avoid; page-break-after: avoid; }
p { margin: 1.5mm 0; }
ul { margin: 1mm 0 2mm; padding-left: 6mm; } li { margin: 0.6mm 0; }
table { border-collapse: collapse; width: 100%; margin: 1.5mm 0 3mm; font-size: 8.8pt; }
tr { break-inside: avoid; page-break-inside: avoid; }
th, td { border: 1px solid #b9b9b9; padding: 1mm 1.6mm; text-align: left; vertical-align: top; }
th { background: #ececec; font-weight: bold; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.kv td:first-child { width: 30%; background: #f6f6f6; font-weight: bold; }
table.kv thead, table.sig thead { display: none; }
table.evidence td { font-size: 8pt; }
table.audit td, table.hashes td { font-size: 7.8pt; }
table.audit td { white-space: nowrap; }
table.audit td:nth-child(6) { white-space: normal; overflow-wrap: anywhere; }
table.evidence td { overflow-wrap: anywhere; }
table.evidence td:nth-child(1), table.evidence td:nth-child(5) { white-space: nowrap; overflow-wrap: normal; }
table.metrics code, table.policy code { word-break: normal; white-space: nowrap; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; font-size: 0.9em; word-break: break-all; }
.pass { color: #0b6e2e; font-weight: bold; } .fail { color: #b3001b; font-weight: bold; }
.skip, .muted { color: #666; }
.note { border-left: 4px solid #c99a00; background: #fff8dc; padding: 2mm 3mm; margin: 2mm 0; break-inside: avoid; }
.note.ok { border-color: #0b6e2e; background: #eaf6ee; }
figure { margin: 2mm 0 3mm; text-align: center; break-inside: avoid; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 8.5pt; color: #444; margin-top: 1mm; text-align: left; }
.signature { break-inside: avoid; page-break-inside: avoid; margin-top: 3mm; }
table.sig td { height: 13mm; vertical-align: bottom; }
table.sig td:first-child { width: 18%; vertical-align: middle; font-weight: bold; background: #f6f6f6; }
table.sig th { text-align: center; }
@media print { body { padding: 0; max-width: none; } h2 { break-before: auto; } a { color: inherit; } }
"""


def _html_parts(parts) -> str:
    out = []
    for part in parts if isinstance(parts, list) else [parts]:
        if isinstance(part, tuple):
            text, style = part
            text = html.escape(str(text))
            if style == "b":
                out.append(f"<strong>{text}</strong>")
            elif style == "code":
                out.append(f"<code>{text}</code>")
            else:
                out.append(f'<span class="{style}">{text}</span>')
        else:
            out.append(html.escape(str(part)))
    return "".join(out)


def render_html(blocks: list, title: str) -> str:
    body = []
    for b in blocks:
        if isinstance(b, H):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, P):
            body.append(f"<p>{_html_parts(b.parts)}</p>")
        elif isinstance(b, UL):
            body.append("<ul>" + "".join(f"<li>{_html_parts(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Note):
            body.append(f'<div class="note {b.kind}">{_html_parts(b.parts)}</div>')
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            rows = []
            for row in b.rows:
                cells = "".join(f'<td{" class=num" if i in b.numeric else ""}>{_html_parts(c)}</td>'
                                for i, c in enumerate(row))
                rows.append(f"<tr>{cells}</tr>")
            body.append(f'<table class="{b.cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
        elif isinstance(b, Figure):
            if b.png:
                data = base64.b64encode(b.png).decode()
                body.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Signature):
            head = "".join(f"<th>{html.escape(r)}</th>" for r in b.roles)
            rows = "".join(f"<tr><td>{label}</td>" + "<td></td>" * len(b.roles) + "</tr>"
                           for label in ("Name", "Role", "Date", "Signature"))
            body.append(f'<div class="signature"><p>{html.escape(b.statement)}</p>'
                        f'<table class="sig"><tr><th></th>{head}</tr>{rows}</table></div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------ Markdown

_MD_SPECIAL = re.compile(r"([\\`*<>|\[\]])")


def _md_text(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"(^|\s)_|_(\s|$)", lambda m: m.group(0).replace("_", "\\_"), text)


def _md_parts(parts) -> str:
    out = []
    for part in parts if isinstance(parts, list) else [parts]:
        if isinstance(part, tuple):
            text, style = part
            if style == "code":
                out.append(f"`{str(text).replace('`', '')}`")
            elif style in ("b", "pass", "fail"):
                out.append(f"**{_md_text(text)}**")
            else:
                out.append(_md_text(text))
        else:
            out.append(_md_text(part))
    return "".join(out)


def render_markdown(blocks: list) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, H):
            lines += [f"{'#' * b.level} {_md_text(b.text)}", ""]
        elif isinstance(b, P):
            lines += [_md_parts(b.parts), ""]
        elif isinstance(b, UL):
            lines += [f"- {_md_parts(i)}" for i in b.items] + [""]
        elif isinstance(b, Note):
            lines += [f"> {'⚠ ' if b.kind == 'warn' else ''}{_md_parts(b.parts)}", ""]
        elif isinstance(b, Table):
            headers = [h or " " for h in b.headers]
            lines.append("| " + " | ".join(_md_text(h) for h in headers) + " |")
            lines.append("|" + "|".join("---:" if i in b.numeric else "---" for i in range(len(headers))) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(_md_parts(c) for c in row) + " |")
            lines.append("")
        elif isinstance(b, Figure):
            lines += [f"*Chart not embedded in the Markdown version (see the HTML report): {_md_text(b.caption)}*", ""]
        elif isinstance(b, Signature):
            lines += [_md_text(b.statement), ""]
            lines.append("| | " + " | ".join(_md_text(r) for r in b.roles) + " |")
            lines.append("|---|" + "|".join("---" for _ in b.roles) + "|")
            for label in ("Name", "Role", "Date", "Signature"):
                lines.append(f"| {label} |" + " |" * len(b.roles))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
