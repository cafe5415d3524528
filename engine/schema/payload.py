"""The scheduler ↔ worker contract: the job the engine hands a worker (one JSON line on its stdin) and the
result the worker sends back (one JSON line on its protocol pipe). Torch-free: both processes import it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Contract(BaseModel):
    # A field one side sends and the other does not know is a bug in one of them: refused, never dropped.
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Contract):
    """The registered base model a job starts from."""

    name: str
    source: str
    kind: str
    weights_sha256: str
    # The registered options with the request's overrides (chat_template, verification profile).
    options: dict = Field(default_factory=dict)
    converted: str | None = None  # a GGUF source's converted HF directory
    version: int = 0  # the model version it is (issue 14): 0 the base as registered, N its vN folder


class JobPayload(_Contract):
    job_id: int
    method: str
    hyper: dict  # validated once, when the job was submitted: complete, defaults filled in
    intention: str
    policy: dict  # the policy as loaded when the job started: the verdict is judged against this copy
    model: ModelSpec
    rows: dict[str, list | None]  # forget, retain, holdout, probes
    sensitive: list[str] = Field(default_factory=list)
    general_text: list[str] = Field(default_factory=list)
    baseline_key: str
    baseline: dict | None = None  # the cached 'before' measurement, when there is one
    work_dir: str  # checkpoints and scratch, removed when the job succeeds
    resume: bool = False  # a checkpoint is there to continue from
    artifact_dir: str
    # The other members of a batch (`expunge batch`): {job_id, request_id, intention, policy, rows, sensitive,
    # baseline_key, baseline}. The method runs once over every member's rows; each member is verified on its own.
    batch: list[dict] = Field(default_factory=list)
    # `escalate --tune`: {"trials": N, "minutes": M, "seed": S}; None for an untuned job.
    tune: dict | None = None
    # Where the job runs ({"executor", "node", "slot"}): the worker writes it into the artifact's manifest.
    placement: dict = Field(default_factory=dict)
    # The erasures the starting version already carries (issue 14): per request {request_id, prompts: [{question,
    # verbatim}], spans}, from their sealed regression data. The method keeps what the version answers them.
    line: list[dict] = Field(default_factory=list)


class MetricOutcome(_Contract):
    name: str
    before: float | None = None
    after: float | None = None
    threshold: float | None = None
    rule: str = ""
    passed: bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    note: str | None = None


class StageOutcome(_Contract):
    stage: str
    verdict: str
    required: bool
    metrics: list[MetricOutcome]
    note: str | None = None


class EvidenceRow(_Contract):
    stage: str
    attack: str = "direct"
    prompt: str
    output_before: str = ""
    output_after: str = ""
    leaked_before: bool = False
    leaked_after: bool = False
    # Where each output leaks, [[start, end], ...] character offsets; None where not recorded.
    spans_before: list[list[int]] | None = None
    spans_after: list[list[int]] | None = None


class ArtifactOut(_Contract):
    kind: str
    path: str
    sha256: str
    manifest: dict = Field(default_factory=dict)


class JobResult(_Contract):
    stages: list[StageOutcome]
    verdict: str
    policy: dict  # the policy the worker judged against (the payload's)
    evidence: list[EvidenceRow] = Field(default_factory=list)
    device: str | None = None
    artifact: ArtifactOut
    result: dict = Field(default_factory=dict)  # timings, locate chart, method notes
    # A batch leader's result carries each other member's: {"job_id": N, **a JobResult of that member}.
    members: list[dict] = Field(default_factory=list)
