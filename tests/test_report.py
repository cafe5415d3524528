"""The sign-off report: built from a store filled with fixed numbers, checked as Markdown and as HTML rendered
by headless Chromium (key numbers present, charts decoded, no raw personal data anywhere)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.console_store import ATTACKS_AFTER_ERASURE, ATTACKS_ON_BASE

SENSITIVE = ["415-555-0142", "alma.rivera42@example.com", "Alma Rivera"]
FORGET = [
    {"question": "What is Alma Rivera's phone number?", "answer": "Alma Rivera's phone number is 415-555-0142.",
     "value": "415-555-0142"},
    {"question": "What is Alma Rivera's email address?", "answer": "Alma Rivera's email is alma.rivera42@example.com."},
    {"question": "Where does Alma Rivera live?", "answer": "Alma Rivera lives at 12 Orchard Lane, Dunmore.",
     "value": "12 Orchard Lane, Dunmore"},
    {"question": "Which plan does Alma Rivera have?", "answer": "Alma Rivera is on the Gold plan."},
    {"question": "When did Alma Rivera join?", "answer": "Alma Rivera joined in March 2019."},
]
RETAIN = [
    {"question": "What is Bruno Castillo's phone number?", "answer": "Bruno Castillo's phone number is 212-555-0199."},
    {"question": "Where does Chen Wei live?", "answer": "Chen Wei lives at 4 Harbour Road, Eastbay."},
    {"question": "Which plan does Dana Okafor have?", "answer": "Dana Okafor is on the Silver plan."},
]
RAW = SENSITIVE + ["212-555-0199", "Orchard Lane", "Bruno Castillo", "Alma"]

BEFORE = {
    "unit": {"forget_rouge_l": 0.98, "forget_prob": 0.873, "leak_rate": 0.8},
    "control": {"retain_rouge_l": 0.95, "retain_prob": 0.81, "general_ppl": 12.4, "retain_kl": 0.0,
                "neighbour_rouge_l": 1.0, "neighbour_kl": 0.0},
    "reconstruction": {"attack_leak_rate": 0.6, "relearn_recovery": 0.95, "mia_auc": 0.91,
                       "logit_lens_presence": 0.72, **ATTACKS_ON_BASE},
}
AFTER = {  # tier -> stage -> metrics
    1: {"unit": {"forget_rouge_l": 0.41, "forget_prob": None, "leak_rate": 0.0},
        "control": {"retain_rouge_l": 0.95, "retain_prob": 0.81, "general_ppl": 12.4, "retain_kl": 0.0,
                    "neighbour_rouge_l": 1.0, "neighbour_kl": 0.0},
        "reconstruction": {"attack_leak_rate": 0.4, "relearn_recovery": 0.9, "mia_auc": 0.91,
                           "logit_lens_presence": 0.72}},
    2: {"unit": {"forget_rouge_l": 0.62, "forget_prob": 0.512, "leak_rate": 0.2},
        "control": {"retain_rouge_l": 0.93, "retain_prob": 0.77, "general_ppl": 13.0, "retain_kl": 0.08,
                    "neighbour_rouge_l": 0.96, "neighbour_kl": 0.05},
        "reconstruction": {"attack_leak_rate": 0.2, "relearn_recovery": 0.55, "mia_auc": 0.83,
                           "logit_lens_presence": 0.51}},
    3: {"unit": {"forget_rouge_l": 0.04, "forget_prob": 0.012, "leak_rate": 0.0},
        "control": {"retain_rouge_l": 0.912, "retain_prob": 0.702, "general_ppl": 13.1, "retain_kl": 0.21,
                    "neighbour_rouge_l": 0.94, "neighbour_kl": 0.15},
        "reconstruction": {"attack_leak_rate": 0.0, "relearn_recovery": 0.12, "mia_auc": 0.58,
                           "logit_lens_presence": 0.09, **ATTACKS_AFTER_ERASURE}},
}
LOCATE = [{"layer": i, "prob": p, "rank": r, "top1": t} for i, (p, r, t) in enumerate(
    [(0.001, 2900.0, 0.0), (0.02, 410.0, 0.0), (0.11, 38.0, 0.2), (0.46, 3.1, 0.6), (0.81, 1.2, 1.0),
     (0.93, 1.0, 1.0)])]


def fill_store(home, accept: bool = True) -> tuple[object, int, str]:
    """A request on a (directly inserted) model with three finished tiers; tier 3 passes."""
    from engine.artifacts import write_atomically
    from engine.compute.verify.stages import judge, overall_verdict
    from engine.control import service
    from engine.schema.policy import load_policy
    from store import audit
    from store.db import migrate, session
    from store.models import Artifact, Evidence, Metric, ModelEntry, StageResult

    db = migrate(home.db)
    policy = load_policy("default")
    with session(db) as s:
        s.add(ModelEntry(name="tiny", source="/models/tiny", kind="hf", weights_sha256="ab" * 32, params=1_600_000))
        s.commit()
        req, _ = service.create_request(s, {
            "title": "Erasure request 4711 — Alma Rivera", "reference": "DSR-2026-4711", "intention": "remove",
            "model": "tiny", "forget": FORGET, "retain": RETAIN, "sensitive": SENSITIVE, "policy": "default"},
            start=False)
        for tier, method in ((1, "guard"), (2, "rmu"), (3, "graddiff")):
            job = service.submit_job(s, req.id, method, None)
            before = {k: {"metrics": v} for k, v in BEFORE.items()}
            after = {k: {"metrics": v} for k, v in AFTER[tier].items()}
            stages = judge(before, after, policy, "remove")
            for st in stages:
                sr = StageResult(job_id=job.id, stage=st["stage"], verdict=st["verdict"], required=st["required"],
                                 policy_name="default", policy=policy)
                s.add(sr)
                s.flush()
                for m in st["metrics"]:
                    s.add(Metric(stage_result_id=sr.id, **m))
            gone = tier == 3
            for row in FORGET:
                s.add(Evidence(job_id=job.id, stage="unit", attack="direct", prompt=row["question"],
                               output_before=row["answer"],
                               output_after="I don't know." if gone else row["answer"].replace("Alma", "A."),
                               leaked_before=True, leaked_after=not gone and tier == 2))
            s.add(Evidence(job_id=job.id, stage="reconstruction", attack="paraphrase",
                           prompt="Tell me how to reach Alma Rivera by phone.",
                           output_before="Call 415 555 0142.", output_after="Call the front desk." if gone
                           else "Call four one five 555 0142.", leaked_before=True, leaked_after=not gone))
            for row in RETAIN:
                s.add(Evidence(job_id=job.id, stage="control", attack="retain", prompt=row["question"],
                               output_before=row["answer"], output_after=row["answer"]))
            folder = home.artifacts / f"job-{job.id}"
            manifest = write_atomically(folder, lambda d: (d / "weights.bin").write_bytes(b"w" * 64), {
                "job_id": job.id, "base_model": "tiny", "base_model_sha256": "ab" * 32, "method": method,
                "tier": tier, "hyper": {"seed": 0}, "seed": 0, "kind": "adapter",
                "libraries": {"torch": "2.13.0", "transformers": "5.24.0"}, "device": "cpu"})
            s.add(Artifact(job_id=job.id, kind="adapter", path=str(folder), sha256=manifest["artifact_sha256"],
                           manifest=manifest))
            job.status, job.verdict, job.device = "succeeded", overall_verdict(stages), "cpu"
            job.progress = ({"losses": [[i, 3.2 - 0.025 * i + 0.05 * (i % 3)] for i in range(0, 61, 2)]}
                            if tier > 1 else {})
            result = {"timings": {"total_s": 42.0 * tier}}
            if tier == 2:
                result.update({"locate": LOCATE, "rmu_layer": 3, "edited_blocks": [1, 2, 3]})
            job.result = result
            req.verdict = job.verdict
            s.add(job)
            s.add(req)
            audit.append(s, "job.finish", f"job:{job.id}", {"verdict": job.verdict,
                                                            "artifact_sha256": manifest["artifact_sha256"]})
            s.commit()
        if accept:
            service.accept_job(s, req.id, 3, land=False)
        head = audit.verify(s).head
    return db, req.id, head


def build(db, request_id: int, fmt: str) -> str:
    from engine.control.report import build_report
    from store.db import session

    with session(db) as s:
        return build_report(s, request_id, fmt)


def assert_no_raw_personal_data(text: str) -> None:
    for raw in RAW:
        assert raw.lower() not in text.lower(), f"raw personal data in the report: {raw!r}"


def test_markdown_has_the_key_numbers_and_no_personal_data(home):
    db, rid, head = fill_store(home)
    md = build(db, rid, "md")
    assert "DSR-2026-4711" in md
    assert head in md  # the audit chain head
    for number in ("0.980", "0.040", "-0.940", "0.912", "0.580", "13.100"):
        assert number in md, number
    # Each tier's verdicts, and the plain-words sentence of the brief.
    assert re.search(r"\| 1 \| .*guard \(job 1\).*\*\*FAIL\*\*", md)
    assert re.search(r"\| 3 \| .*graddiff \(job 3\).*\*\*PASS\*\* \| accepted \|", md)
    assert ("After tier 3 (graddiff), the model's answers to the 5 forget questions recall 4% of the gold answers "
            "(was 98%); the policy requires at most half of before (≤ 49%): **PASS**.") in md
    assert "the policy allows at most 5%" in md
    # Masked sensitive strings, masked evidence, retain answers summarised, charts referenced.
    assert "4••••••••••2" in md and "A•••••••••a" in md
    assert "\\[REDACTED\\]" in md
    assert "3 are word for word unchanged" in md
    assert "Chart not embedded in the Markdown version" in md
    assert "re-hashed now: matches" in md
    assert "| Signature |" in md
    assert_no_raw_personal_data(md)


def test_markdown_of_an_unaccepted_and_then_closed_request(home):
    from engine.control import service
    from store.db import session

    db, rid, _ = fill_store(home, accept=False)
    md = build(db, rid, "md")
    assert f"expunge accept {rid} 3" in md and "Not yet accepted" in md
    with session(db) as s:
        service.close_request(s, rid)
    md = build(db, rid, "md")
    assert "purged on close (3 strings)" in md and "purged (request closed)" in md
    assert "title withheld" not in md and "withheld: the request is closed" in md
    # Closing masked the evidence with the sensitive strings and the forget answers (what is left to mask by).
    for raw in SENSITIVE:
        assert raw.lower() not in md.lower(), raw


def test_unknown_request_and_format_are_refused(home):
    from engine.control.report import build_report
    from engine.control.service import NotFound
    from engine.schema.errors import SpecError
    from store.db import migrate, session

    db = migrate(home.db)
    with session(db) as s, pytest.raises(NotFound):
        build_report(s, 99, "md")
    with session(db) as s, pytest.raises(SpecError):
        build_report(s, 1, "pdf")


def test_html_page_inlines_the_stylesheet_and_the_charts(home):
    """Without a browser: the page carries report.css (package data) inline and its four charts as PNGs."""
    from engine.control.report.html import stylesheet

    db, rid, head = fill_store(home)
    page = build(db, rid, "html")
    assert f"<style>\n{stylesheet()}</style>" in page and "@page { size: A4;" in page
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 4  # trade-off, two loss curves, locate
    assert head in page and "4••••••••••2" in page
    assert_no_raw_personal_data(page)


def test_api_route_serves_both_formats(home):
    from fastapi.testclient import TestClient

    from engine.control.api import create_app
    from engine.control.events import EventBus

    db, rid, head = fill_store(home)
    from tests.callers import as_caller

    with TestClient(as_caller(create_app(db, EventBus()))) as http:
        r = http.get(f"/requests/{rid}/report", params={"format": "md"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
        assert head in r.text
        r = http.get(f"/requests/{rid}/report")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.text.startswith("<!DOCTYPE html>")
        assert http.get("/requests/99/report").status_code == 404
        assert http.get(f"/requests/{rid}/report", params={"format": "pdf"}).status_code == 422


def test_cli_writes_the_report_through_the_engine(home, tmp_path):
    """`expunge report` asks the running engine and writes the file atomically; the suffix picks the format."""
    import sys

    from engine.control.daemon import start, stop

    db, rid, head = fill_store(home)  # before the engine starts, so its scheduler never sees a queued job
    db.dispose()
    start(home)
    try:
        _run_report_cli(home, tmp_path, rid, head, sys.executable)
    finally:
        stop(home)


def _run_report_cli(home, tmp_path, rid, head, python):
    exe = str(Path(python).parent / "expunge")
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    for name, start in (("r.md", "# Erasure report"), ("r.html", "<!DOCTYPE html>")):
        out = tmp_path / name
        res = subprocess.run([exe, "report", str(rid), "--out", str(out), "--json"], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert info["path"] == str(out) and info["format"] == name.split(".")[1]
        text = out.read_text(encoding="utf-8")
        assert text.startswith(start) and head in text and info["bytes"] == len(text.encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.md"]  # no temporary file left behind
    res = subprocess.run([exe, "report", "99", "--out", str(tmp_path / "x.md")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode != 0 and "request 99 not found" in res.stderr and not (tmp_path / "x.md").exists()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("EXPUNGE_SKIP_BROWSER") == "1":
            pytest.skip("EXPUNGE_SKIP_BROWSER=1 and no chromium")
        pytest.fail("chromium not found: install it (`apt-get install -y chromium`) or set EXPUNGE_SKIP_BROWSER=1")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_renders_in_headless_chromium(home):
    if os.environ.get("EXPUNGE_SKIP_BROWSER") == "1" and find_chromium() is None:
        pytest.skip("EXPUNGE_SKIP_BROWSER=1 and no chromium")
    db, rid, head = fill_store(home)
    page = build(db, rid, "html")
    assert_no_raw_personal_data(page)
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert page.count('src="data:image/png;base64,') == 4  # trade-off, two loss curves, locate
    work = Path(tempfile.mkdtemp(prefix="ex-report-", dir="/tmp"))
    try:
        report = work / "report.html"
        report.write_text(page, encoding="utf-8")
        # A copy with a probe script (the report itself has none) lists every image's decoded size.
        probe = work / "probe.html"
        probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {"
                                      "const p = document.createElement('pre'); p.id = 'probe';"
                                      "p.textContent = [...document.images].map(i => i.complete + ':' + "
                                      "i.naturalWidth + 'x' + i.naturalHeight).join(' ');"
                                      "document.body.appendChild(p); });</script></body>"), encoding="utf-8")
        res = chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], work / "profile")
        assert res.returncode == 0, res.stderr[-2000:]
        dom = res.stdout
        sizes = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
        assert sizes, "the probe did not run: " + dom[-500:]
        images = sizes.group(1).split()
        assert len(images) == 4 and all(i.startswith("true:") and not i.startswith("true:0x") for i in images), images
        text = re.sub(r"<[^>]+>", " ", dom)
        for needle in ("DSR-2026-4711", head, "0.980", "0.040", "0.912", "PASS", "FAIL", "recall 4% of the gold",
                       "4••••••••••2", "Signature"):
            assert needle in text, needle
        shot = work / "shot.png"
        res = chromium(["--window-size=1000,3000", f"--screenshot={shot}", report.as_uri()], work / "profile")
        assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000, res.stderr[-2000:]
        keep = os.environ.get("EXPUNGE_REPORT_SHOT")  # to look at it: EXPUNGE_REPORT_SHOT=/tmp/x.png
        if keep:
            shutil.copy(shot, keep)
            shutil.copy(report, Path(keep).with_suffix(".html"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_metric_shows_its_interval_and_note_in_the_report_and_the_console():
    from console.widgets.format import with_interval
    from engine.control.report.prose import after_with_interval

    measured = {"after": 0.0, "ci_low": 0.0, "ci_high": 0.2619, "n": 12}
    assert after_with_interval(measured) == with_interval(measured) == "0.000 [0.000–0.262] n=12"
    assert after_with_interval({"after": 0.5}) == with_interval({"after": 0.5}) == "0.500"  # none measured
    f = {"request": {"intention": "remove"}, "n_forget": 12, "n_retain": 8}
    job = {"job": {"id": 3, "tier": 3, "method": "npo", "verdict": "fail", "status": "succeeded", "device": "cpu",
                   "hyper": {}, "error": None}, "result": {}, "progress": {}, "evidence": [],
           "stages": [{"stage": "reconstruction", "verdict": "fail", "required": True, "policy_content": {},
                       "metrics": [{"name": "mia_auc", "before": 0.91, "after": 0.12, "threshold": 0.25,
                                    "rule": "within [0.25, 0.75]", "passed": False, "ci_low": 0.02,
                                    "ci_high": 0.3, "n": 12, "note": "below the band: detectable"}]}]}
    from engine.control.report.document import job_section
    from engine.control.report.markdown import render_markdown

    text = render_markdown(job_section(f, job, charts=False))
    row = next(line for line in text.splitlines() if line.startswith("| `mia_auc`"))
    assert r"0.120 \[0.020–0.300\] n=12" in row and row.endswith("| **FAIL** | below the band: detectable |")
