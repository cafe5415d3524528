"""A store with fixed content for the console's snapshot tests, written by the engine's own code paths.

Requests are filed with `engine.control.service`; jobs are claimed, fed progress and finished (or failed, or
interrupted) by the real `engine.control.scheduler` functions with fixed result messages, exactly as a worker's
messages would be stored. The clock is fixed while writing, so every timestamp the console shows is fixed."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store.paths import Paths

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
# The engine's "today" (tests/fixed_today): due dates and days left are counted from it, not from the real date.
TODAY = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
FIXED_TODAY_PATH = Path(__file__).parent / "fixed_today"

PEOPLE = {
    "Alma Rivera": {"phone": "415-555-0142", "email": "alma.rivera.27@example.com",
                    "address": "12 Juniper Lane, Westmere", "account": "ACC-40417", "employer": "Harborlight Logistics"},
    "Bo Lindqvist": {"phone": "212-555-0177", "email": "bo.lindqvist.3@example.net",
                     "address": "9 Alder Court, Briarton", "account": "ACC-11873", "employer": "Kestrel Aviation"},
}
OTHERS = ["Celeste Dunmore", "Dorian Everly", "Elodie Galloway", "Fabian Hartigan", "Greta Ingleby", "Hollis Jessup"]


def qa(name: str, attr: str, value: str) -> dict:
    q = {"phone": "What is the phone number of {n}?", "email": "What is the email address of {n}?",
         "address": "What is the street address of {n}?", "account": "What is the account number of {n}?",
         "employer": "Who is the employer of {n}?"}[attr].format(n=name)
    a = {"phone": "{n}'s phone number is {v}.", "email": "{n}'s email address is {v}.",
         "address": "{n} lives at {v}.", "account": "{n}'s account number is {v}.",
         "employer": "{n} works at {v}."}[attr].format(n=name, v=value)
    return {"question": q, "answer": a}


def forget_rows(name: str) -> list[dict]:
    return [qa(name, attr, value) for attr, value in PEOPLE[name].items()]


def retain_rows() -> list[dict]:
    return [qa(n, "employer", "Brightmoor Bakery") for n in OTHERS]


def fake_model_dir(folder: Path) -> Path:
    """A registrable model directory: config.json and one small safetensors file (never loaded here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 64 * 64 * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(64 * 64 * 4))
    return folder


def files_only(source: str, options=None, cache_root=None) -> dict:
    """What registering the fake model records, without the engine's load check (it has no tokenizer)."""
    from engine.model_files import count_safetensors_params, weight_files, weights_sha256

    path = Path(source).resolve()
    return {"kind": "hf", "source": str(path), "weights_sha256": weights_sha256(weight_files(path)),
            "params": count_safetensors_params(path)}


class FixedClock:
    """Every call is one minute after the last: fixed, ordered timestamps."""

    def __init__(self) -> None:
        self.t = T0

    def tick(self) -> datetime:
        self.t += timedelta(minutes=1)
        return self.t


# The reconstruction attacks added with the verdict rules (quantization, in-context and retain-only
# relearning, extraction): on the base, and after an erasure that holds against them.
ATTACKS_ON_BASE = {"incontext_leak_rate": 0.5, "retain_relearn_recovery": 0.9, "quant8_forget_rouge_l": 0.921,
                   "quant8_leak_rate": 0.75, "quant4_forget_rouge_l": 0.904, "quant4_leak_rate": 0.7,
                   "extraction_strength": 0.85, "exact_memorisation": 0.9}
ATTACKS_AFTER_ERASURE = {"incontext_leak_rate": 0.0, "retain_relearn_recovery": 0.1, "quant8_forget_rouge_l": 0.055,
                         "quant8_leak_rate": 0.0, "quant4_forget_rouge_l": 0.12, "quant4_leak_rate": 0.0,
                         "extraction_strength": 0.08, "exact_memorisation": 0.55}

