"""The engine's logs, as an operator reads them: one line per job event, each about a job carrying `job <id> `
(so `expunge engine logs --job N` can pick them out), and no third-party INFO chatter unless asked for with
EXPUNGE_VERBOSE=1 (`expunge engine start --verbose`). Torch-free: the API process and the workers use it
(a worker silences transformers itself, engine.compute.worker)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines say nothing about a job: alembic's plugin and context set-up at every start,
# each HTTP request of a client, uvicorn's access lines.
NOISY = ("alembic", "httpx", "httpcore", "uvicorn", "uvicorn.access", "uvicorn.error")


def verbose() -> bool:
    """Whether third-party INFO logs and progress bars are wanted (EXPUNGE_VERBOSE set, and not 0)."""
    return os.environ.get("EXPUNGE_VERBOSE", "") not in ("", "0")


def configure_engine() -> None:
    """The engine daemon's logging: INFO for expunge's own loggers; libraries at WARNING unless verbose."""
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    if not verbose():
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)


def quiet_worker_env(env: dict) -> dict:
    """A worker's environment: without verbose, no Hugging Face Hub progress bars in its log."""
    if not verbose():
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env
