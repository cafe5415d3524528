"""The tables. Request texts (personal data) live only in RequestData.rows and are purged on close.

Structured values are JSON columns (revision 0004; SQLite keeps them as text): the attribute holds the
decoded value, Python None is SQL NULL. Their database columns keep the names revision 0001 gave them
(`spec_json`, ...), so a database's rows and raw SQL over it read as before."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    # Aware: sqlmodel >= 0.0.50 stores datetimes as UTCDateTime and refuses naive values.
    return datetime.now(UTC)


def json_column(name: str, nullable: bool = False) -> Column:
    """A JSON column stored under its revision-0001 name; None is SQL NULL, never the JSON text 'null'. A
    required one defaults to {} for inserts that leave it out (as the text columns defaulted to '{}')."""
    return Column(name, JSON(none_as_null=True), nullable=nullable, default=None if nullable else lambda: {})


class ModelEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    source: str  # local HF directory, GGUF file, or an offline hub id
    kind: str = "hf"  # hf | gguf | hub
    weights_sha256: str = ""
    params: int = 0
    options: dict = Field(default_factory=dict, sa_column=json_column("options_json"))  # chat_template, dtype, …
    retain_path: str | None = None  # default retain sample for requests on this model
    holdout_path: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Request(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    title: str
    reference: str = Field(default="", index=True)
    intention: str = "remove"  # suppress | remove
    model_name: str
    policy: str = "default"
    status: str = Field(default="open", index=True)  # open | closed
    current_tier: int = 0
    accepted_job_id: int | None = None
    auto_escalate: bool = False  # the engine climbs the ladder itself until the verdicts pass
    verdict: str | None = None  # pass | fail of the latest finished job
    spec: dict = Field(default_factory=dict, sa_column=json_column("spec_json"))  # the spec without its texts
    created_at: datetime = Field(default_factory=utcnow, index=True)
    closed_at: datetime | None = None


class RequestData(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    kind: str  # forget | retain | holdout | probes | sensitive
    rows: list | None = Field(default=None, sa_column=json_column("rows_json", nullable=True))  # None once purged
    sha256: str
    count: int = 0


class Job(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    tier: int
    method: str = Field(index=True)
    hyper: dict = Field(default_factory=dict, sa_column=json_column("hyper_json"))
    seed: int = 0
    priority: int = Field(default=0, index=True)
    status: str = Field(default="queued", index=True)  # queued|running|succeeded|failed|cancelled|interrupted
    verdict: str | None = Field(default=None, index=True)  # pass | fail, over the stages the intention needs
    phase: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    progress: dict = Field(default_factory=dict, sa_column=json_column("progress_json"))  # loss curve, OOM back-off
    result: dict = Field(default_factory=dict, sa_column=json_column("result_json"))  # locate chart, timings, notes
    device: str = ""
    slot: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    executor: str | None = None  # local | ray: who ran it (revision 0008)
    node: str | None = None  # where it ran: the host name, or the Ray node (id and address)


class StageResult(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    stage: str  # unit | control | reconstruction
    verdict: str  # pass | fail | incomplete | skipped
    required: bool = True  # whether the request's intention is judged on this stage
    policy_name: str = "default"
    policy: dict = Field(default_factory=dict, sa_column=json_column("policy_json"))  # as judged against
    note: str | None = None  # why the stage is incomplete (revision 0003)


class Metric(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    stage_result_id: int = Field(foreign_key="stageresult.id", index=True)
    name: str
    before: float | None = None
    after: float | None = None
    threshold: float | None = None
    rule: str = ""  # how after is judged, e.g. "after <= threshold" or "after >= threshold * before"
    passed: bool | None = None
    # Revision 0003: the 95% interval of `after` and the sample it rests on (None: not recorded), and why the
    # metric was not judged (not measured, no signal on the base, waived) or which side of a band it failed.
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    note: str | None = None


class Evidence(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    stage: str
    attack: str = "direct"
    prompt: str
    output_before: str = ""
    output_after: str = ""
    leaked_before: bool = False
    leaked_after: bool = False
    # Where each output leaks: {"before": [[start, end], ...], "after": [...]} (character offsets; a side is
    # null when not recorded). NULL for rows from before revision 0002. After a close: the masked parts.
    spans: dict | None = Field(default=None, sa_column=json_column("spans_json", nullable=True))


class Artifact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    kind: str  # adapter | delta | guard | full
    path: str
    sha256: str
    manifest: dict = Field(default_factory=dict, sa_column=json_column("manifest_json"))
    created_at: datetime = Field(default_factory=utcnow)


class BaselineCache(SQLModel, table=True):
    """'Before' metrics, computed once per (model weights, dataset, evaluation settings)."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True)
    payload: dict = Field(sa_column=json_column("payload_json"))
    created_at: datetime = Field(default_factory=utcnow)


class AuditAnchor(SQLModel, table=True):
    """The chain's length and head, updated with every append: deleting the newest rows leaves an
    intact-looking chain, but not one that matches its anchor."""

    id: int | None = Field(default=None, primary_key=True)
    rows: int = 0
    head: str = ""


class AuditEvent(SQLModel, table=True):
    """Append-only; each row's hash covers its content and the previous row's hash."""

    id: int | None = Field(default=None, primary_key=True)
    ts: str
    actor: str
    action: str
    subject: str = ""
    # Text, not a JSON column: the row's hash covers these exact characters.
    detail_json: str = "{}"
    prev_hash: str
    hash: str