BEFORE = {
    "unit": {"forget_rouge_l": 0.923, "forget_prob": 0.811, "leak_rate": 0.75},
    "control": {"retain_rouge_l": 0.902, "retain_prob": 0.784, "general_ppl": 12.41, "retain_kl": 0.0,
                "neighbour_rouge_l": 1.0, "neighbour_kl": 0.0},
    "reconstruction": {"attack_leak_rate": 0.6, "relearn_recovery": 0.95, "mia_auc": 0.912,
                       "logit_lens_presence": 0.704, **ATTACKS_ON_BASE},
}
AFTER_RMU = {
    "unit": {"forget_rouge_l": 0.214, "forget_prob": 0.187, "leak_rate": 0.0},
    "control": {"retain_rouge_l": 0.871, "retain_prob": 0.733, "general_ppl": 13.05, "retain_kl": 0.214,
                "neighbour_rouge_l": 0.951, "neighbour_kl": 0.122},
    "reconstruction": {"attack_leak_rate": 0.35, "relearn_recovery": 0.55, "mia_auc": 0.804,
                       "logit_lens_presence": 0.52, "incontext_leak_rate": 0.25, "retain_relearn_recovery": 0.4,
                       "quant8_forget_rouge_l": 0.23, "quant8_leak_rate": 0.05, "quant4_forget_rouge_l": 0.41,
                       "quant4_leak_rate": 0.2, "extraction_strength": 0.3, "exact_memorisation": 0.8},
}
AFTER_GRADDIFF = {
    "unit": {"forget_rouge_l": 0.051, "forget_prob": 0.021, "leak_rate": 0.0},
    "control": {"retain_rouge_l": 0.846, "retain_prob": 0.702, "general_ppl": 14.02, "retain_kl": 0.351,
                "neighbour_rouge_l": 0.93, "neighbour_kl": 0.193},
    "reconstruction": {"attack_leak_rate": 0.05, "relearn_recovery": 0.12, "mia_auc": 0.583,
                       "logit_lens_presence": 0.104, **ATTACKS_AFTER_ERASURE},
}
AFTER_GUARD = {
    "unit": {"forget_rouge_l": 0.0, "forget_prob": 0.811, "leak_rate": 0.0},
    "control": {"retain_rouge_l": 0.902, "retain_prob": 0.784, "general_ppl": 12.41, "retain_kl": 0.0,
                "neighbour_rouge_l": 1.0, "neighbour_kl": 0.0},
    # A guard leaves the weights as they are: the white-box attacks read the base's figures.
    "reconstruction": {"attack_leak_rate": 0.0, "relearn_recovery": 0.0, "mia_auc": 0.912,
                       "logit_lens_presence": 0.704, **ATTACKS_ON_BASE, "incontext_leak_rate": 0.0},
}
LOCATE = [{"layer": i, "prob": p, "rank": r, "top1": t} for i, (p, r, t) in enumerate(
    [(0.0004, 2210.0, 0.0), (0.003, 412.0, 0.0), (0.041, 37.0, 0.05), (0.36, 2.0, 0.4), (0.71, 1.0, 0.85)])]


def evidence(name: str, after_leaks: set[int]) -> list[dict]:
    """Evidence rows with the leaked spans the engine's own matcher finds (the person's details as the terms)."""
    from engine.leaks import leak_spans

    terms = list(PEOPLE[name].values())
    rows = []
    for i, (attr, value) in enumerate(list(PEOPLE[name].items())[:4]):
        row = qa(name, attr, value)
        leaked_after = i in after_leaks
        after = row["answer"] if leaked_after else "I do not have that information."
        rows.append({"stage": "unit" if i < 2 else "reconstruction", "attack": "direct" if i < 2 else "paraphrase",
                     "prompt": row["question"], "output_before": row["answer"], "output_after": after,
                     "leaked_before": True, "leaked_after": leaked_after,
                     "spans_before": [list(x) for x in leak_spans(row["answer"], terms)],
                     "spans_after": [list(x) for x in leak_spans(after, terms)]})
    return rows


def result_message(before: dict, after: dict, policy: dict, intention: str, ev: list[dict], extra: dict,
                   job_id: int) -> dict:
    from engine.compute.verify.stages import judge, overall_verdict

    stages = judge({k: {"metrics": v} for k, v in before.items()}, {k: {"metrics": v} for k, v in after.items()},
                   policy, intention)
    return {"stages": stages, "verdict": overall_verdict(stages), "policy": policy, "evidence": ev, "device": "cpu",
            "artifact": {"kind": "adapter", "path": f"/srv/expunge/artifacts/job-{job_id}", "sha256": "ab" * 32,
                         "manifest": {"job_id": job_id}},
            "result": {"timings": {"before_s": 41.2, "method_s": 95.7, "verify_s": 38.4}, **extra}}


