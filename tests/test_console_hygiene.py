"""The console never imports torch (nor transformers, nor the engine's internals: only engine.schema): after
importing the app, mounting it on a real engine and visiting every screen, none of them is in sys.modules; the
CLI imports the engine only inside its commands. Also: screens reach the engine only through the client."""

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
    # engine.control.daemon starts the engine (httpx and subprocess only; its package's __init__ is empty);
    # nothing else of the engine but its schema is imported.
    assert _engine_beyond_schema(loaded["engine"]) <= {"engine.control", "engine.control.daemon"}


def _engine_beyond_schema(modules) -> set[str]:
    """The engine modules among `modules` other than the engine package itself and engine.schema."""
    return {m for m in modules if m.split(".")[0] == "engine" and m != "engine"
            and m != "engine.schema" and not m.startswith("engine.schema.")}


def test_cli_imports_the_engine_only_when_a_command_runs():
    # lint-imports allows the CLI the engine (headless commands, `engine start`); this checks it imports it
    # inside the commands, so `expunge` starts without the engine's internals or torch.
    out = subprocess.run([sys.executable, "-c", "import sys, console.cli; print(*sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    loaded = out.stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "peft", "accelerate")]
    assert _engine_beyond_schema(loaded) == set()


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
        imports = _imports(path)
        heavy_or_store = {m for m in imports if m.split(".")[0] in ("store", "torch", "transformers")}
        bad = _engine_beyond_schema(imports) | heavy_or_store
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    assert _engine_beyond_schema(_imports(REPO / "console" / "app.py")) <= {"engine.control.daemon"}
