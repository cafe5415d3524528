"""Dependency direction: the engine never imports textual; the store imports neither engine nor console;
the API server validates requests without loading torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _modules(package: str) -> list[str]:
    folder = REPO / package
    names = [package]
    for info in pkgutil.walk_packages([str(folder)], prefix=f"{package}."):
        names.append(info.name)
    return names


def _imports_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    return set(out)


def test_engine_never_imports_textual():
    mods = [m for m in _modules("engine") if not m.endswith("__main__")]
    loaded = _imports_after("import importlib\n" + "\n".join(f"importlib.import_module({m!r})" for m in mods))
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


def test_store_imports_neither_engine_nor_console():
    mods = _modules("store")
    loaded = _imports_after("import importlib\n" + "\n".join(f"importlib.import_module({m!r})" for m in mods))
    assert not {m for m in loaded if m.split(".")[0] in ("engine", "console", "screens")}


def test_api_server_and_method_registry_do_not_load_torch():
    loaded = _imports_after("import engine.control.server, engine.control.api, engine.control.scheduler\n"
                            "from engine.compute.methods.base import list_methods, validate_hyper\n"
                            "list_methods(); validate_hyper('graddiff', {'steps': 5})")
    assert "torch" not in loaded and "transformers" not in loaded