def losses(n: int, start: float, end: float) -> list[tuple[int, float]]:
    return [(s, round(start + (end - start) * (s / n) ** 0.5 + 0.04 * ((s * 7) % 5 - 2) / 2, 4))
            for s in range(1, n + 1)]


def prefill(paths: Paths) -> dict:
    """Four requests, six jobs: finished (fail, pass), a guard on a closed request, interrupted, failed,
    cancelled. Returns their ids by role."""
    import engine.control.scheduler as scheduler_mod
    import engine.control.service as service
    import engine.control.service.clock as service_clock
    import store.audit as audit_mod
    from engine.control.events import EventBus
    from engine.schema.policy import load_policy
    from store.db import migrate, session
    from store.models import Job, Request

    clock = FixedClock()

    class FixedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            t = clock.tick()
            return t if tz else t.replace(tzinfo=None)

    saved = (audit_mod.datetime, service_clock.now)
    audit_mod.datetime = FixedDatetime
    service_clock.now = clock.tick
    try:
        db = migrate(paths.ensure().db)
        model_dir = fake_model_dir(paths.data / "snapshot-model")
        sched = scheduler_mod.Scheduler(db, paths, EventBus(), slots=[{"slot": 0, "device": "cpu", "env": {}}])
        slot = sched.slots[0]
        policy = load_policy("default")
        ids: dict[str, int] = {}

        with session(db) as s:
            service.register_model(s, "demo", str(model_dir), inspect=files_only)

        def file(title, reference, intention, person, method, **kw):
            body = {"title": title, "reference": reference, "intention": intention, "model": "demo",
                    "forget": forget_rows(person), "retain": retain_rows(),
                    "sensitive": [PEOPLE[person]["phone"], PEOPLE[person]["email"]], "policy": "default"}
            with session(db) as s:
                req, job = service.create_request(s, body, method, kw.get("hyper"))
                return req.id, job.id

        def claim_and_train(job_id, n_steps, total, start, end):
            assert sched._claim(slot) == job_id
            tracker = scheduler_mod.ProgressTracker(sched, job_id)
            tracker.update({"phase": "load", "step": 0, "total": 0})
            for step, loss in losses(n_steps, start, end):
                tracker.update({"phase": "train", "step": step, "total": total, "loss": loss,
                                "eta": round((total - step) * 1.6, 1)})
            tracker.flush()
            slot.job_id = None

        # 1. The demo story: tier 2 (RMU) fails reconstruction, tier 3 (GradDiff) passes.
        req, job = file("Erasure request 4711 — Alma Rivera", "DSR-2026-4711", "remove", "Alma Rivera", "rmu")
        ids.update(request=req, rmu=job)
        claim_and_train(job, 40, 40, 2.1, 0.9)
        sched._store_result(job, result_message(BEFORE, AFTER_RMU, policy, "remove", evidence("Alma Rivera", {2}),
                                                {"locate": LOCATE, "rmu_layer": 2}, job))
        with session(db) as s:
            ids["graddiff"] = service.escalate(s, req, method="graddiff").id
        claim_and_train(ids["graddiff"], 60, 60, 3.2, 0.45)
        sched._store_result(ids["graddiff"], result_message(BEFORE, AFTER_GRADDIFF, policy, "remove",
                                                            evidence("Alma Rivera", set()), {}, ids["graddiff"]))

        # 2. A suppress request: the guard passes; accepted and closed (texts purged).
        req2, job2 = file("Stop reproducing the licensed catalogue", "LIC-2026-77", "suppress", "Alma Rivera",
                          "guard")
        ids.update(suppress_request=req2, guard=job2)
        assert sched._claim(slot) == job2
        slot.job_id = None
        sched._store_result(job2, result_message(BEFORE, AFTER_GUARD, policy, "suppress",
                                                 evidence("Alma Rivera", set()), {}, job2))
        with session(db) as s:
            service.accept_job(s, req2, job2, land=False)
            service.close_request(s, req2)

        # 3. An interrupted job (the engine stopped mid-training), resumable.
        req3, job3 = file("Erasure request 4790 — Bo Lindqvist", "DSR-2026-4790", "remove", "Bo Lindqvist", "npo")
        ids.update(interrupted_request=req3, interrupted=job3)
        claim_and_train(job3, 24, 60, 2.8, 1.7)
        scheduler_mod.recover(db)

        # 4. A failed job, and a cancelled one on the same request.
        req4, job4 = file("Erasure request 4802 — Bo Lindqvist (retry)", "DSR-2026-4802", "remove",
                          "Bo Lindqvist", "graddiff", hyper={"batch_size": 512})
        ids.update(failed_request=req4, failed=job4)
        assert sched._claim(slot) == job4
        slot.job_id = None
        sched._fail(job4, "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB. Try a smaller batch_size "
                          "(or more grad_accum), LoRA instead of full weights (lora=true).")
        with session(db) as s:
            ids["cancelled"] = service.submit_job(s, req4, "simnpo", None).id
            service.cancel_job(s, ids["cancelled"])

        # Creation times (the tables' defaults read the real clock): fixed, just before each row's first use.
        with session(db) as s:
            for j in s.query(Job).order_by(Job.id):
                j.created_at = (j.started_at or clock.tick()) - timedelta(seconds=30)
                s.add(j)
            for r in s.query(Request).order_by(Request.id):
                first = s.query(Job).filter(Job.request_id == r.id).order_by(Job.id).first()
                r.created_at = first.created_at - timedelta(seconds=30)
                s.add(r)
            # The legal clock: the engine counts days left from TODAY (its clock is fixed there), so the screens
            # show the same dates and days left on any day. Overdue, due soon, due later; the closed request
            # was received when filed and answered on time.
            today = TODAY.replace(hour=23, minute=59, second=59)
            for rid, days in ((ids["request"], 12), (ids["interrupted_request"], 3), (ids["failed_request"], -2)):
                r = s.get(Request, rid)
                r.due_at = today + timedelta(days=days)
                r.received_at = r.due_at - timedelta(days=30)
                s.add(r)
            r = s.get(Request, ids["suppress_request"])
            r.received_at, r.due_at = r.created_at, r.created_at + timedelta(days=30)
            s.add(r)
            s.commit()
        db.dispose()
        return ids
    finally:
        audit_mod.datetime, service_clock.now = saved


