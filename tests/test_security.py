"""Access: the socket serves its owner only; paths stay in their folders; models load without running code."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from console.client import EngineError

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


def connect_as(uid: int, path: Path) -> str:
    """Fork, drop to `uid`, connect to the unix socket: 'ok', 'refused' (EACCES/EPERM) or another error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: syscalls only, then _exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                out = b"ok"
            except PermissionError:
                out = b"refused"
            except OSError as exc:
                out = f"error {exc.errno}".encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as fh:
            return fh.read().decode()
    finally:
        os.waitpid(pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_socket_refuses_another_user(engine, home):
    assert connect_as(0, home.socket) == "ok"
    # As installed: the state dir (0700) already keeps others out.
    assert connect_as(NOBODY, home.socket) == "refused"
    # With every folder on the way opened for traversal, the socket's own mode (0600) still refuses ...
    root = home.state.parent
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (root, home.state)}
    try:
        for p in modes:
            os.chmod(p, 0o711)
        assert stat.S_IMODE(home.socket.stat().st_mode) == 0o600
        assert connect_as(NOBODY, home.socket) == "refused"
        # ... and it is that mode doing it: opened up, the other user gets in (the check is not vacuous).
        os.chmod(home.socket, 0o666)
        assert connect_as(NOBODY, home.socket) == "ok"
    finally:
        os.chmod(home.socket, 0o600)
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert engine.health()["status"] == "ok"


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(("change", "message"), [
    ({"forget": "../../../etc/passwd"}, "give the rows inline"),
    ({"retain": "/etc/passwd"}, "give the rows inline"),
    ({"policy": "../../etc/passwd"}, "policy"),
    ({"policy": "..%2F..%2Fx"}, "policy"),
])
def test_the_engine_opens_no_path_a_client_names_in_a_spec(engine, home, tiny, demo_request, change, message):
    from engine.schema.spec import load_spec_file

    engine.add_model("tiny", str(tiny["dir"]))
    with pytest.raises(EngineError, match=message) as err:
        engine.submit({**load_spec_file(demo_request["spec_path"]), **change}, method="graddiff")
    assert err.value.status == 422


@pytest.mark.parametrize("name", ["../evil", "a/b", "..\\x", "x\x00y", ""])
def test_model_names_cannot_be_paths(engine, tiny, name):
    with pytest.raises(EngineError) as err:
        engine.add_model(name, str(tiny["dir"]))
    assert err.value.status == 422 and "name" in str(err.value)


def test_purge_never_leaves_the_artifacts_folder(home, tmp_path):
    """A tampered Artifact.path or a symlink inside an artifact folder cannot make the purge touch
    files elsewhere."""
    import re

    from engine.control.privacy import _purge_folder

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("secret 415-555-0142")
    pattern = re.compile(re.escape(b"415-555-0142"))
    assert _purge_folder(outside, pattern, 12, home) == []
    art = home.artifacts / "job-1"
    art.mkdir(parents=True)
    (art / "link.txt").symlink_to(outside / "keep.txt")
    (art / "dir-link").symlink_to(outside, target_is_directory=True)
    (art / "guard.json").write_text(json.dumps({"strings": ["415-555-0142"]}))
    assert _purge_folder(art, pattern, 12, home) == ["job-1/guard.json"]
    assert (outside / "keep.txt").read_text() == "secret 415-555-0142"
    assert not (art / "guard.json").exists() and (art / "PURGED.json").exists()
    assert _purge_folder(home.artifacts / "job-1" / ".." / ".." / "..", pattern, 12, home) == []


