"""The scheduler's bookkeeping, in process: a verdict is stored with the policy it was judged against
(not a re-read of a profile edited meanwhile), and the 'before' cache key follows the measuring code."""

from __future__ import annotations

from engine.schema.spec import load_spec_file


def test_verdict_keeps_the_policy_the_worker_judged_against(home, tiny, demo_request):
    from sqlmodel import select

    from engine.control import service
    from engine.control.events import EventBus
    from engine.control.scheduler import Scheduler
    from store.db import migrate, session
    from store.models import StageResult

    folder = home.policies
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ours.toml").write_text('description = "as judged"\n[unit]\nleak_rate = { rule = "max", threshold = 0.1 }\n')
    spec = {**load_spec_file(demo_request["spec_path"]), "policy": "ours"}
    db = migrate(home.db)
    with session(db) as s:
        service.register_model(s, "tiny", str(tiny["dir"]))
        req, _ = service.create_request(s, spec, start=False)
        job = service.submit_job(s, req.id, "guard", {})
        job.status = "running"
        s.add(job)
        s.commit()
        job_id = job.id
    sched = Scheduler(db, home, EventBus(), slots=[{"slot": 0, "device": "cpu", "env": {}}])
    judged = sched._payload(job_id).policy
    # The operator edits the profile while the job runs.
    (folder / "ours.toml").write_text('description = "edited later"\n[unit]\nleak_rate = { rule = "max", threshold = 0.9 }\n')
    stage = {"stage": "unit", "verdict": "pass", "required": True,
             "metrics": [{"name": "leak_rate", "before": 0.8, "after": 0.0, "threshold": 0.1, "rule": "max",
                          "passed": True}]}
    msg = {"stages": [stage], "verdict": "pass", "policy": judged, "evidence": [],
           "artifact": {"kind": "guard", "path": str(home.artifacts / "job-1"), "sha256": "0" * 64, "manifest": {}}}
    sched._store_result(job_id, msg)
    with session(db) as s:
        stored = s.exec(select(StageResult).where(StageResult.job_id == job_id)).one()
    assert stored.policy_name == "ours"
    assert stored.policy["description"] == "as judged"
    assert stored.policy["unit"]["leak_rate"]["threshold"] == 0.1

