"""The cached 'before' key (issue 12, item 8): it changes with every input a measurement depends on, and the
measuring code is found from the stages' imports, not a hand-kept list."""

from __future__ import annotations

import pytest

from engine.control import baseline as bk
from engine.control.baseline import baseline_key

ROWS = {"forget": [{"question": "q", "answer": "a"}]}


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def tree(tmp_path):
    """A small engine package: verify imports generation (absolute) and a sibling (relative); generation imports
    prompting inside a function; nothing imports the method."""
    root = tmp_path / "engine"
    _write(root, {
        "__init__.py": "",
        "compute/__init__.py": "",
        "compute/verify/__init__.py": "",
        "compute/verify/unit.py": "from engine.compute.generation import greedy\nfrom .helpers import h\n",
        "compute/verify/helpers.py": "h = 1\n",
        "compute/generation.py": "def greedy():\n    from engine.compute import prompting\n",
        "compute/prompting.py": "x = 1\n",
        "compute/modeling.py": "import engine.leaks\n",
        "leaks.py": "y = 1\n",
        "compute/methods/ga.py": "from engine.compute.verify.unit import greedy\n",
    })
    return root


def _version(root) -> str:
    bk.code_version.cache_clear()
    return bk.code_version(root)


def test_measuring_modules_follow_the_imports(tree):
    found = {p.relative_to(tree).as_posix() for p in bk.measuring_modules(tree)}
    assert found == {"compute/__init__.py", "compute/verify/__init__.py", "compute/verify/unit.py",
                     "compute/verify/helpers.py", "compute/generation.py", "compute/prompting.py",
                     "compute/modeling.py", "leaks.py"}


def test_code_version_changes_with_each_measuring_module_and_not_with_a_method(tree):
    first = _version(tree)
    (tree / "compute/methods/ga.py").write_text("z = 2\n")  # a method is not measuring code
    assert _version(tree) == first
    seen = {first}
    for name in ("compute/verify/unit.py", "compute/verify/helpers.py", "compute/generation.py",
                 "compute/prompting.py", "compute/modeling.py", "leaks.py"):
        (tree / name).write_text((tree / name).read_text() + "# changed\n")
        version = _version(tree)
        assert version not in seen, name
        seen.add(version)
    bk.code_version.cache_clear()


def test_the_real_measuring_code_includes_what_changes_a_measurement():
    found = {p.relative_to(bk.ENGINE_ROOT).as_posix() for p in bk.measuring_modules()}
    assert {"compute/verify/unit.py", "compute/verify/reconstruction.py", "compute/generation.py",
            "compute/prompting.py", "compute/tokens.py", "compute/modeling.py", "leaks.py"} <= found
    assert not any(p.startswith("compute/methods/") for p in found)


def test_the_key_changes_with_each_input(tmp_path, monkeypatch):
    model = tmp_path / "model"
    _write(model, {"config.json": "{}", "tokenizer_config.json": '{"chat_template": "a"}', "tokenizer.json": "{}"})
    options = {"dtype": "auto", "chat_template": "auto"}

    def key(**change) -> str:
        setup = bk.measurement_setup(str(model), "hf", change.get("options", options), change.get("device", "cpu"))
        return baseline_key("w", ROWS, [], change.get("options", options), setup)

    first = key()
    assert key() == first and key(device="cpu") == first
    keys = {first}

    def changed(k: str, what: str) -> None:
        assert k not in keys, what
        keys.add(k)

    changed(key(device="cuda:0"), "device")
    changed(key(options={**options, "dtype": "bf16"}), "dtype")
    changed(key(options={**options, "chat_template": "none"}), "prompt format")
    for name in ("tokenizer_config.json", "config.json", "tokenizer.json"):
        (model / name).write_text((model / name).read_text() + " ")
        changed(key(), name)
    (model / "chat_template.jinja").write_text("{{ messages }}")
    changed(key(), "chat_template.jinja")
    for library in ("torch", "transformers", "peft"):
        real = bk.library_versions
        monkeypatch.setattr(bk, "library_versions", lambda lib=library, real=real: {**real(), lib: "0.0.0"})
        changed(key(), library)
        monkeypatch.setattr(bk, "library_versions", real)
    monkeypatch.setattr(bk, "code_version", lambda: "another")
    changed(key(), "measuring code")