def test_job_folders_are_named_by_integer_ids_only():
    """Artifact and work dirs are artifacts/job-<int> and jobs/job-<int>: nothing a client sends
    becomes part of a path the engine writes."""
    from store.models import Job
    from store.paths import Paths

    src = (REPO / "store" / "paths.py").read_text()  # the one place the job folders are named
    assert 'return self.artifacts / f"job-{job_id}"' in src
    assert 'return self.data / "jobs" / f"job-{job_id}"' in src
    paths = Paths(config=Path("/c"), data=Path("/d"), state=Path("/s"))
    assert paths.job_work_dir(7) == Path("/d/jobs/job-7")
    assert Paths.job_work_dir.__annotations__["job_id"] == Paths.job_artifacts.__annotations__["job_id"] == "int"

    assert Job.model_fields["id"].annotation == int | None


# ------------------------------------------------------------------ model loading


def _engine_calls():
    for path in sorted((REPO / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path, node


def test_every_torch_load_is_weights_only_and_no_code_trusts_remote_code():
    loads = 0
    for path, call in _engine_calls():
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch":
            loads += 1
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"
        for k in call.keywords:
            if k.arg == "trust_remote_code":
                assert not (isinstance(k.value, ast.Constant) and k.value.value is True), \
                    f"{path.relative_to(REPO)}:{call.lineno}: trust_remote_code=True hard-coded"
    assert loads >= 1


def test_a_pickled_weights_file_cannot_run_code(tiny, tmp_path):
    """A model folder whose pytorch_model.bin carries a pickle payload: loading refuses it (torch.load
    with weights_only=True), and the payload never runs."""
    import torch
    from safetensors.torch import load_file

    from engine.compute.modeling import load_model

    folder = tmp_path / "evil-bin"
    shutil.copytree(tiny["dir"], folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state["payload"] = Payload()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights only|weights_only"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()


def test_remote_code_runs_only_when_the_operator_trusts_that_model(tiny, tmp_path, monkeypatch):
    """A model folder that ships its own Python (config auto_map): loaded as-is, the code is never
    imported; only the per-model option trust_remote_code=true lets it run."""
    from engine.compute.modeling import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = tmp_path / "evil-code"
    shutil.copytree(tiny["dir"], folder)
    marker = tmp_path / "RAN"
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    load_model(str(folder), device="cpu")
    assert not marker.exists(), "a model's own code ran without the operator trusting it"
    load_model(str(folder), options={"trust_remote_code": True}, device="cpu")
    assert marker.exists()


def test_trust_remote_code_is_off_unless_set_per_model(engine, tiny):
    plain = engine.add_model("plain", str(tiny["dir"]))
    trusted = engine.add_model("trusted", str(tiny["dir"]), options={"trust_remote_code": True})
    assert "trust_remote_code" not in plain["options"]
    assert trusted["options"]["trust_remote_code"] is True


def test_a_purge_stays_in_its_own_databases_folders(home, tiny, tmp_path):
    """Closing a request in a database other than the configured one (a copy, a test) purges only under
    that database's folder: job-1's files of this installation are not its to delete."""
    from engine.control import service
    from store.db import migrate, session

    answer = "Alma Rivera's phone number is 415-555-0142."
    mine = home.data / "jobs" / "job-1"
    mine.mkdir(parents=True)
    (mine / "state.pt").write_text(answer)
    (home.artifacts / "job-1").mkdir(parents=True)
    (home.artifacts / "job-1" / "guard.json").write_text(answer)
    other = tmp_path / "other" / "expunge.db"
    db = migrate(other)
    spec = {"title": "t", "model": "tiny", "forget": [{"question": "Phone?", "answer": answer}],
            "retain": [{"question": "r?", "answer": "b"}], "sensitive": ["415-555-0142"]}
    with session(db) as s:
        service.register_model(s, "tiny", str(tiny["dir"]))
        req, job = service.create_request(s, spec, method="graddiff", hyper={"steps": 2})
        service.cancel_job(s, job.id)
        assert job.id == 1
        report: dict = {}
        service.close_request(s, req.id, report=report, full_check=True)
    db.dispose()
    assert report["check"]["clean"] and report["check"]["roots"] == [str(other.parent.resolve())]
    assert (mine / "state.pt").exists() and (home.artifacts / "job-1" / "guard.json").exists()
