"""A worker process: one per slot. It reads jobs (engine.schema.payload.JobPayload) as JSON lines on stdin and
writes events (progress, the 'before' measurement, a JobResult or an error) as JSON lines on its own copy of
stdout; anything a library prints goes to stderr (the slot's log). A crash here
ends this process and fails one job; the engine lives on."""

from __future__ import annotations

import json
import os
import sys
import traceback


def describe_error(exc: BaseException) -> str:
    import torch

    text = str(exc).lower()
    if isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in text or "can't allocate memory" in text:
        return (f"out of memory: {exc}. Try a smaller batch_size (or more grad_accum), LoRA instead of full "
                "weights (lora=true), or gradient checkpointing.")
    return f"{type(exc).__name__}: {exc}"


def die_with_parent() -> None:
    """Linux: the kernel kills this worker when the engine dies, so a killed engine leaves no orphan
    holding a GPU (the engine marks the job interrupted when it restarts)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the engine died before prctl took effect
        sys.exit(1)


def limit_memory() -> None:
    """EXPUNGE_WORKER_MEMORY_MB caps this worker's address space, so a runaway job fails with an
    out-of-memory error instead of taking the server's memory (and the kernel's OOM killer) with it."""
    limit = os.environ.get("EXPUNGE_WORKER_MEMORY_MB")
    if limit:
        import resource

        size = int(limit) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


def main() -> None:
    die_with_parent()
    limit_memory()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(message: dict) -> None:
        protocol.write(json.dumps(message, default=str) + "\n")
        protocol.flush()

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
    from engine.compute.jobrunner import WarmModel, run_job
    from engine.logs import verbose
    from engine.schema.payload import JobPayload

    if not verbose():  # no weight-loading progress bars or INFO lines in the worker's log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_warning()
    warm = WarmModel()
    emit({"type": "ready", "pid": os.getpid(), "cuda": torch.cuda.is_available()})
    for line in sys.stdin:
        if not line.strip():
            continue
        payload = JobPayload.model_validate_json(line)
        try:
            result = run_job(payload, warm, emit)
            emit({"type": "result", "job_id": payload.job_id, **result.model_dump(mode="json")})
        except Exception as exc:  # one job fails; the worker takes the next
            print(f"job {payload.job_id} failed:", file=sys.stderr)  # names the job the traceback is about
            traceback.print_exc()
            emit({"type": "error", "job_id": payload.job_id, "message": describe_error(exc)})


if __name__ == "__main__":
    main()
