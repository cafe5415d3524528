"""Shared fixtures: a private EXPUNGE_HOME per test, a real engine daemon on it, the shared tiny model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Two pytest-xdist workers share two cores: one thread each keeps them from fighting.
os.environ.setdefault("EXPUNGE_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def home(monkeypatch):
    """A fresh EXPUNGE_HOME (short path: unix socket paths are limited to 108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="ex-", dir="/tmp"))
    monkeypatch.setenv("EXPUNGE_HOME", str(root))
    from store.paths import get_paths

    yield get_paths().ensure()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def engine(home):
    """A real engine daemon (detached process, unix socket) and a client on it."""
    from console.client import EngineClient
    from engine.control.daemon import start, stop

    start(home)
    client = EngineClient(home)
    yield client
    client.close()
    stop(home)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny():
    """The shared tiny target (built once per test session, cached on disk) and the rows it learnt."""
    from tests.fixtures_model import tiny_model_dir, tiny_split

    return {"dir": tiny_model_dir(), **tiny_split()}


@pytest.fixture
def demo_request(tiny, home):
    """Files for a demo-style request on the tiny model: forget one person, retain a sample of the others."""
    train = tiny["train"]
    person = train[0]["person"]
    forget = [r for r in train if r["person"] == person]
    others = [r for r in train if r["person"] != person]
    retain = others  # everyone else: the set the methods' defaults are tuned against
    folder = home.data / "req"
    folder.mkdir()
    write_jsonl(folder / "forget.jsonl", forget)
    write_jsonl(folder / "retain.jsonl", retain)
    write_jsonl(folder / "holdout.jsonl", tiny["holdout"][:20])
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "account", "address")})
    spec = {"title": f"Erasure request for {person}", "reference": "DSR-TEST-1", "intention": "remove",
            "model": "tiny", "forget": "forget.jsonl", "retain": "retain.jsonl", "holdout": "holdout.jsonl",
            "sensitive": sensitive, "policy": "default"}
    (folder / "spec.json").write_text(json.dumps(spec))
    return {"folder": folder, "spec_path": folder / "spec.json", "spec": spec, "forget": forget, "retain": retain,
            "person": person}
