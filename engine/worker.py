"""A worker process: one per slot. It reads jobs as JSON lines on stdin and writes events as JSON lines
on its own copy of stdout; anything a library prints goes to stderr (the slot's log). A crash here
ends this process and fails one job; the engine lives on."""

from __future__ import annotations

import json
import os
import sys
import traceback


def describe_error(exc: BaseException) -> str:
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return (f"out of memory: {exc}. Try a smaller batch_size (or more grad_accum), LoRA instead of full "
                "weights (lora=true), or gradient checkpointing.")
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(message: dict) -> None:
        protocol.write(json.dumps(message, default=str) + "\n")
        protocol.flush()

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
    from engine.jobrunner import WarmModel, run_job

    warm = WarmModel()
    emit({"type": "ready", "pid": os.getpid(), "cuda": torch.cuda.is_available()})
    for line in sys.stdin:
        if not line.strip():
            continue
        payload = json.loads(line)
        try:
            result = run_job(payload, warm, emit)
            emit({"type": "result", "job_id": payload["job_id"], **result})
        except Exception as exc:  # one job fails; the worker takes the next
            traceback.print_exc()
            emit({"type": "error", "job_id": payload["job_id"], "message": describe_error(exc)})


if __name__ == "__main__":
    main()
