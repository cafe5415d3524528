"""Names shared by the engine, the store and the console: the verification stages in the order they run and
are shown, and the statuses a job goes through."""

from __future__ import annotations

# The three-stage verification, in order: are the outputs gone, is the rest intact, can it be brought back.
STAGES = ("unit", "control", "reconstruction")

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
# The scheduler still owns the job: it waits for a slot or runs in one.
ACTIVE = frozenset({"queued", "running"})
# Nothing more happens to the job unless the operator acts (an interrupted or failed one can be resumed).
TERMINAL = frozenset(JOB_STATUSES) - ACTIVE
RESUMABLE = frozenset({"interrupted", "failed"})
