"""Where expunge keeps its files: platformdirs by default, everything under $EXPUNGE_HOME when set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP = "expunge"


@dataclass(frozen=True)
class Paths:
    config: Path
    data: Path
    state: Path

    @property
    def db(self) -> Path:
        return self.data / "expunge.db"

    @property
    def socket(self) -> Path:
        return self.state / "engine.sock"

    @property
    def pidfile(self) -> Path:
        return self.state / "engine.pid"

    @property
    def log(self) -> Path:
        return self.state / "engine.log"

    @property
    def artifacts(self) -> Path:
        # EXPUNGE_ARTIFACTS_DIR puts the artifacts on their own filesystem (a bigger disk; tests: a tiny one).
        override = os.environ.get("EXPUNGE_ARTIFACTS_DIR")
        return Path(override).expanduser().resolve() if override else self.data / "artifacts"

    def job_artifacts(self, job_id: int) -> Path:
        """A job's artifact folder (the adapter, delta or guard, with its manifest)."""
        return self.artifacts / f"job-{job_id}"

    def job_work_dir(self, job_id: int) -> Path:
        """A job's private scratch folder (checkpoints), removed when the job succeeds or its request closes."""
        return self.data / "jobs" / f"job-{job_id}"

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def converted(self) -> Path:
        """GGUF sources converted to HF directories, one folder per GGUF sha256. EXPUNGE_CONVERTED_DIR
        shares one cache between installations (the tests use it: the conversion takes a minute)."""
        override = os.environ.get("EXPUNGE_CONVERTED_DIR")
        return Path(override).expanduser().resolve() if override else self.models / "converted"

    @property
    def policies(self) -> Path:
        return self.config / "policies"

    def ensure(self) -> Paths:
        # Request texts are personal data: every folder is private to its user.
        for folder in (self.config, self.data, self.state, self.artifacts, self.models):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        return self


def get_paths() -> Paths:
    home = os.environ.get("EXPUNGE_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Paths(config=root / "config", data=root / "data", state=root / "state")
    import platformdirs

    return Paths(
        config=Path(platformdirs.user_config_dir(APP)),
        data=Path(platformdirs.user_data_dir(APP)),
        state=Path(platformdirs.user_state_dir(APP)),
    )