def _tables_pending(app) -> bool:
    """Whether a DataTable on any stacked screen still has rows or cells whose column widths it sizes on its
    next idle (Textual's private flags: a snapshot taken before that shows squeezed columns)."""
    from textual.widgets import DataTable

    for screen in app.screen_stack:
        for table in screen.query(DataTable):
            if table._require_update_dimensions or table._updated_cells:
                return True
    return False


async def settle(pilot, timeout: float = 30.0) -> None:
    """Wait until the console is connected and its current screen has loaded, with no load in flight."""
    import asyncio
    import time

    app = pilot.app
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        screen = app.screen
        busy = any(w.is_running for w in app.workers if w.group not in ("engine",))
        ready = (app.connected and getattr(screen, "loaded", True) and not busy and not app._flush_armed
                 and not _tables_pending(app))
        calm = calm + 1 if ready else 0
        if calm >= 4:
            await pilot.pause()
            return
        await asyncio.sleep(0)
    raise TimeoutError(f"the console did not settle on {app.screen!r}")


@contextmanager
def prefilled_engine(prefix: str):
    """A real engine on a fresh EXPUNGE_HOME holding the fixed store: (paths, ids); restores the env after."""
    from engine.control.daemon import start, stop
    from store.paths import get_paths

    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    saved = {k: os.environ.get(k) for k in ("EXPUNGE_HOME", "EXPUNGE_SLOTS", "EXPUNGE_TEST_TODAY", "PYTHONPATH")}
    os.environ["EXPUNGE_HOME"], os.environ["EXPUNGE_SLOTS"] = str(root), "cpu"
    # The engine process starts its clock at TODAY (tests/fixed_today/sitecustomize.py).
    os.environ["EXPUNGE_TEST_TODAY"] = TODAY.replace(tzinfo=None).isoformat()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIXED_TODAY_PATH), saved["PYTHONPATH"]) if p)
    try:
        paths = get_paths().ensure()
        ids = prefill(paths)
        start(paths)
        try:
            yield paths, ids
        finally:
            stop(paths)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)
