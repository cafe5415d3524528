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
    # Revision 0007: tune each tier's job before climbing ({"trials", "minutes", "seed"}; None: untuned).
    tune: dict | None = Field(default=None, sa_column=json_column("tune_json", nullable=True))
    verdict: str | None = None  # pass | fail of the latest finished job
    spec: dict = Field(default_factory=dict, sa_column=json_column("spec_json"))  # the spec without its texts
    created_at: datetime = Field(default_factory=utcnow, index=True)
    closed_at: datetime | None = None
    # Revision 0005 (issue 15): who filed it, the legal clock, who accepted the result. Requests filed before
    # it have no received/due date: they read as received when filed, due 30 days later.
    requested_by: str = ""
    received_at: datetime | None = None
    legal_basis: str = ""
    due_at: datetime | None = Field(default=None, index=True)
    extension_days: int = 0  # at most 60, each extension audited with its reason
    extension_reason: str | None = None
    accepted_by: str | None = None
    accepted_at: datetime | None = None
    accept_comment: str | None = None
    # Revision 0006 (model versions): the version of the model its jobs start from (pinned when filed: the
    # model's current version, or the spec's), and the version its accepted job created (None: not landed).
    base_version: int | None = None
    landed_version: int | None = None


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
    requested_by: str = ""  # revision 0005: who queued it (the executor four-eyes acceptance excludes)
    # Revision 0006: a batched job (`expunge batch`): {"leader": job id, "jobs": [...], "requests": [...]}. The
    # leader's worker runs one unlearning run over the union and verifies each member on its own request's data.
    batch: dict | None = Field(default=None, sa_column=json_column("batch_json", nullable=True))
    # Revision 0007: `escalate --tune`'s budget ({"trials", "minutes", "seed"}); None for an untuned job.
    tune: dict | None = Field(default=None, sa_column=json_column("tune_json", nullable=True))
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


class ApiToken(SQLModel, table=True):
    """A named bearer token for the engine's TCP listener (revision 0005). Only its SHA-256 is kept: the
    token is 256 random bits, shown once when made, so a hash lookup is as strong as a slow hash here."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    roles: list = Field(default_factory=list, sa_column=json_column("roles_json"))
    sha256: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""
    revoked_at: datetime | None = None


class ModelVersion(SQLModel, table=True):
    """A model's line (revision 0006): v0 is the base as registered; accepting a job makes the next version,
    the parent plus that job's change, materialised once as an HF directory. Rows are never deleted: a
    withdrawn version (rollback) keeps its row with the reason."""

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(index=True)
    number: int
    parent: int | None = None  # the version number it was built on (None for v0)
    job_id: int | None = None  # the accepted job whose change it adds (None for v0)
    request_ids: list = Field(default_factory=list, sa_column=json_column("request_ids_json"))  # carried
    path: str = ""  # the HF directory (v0: the registered source)
    sha256: str = ""  # of its weight files (v0: the registered hash)
    status: str = "active"  # active | withdrawn
    verdict: str | None = None  # pass | fail of its regression check at accept (None for v0)
    manifest: dict = Field(default_factory=dict, sa_column=json_column("manifest_json"))
    # Control metrics of this version, and v0's measured beside them, on the same control set
    control: dict = Field(default_factory=dict, sa_column=json_column("control_json"))
    # The regression check at its accept: per carried request, the leak rate on its forget prompts
    regression: dict = Field(default_factory=dict, sa_column=json_column("regression_json"))
    timings: dict = Field(default_factory=dict, sa_column=json_column("timings_json"))
    withdrawn_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class RegressionData(SQLModel, table=True):
    """What a landed request keeps after its close, for the regression checks of later versions (revision
    0006): its forget prompts and key spans, Fernet-encrypted with a key kept outside the database (the
    config folder's lineage.key). Deleted when the model line is retired or with `purge --with-regression-data`."""

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(index=True, unique=True)
    model_name: str = Field(index=True)
    token: str  # Fernet token of {"prompts": [...], "spans": [...], "leak_rate": landed}
    prompts: int = 0
    spans: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class TuningTrial(SQLModel, table=True):
    """One trial of a tuning job (revision 0007): the hyperparameters it tried, the proxy's metrics on the
    validation split, and how it ended (running | complete | pruned | failed | cancelled)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    number: int  # Optuna's trial number, from 0
    state: str = "running"
    params: dict = Field(default_factory=dict, sa_column=json_column("params_json"))  # the values tried
    metrics: dict = Field(default_factory=dict, sa_column=json_column("metrics_json"))  # the proxy's, after
    stages: dict = Field(default_factory=dict, sa_column=json_column("stages_json"))  # proxy verdict per stage
    passed: bool = False  # passes every stage's proxy
    score: float | None = None  # control lost on the validation slice (lower is better)
    objective: float | None = None  # what the sampler minimised
    steps: int | None = None  # optimizer steps the trial took (its early stop)
    seconds: float = 0.0
    reason: str | None = None  # why it stopped, was pruned or failed
    winner: bool = False  # the trial whose hyperparameters the job ran and verified in full
    created_at: datetime = Field(default_factory=utcnow)
