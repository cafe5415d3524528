"""The console never imports torch (nor transformers, nor the engine's internals): after importing the app,
mounting it on a real engine and visiting every screen, none of them is in sys.modules. Also: screens import
nothing of the engine but its contracts (engine.schema), and reach the engine only through the client."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.console_store import prefill

REPO = Path(__file__).resolve().parent.parent

VISIT = r"""
import asyncio, json, sys
from console.app import ExpungeApp

async def main():
    app = ExpungeApp()
    async with app.run_test(size=(100, 30)) as pilot:
        async def ready():
            for _ in range(600):
                await pilot.pause(0.05)
                if app.connected and getattr(app.screen, "loaded", True):
                    return
            raise SystemExit("the console never became ready")
        await ready()
        app.open_request(1); await ready()
        await pilot.press("e"); await pilot.pause(1.0); await pilot.press("escape")
        app.open_job(1); await ready()
        for _ in range(5):
            await pilot.press("t"); await pilot.pause(0.2)
        app.open_compare(1, 2); await ready()
        await pilot.press("h"); await ready()
        await pilot.press("n"); await ready()
        await pilot.press("escape", "question_mark"); await pilot.pause(0.5)
        await pilot.press("ctrl+p"); await pilot.pause(0.5); await pilot.press("escape")
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "accelerate"))
    engine = sorted(m for m in sys.modules if m.split(".")[0] == "engine")
    print(json.dumps({"heavy": heavy, "engine": engine}))

asyncio.run(main())
"""


@pytest.fixture
def filled_home(home):
    prefill(home)
    yield home
    from engine.control.daemon import stop

    stop(home)


@pytest.mark.xdist_group("console")
def test_console_never_imports_torch_or_engine_internals(filled_home):
    env = {**os.environ, "EXPUNGE_HOME": str(filled_home.config.parent), "EXPUNGE_SLOTS": "cpu"}
    out = subprocess.run([sys.executable, "-c", VISIT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["heavy"] == []
    # engine.control.daemon starts the engine (httpx and subprocess only); the form checks with engine.schema;
    # nothing else of the engine is imported.
    assert {m for m in loaded["engine"] if not m.startswith("engine.schema")} <= {"engine", "engine.control",
                                                                                   "engine.control.daemon"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_screens_reach_the_engine_only_through_the_client():
    for path in sorted((REPO / "screens").glob("*.py")) + sorted((REPO / "console" / "widgets").glob("*.py")):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("engine", "store", "torch", "transformers")
               and m.split(".")[:2] != ["engine", "schema"]}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    app_imports = _imports(REPO / "console" / "app.py")
    assert {m for m in app_imports if m.split(".")[0] == "engine"} <= {"engine.control.daemon"}
