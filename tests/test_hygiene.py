"""Dependency direction: the engine never imports textual; the store imports neither engine nor console;
the engine's torch-free side (schema, control with the report, leaks) loads without torch; and the import contracts
in pyproject.toml ([tool.importlinter]: layers, forbidden imports, no circles) hold."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "accelerate")


def _modules(package: str) -> list[str]:
    """`package` (dotted) and every module below it, found on disk."""
    names = [package]
    for info in pkgutil.walk_packages([str(REPO.joinpath(*package.split(".")))], prefix=f"{package}."):
        names.append(info.name)
    return names


def _imports_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    return set(out)


def _import_all(packages: list[str]) -> str:
    mods = [m for p in packages for m in _modules(p) if not m.endswith("__main__")]
    return "import importlib\n" + "\n".join(f"importlib.import_module({m!r})" for m in mods)


def test_engine_never_imports_textual():
    loaded = _imports_after(_import_all(["engine"]))
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


def test_store_imports_neither_engine_nor_console():
    loaded = _imports_after(_import_all(["store"]))
    assert not {m for m in loaded if m.split(".")[0] in ("engine", "console", "screens")}


def test_torch_free_side_and_method_registry_do_not_load_torch():
    # At run time, dynamic imports included (the method registry); lint-imports checks the import statements.
    loaded = _imports_after(_import_all(["engine.schema", "engine.control", "engine.leaks"])
                            + "\nfrom engine.compute.methods.base import list_methods, validate_hyper\n"
                            "list_methods(); validate_hyper('graddiff', {'steps': 5})")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache", "--no-logo"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def _layer_modules(contract_id: str) -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c.get("id") == contract_id]
    return {name.strip().strip("()") for layer in contract["layers"] for name in re.split(r"[|:]", layer)}


def test_every_console_module_has_a_layer():
    # The layers contract lists the console module by module (the app sits above the screens, the rest below),
    # so a new console module would escape it: it must be placed there.
    placed = _layer_modules("layers")
    missing = [f"console.{info.name}" for info in pkgutil.iter_modules([str(REPO / "console")])
               if f"console.{info.name}" not in placed]
    assert not missing, f"add {missing} to the layers contract in pyproject.toml"
