"""The API's read models: what `GET /models`, `/requests`, `/jobs`, their details and the audit check return,
and what the event stream's job events carry. The engine builds them from its rows (engine.control.service);
the console and the CLI read the same shapes. Timestamps are ISO 8601 strings (UTC, with their offset)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


Stamp = Annotated[str, BeforeValidator(_iso)]


class View(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ModelView(View):
    name: str
    source: str
    kind: str
    weights_sha256: str
    params: int
    options: dict
    retain_path: str | None
    holdout_path: str | None
    created_at: Stamp


class ModelAdded(ModelView):
    checked: dict  # what the source check found: chat template, model type, converted folder


class RequestView(View):
    id: int
    title: str
    reference: str
    intention: str
    model: str
    policy: str
    status: str
    current_tier: int
    accepted_job_id: int | None
    verdict: str | None
    warnings: list[str]
    created_at: Stamp
    closed_at: Stamp | None
    # Issue 15: who filed it, the legal clock, who accepted the result (defaults: older clients' shapes).
    requested_by: str = ""
    received_at: Stamp | None = None
    legal_basis: str = ""
    due_at: Stamp | None = None
    days_left: int | None = None  # open requests: whole days to the due day (negative: overdue)
    overdue: bool = False
    extension_days: int = 0
    extension_reason: str | None = None
    on_time: bool | None = None  # closed requests: closed by the due date
    accepted_by: str | None = None
    accepted_at: Stamp | None = None
    accept_comment: str | None = None
    base_version: int | None = None  # the model version its jobs start from (None: the base, filed before versions)
    landed_version: int | None = None  # the version its accepted job created (None: not landed)


class ClosedRequest(RequestView):
    purge: dict  # what the close removed, and the scan for the texts afterwards


class JobView(View):
    id: int
    request_id: int
    tier: int
    method: str
    hyper: dict
    seed: int
    priority: int
    status: str
    verdict: str | None
    phase: str
    step: int
    total: int
    loss: float | None
    eta_s: float | None
    device: str
    slot: int | None
    error: str | None
    created_at: Stamp
    started_at: Stamp | None
    finished_at: Stamp | None
    requested_by: str = ""  # who queued it (issue 15)
    request_title: str | None = None
    model: str | None = None
    tune: dict | None = None  # `escalate --tune`'s budget; None for an untuned job
    executor: str | None = None  # local | ray (revision 0008)
    node: str | None = None  # where it ran


class MetricView(View):
    name: str
    before: float | None
    after: float | None
    delta: float | None  # after - before, when both are known
    threshold: float | None
    rule: str
    passed: bool | None
    ci_low: float | None = None  # the 95% interval of `after` (None: not recorded)
    ci_high: float | None = None
    n: int | None = None  # the sample the figure rests on
    note: str | None = None  # why not judged (not measured, no signal, waived), or which side of a band failed


class StageView(View):
    stage: str
    verdict: str
    required: bool
    policy: str  # the policy's name
    policy_content: dict  # the policy as judged against
    note: str | None = None  # why the stage is incomplete
    metrics: list[MetricView]


class JobWithStages(JobView):
    stages: list[StageView]
    # What the job kept, split out of sample (engine.compute.verify.split): {"retain": {"trained", "judged"},
    # "neighbours": {"built", "from_retain", "templated", "trained", "judged"}} row counts, and for a job on a model
    # version "line": {"requests", "prompts", "kept", "dropped", "dropped_leaking"} (engine.compute.verify.line);
    # None before it ran.
    kept: dict | None = None


class DataView(View):
    kind: str
    count: int
    sha256: str
    purged: bool


class AuditView(View):
    id: int
    ts: str
    actor: str
    action: str
    subject: str
    detail: dict
    hash: str


class RequestDetail(View):
    request: RequestView
    jobs: list[JobWithStages]
    data: list[DataView]
    audit: list[AuditView]


class EvidenceView(View):
    stage: str
    attack: str
    prompt: str
    output_before: str
    output_after: str
    leaked_before: bool
    leaked_after: bool
    # The leaking parts of each output, [start, end] character offsets; None where unknown (older rows).
    spans_before: list[list[int]] | None
    spans_after: list[list[int]] | None


class ArtifactView(View):
    kind: str
    path: str
    sha256: str
    manifest: dict


class TrialView(View):
    """One tuning trial of a job: what it tried, the proxy's metrics on the validation split, how it ended."""

    number: int
    state: str  # running | complete | pruned | failed | cancelled
    params: dict
    metrics: dict
    stages: dict
    passed: bool
    score: float | None
    objective: float | None
    steps: int | None
    seconds: float
    reason: str | None
    winner: bool


class JobDetail(View):
    job: JobView
    stages: list[StageView]
    progress: dict
    result: dict
    evidence: list[EvidenceView]
    artifacts: list[ArtifactView]
    trials: list[TrialView] = []  # a tuning job's trials, by number


class RequestPage(View):
    total: int
    items: list[RequestView]


class JobPage(View):
    total: int
    items: list[JobView]


class RequestCreated(View):
    request: RequestView
    job: JobView | None


class AuditCheck(View):
    ok: bool
    rows: int
    head: str
    bad_id: int | None
    reason: str


class VersionView(View):
    """One version of a model's line (engine.control.service.versions)."""

    model: str
    number: int
    parent: int | None
    job_id: int | None
    request_ids: list[int]
    path: str
    sha256: str
    status: str  # active | withdrawn
    verdict: str | None  # its regression check at accept (None for v0)
    manifest: dict
    control: dict  # {"metrics": {...}, "v0": {...}}: this version's control figures and v0's beside them
    regression: dict  # {"requests": {id: {...}}, "cumulative": {...}, "failures": [...]}
    timings: dict
    withdrawn_reason: str | None
    created_at: Stamp
    current: bool = False  # the version new requests start from


class ModelLine(View):
    model: str
    current: int
    versions: list[VersionView]
