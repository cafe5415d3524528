"""A tuning job's trials (child rows of the job): written as the worker reports them, closed when the job is
cancelled or fails mid-trial, read by the API, the console and the report."""

from __future__ import annotations

from sqlmodel import Session, select

from engine.control.service.lookup import get_job
from engine.schema.views import TrialView
from store import audit
from store.models import TuningTrial

FIELDS = ("state", "params", "metrics", "stages", "passed", "score", "objective", "steps", "seconds", "reason",
          "winner")


def store_trial(s: Session, job_id: int, record: dict) -> TuningTrial:
    """Insert or update trial `record["number"]` of the job (a trial is reported when it starts, when it ends, and
    once more if it wins)."""
    row = s.exec(select(TuningTrial).where(TuningTrial.job_id == job_id,
                                           TuningTrial.number == int(record["number"]))).first()
    row = row or TuningTrial(job_id=job_id, number=int(record["number"]))
    for name in FIELDS:
        if name in record:
            setattr(row, name, record[name])
    s.add(row)
    if record.get("winner"):
        audit.append(s, "job.tune.winner", f"job:{job_id}", {"trial": row.number, "params": row.params,
                                                             "passed_proxy": row.passed})
    s.commit()
    return row


def close_running(s: Session, job_id: int, state: str, reason: str) -> int:
    """The trial that was running when the job was cancelled or failed ends with it; the finished ones stay."""
    rows = s.exec(select(TuningTrial).where(TuningTrial.job_id == job_id, TuningTrial.state == "running")).all()
    for row in rows:
        row.state, row.reason = state, reason
        s.add(row)
    s.commit()
    return len(rows)


def trial_views(s: Session, job_id: int) -> list[dict]:
    rows = s.exec(select(TuningTrial).where(TuningTrial.job_id == job_id).order_by(TuningTrial.number)).all()
    return [TrialView.model_validate(r).model_dump() for r in rows]


def job_trials(s: Session, job_id: int) -> list[dict]:
    get_job(s, job_id)  # 404 for an unknown job
    return trial_views(s, job_id)
