"""The CLI as the operator (or a CI pipeline) runs it: a subprocess, JSON out, exit codes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

EXPUNGE = str(Path(sys.executable).parent / "expunge")


def run(home, *args, check=True):
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    res = subprocess.run([EXPUNGE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"expunge {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def test_engine_status_when_stopped(home):
    res = run(home, "engine", "status", check=False)
    assert res.returncode == 1 and "not running" in res.stdout


def test_submit_wait_show_and_audit(engine, home, tiny, demo_request):
    run(home, "models", "add", "tiny", str(tiny["dir"]))
    res = run(home, "submit", str(demo_request["spec_path"]), "--method", "graddiff", "--wait", "--json")
    out = json.loads(res.stdout)
    detail = out["job_detail"]
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]
    assert [s["stage"] for s in detail["stages"]][:2] == ["unit", "control"]
    job_id = detail["job"]["id"]

    listed = json.loads(run(home, "jobs", "--json").stdout)
    assert listed["items"][0]["id"] == job_id
    shown = run(home, "show", str(job_id)).stdout
    assert "forget_rouge_l" in shown and "retain_rouge_l" in shown and "before" in shown
    reqs = json.loads(run(home, "requests", "--json").stdout)
    assert reqs["items"][0]["title"] == demo_request["spec"]["title"]
    status = json.loads(run(home, "engine", "status", "--json").stdout)
    assert status["running"] and status["slots"][0]["device"] == "cpu"
    audit = run(home, "audit", "verify")
    assert "intact" in audit.stdout
    exported = home.data / "exported"
    run(home, "export", str(job_id), "--out", str(exported))
    assert (exported / "config.json").is_file() and list(exported.glob("*.safetensors"))


def test_bad_spec_exits_nonzero_naming_the_line(engine, home, tmp_path):
    (tmp_path / "forget.jsonl").write_text('{"question": "a?", "answer": "b"}\nnot json\n')
    (tmp_path / "spec.yaml").write_text("title: t\nmodel: demo\nforget: forget.jsonl\n")
    res = run(home, "submit", str(tmp_path / "spec.yaml"), check=False)
    assert res.returncode != 0 and "forget.jsonl line 2" in res.stderr
    res = run(home, "submit", str(tmp_path / "spec.yaml"), "--hyper", "oops", check=False)
    assert res.returncode != 0


def test_models_add_refuses_what_it_cannot_load_naming_the_problem(engine, home, tmp_path):
    """A missing path, a directory without config.json, a corrupt GGUF file (valid magic, garbage after
    it: it fails in the engine's loader subprocess) and a non-GGUF file: each refused with a message
    naming it, exit 1, and nothing registered or converted."""
    res = run(home, "models", "add", "ghost", str(tmp_path / "nowhere"), check=False)
    assert res.returncode == 1 and "nowhere: not a model directory, a .gguf file" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run(home, "models", "add", "empty", str(tmp_path / "empty"), check=False)
    assert res.returncode == 1 and "no config.json in that directory" in res.stderr
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(4096))
    res = run(home, "models", "add", "broken", str(tmp_path / "broken.gguf"), check=False)
    assert res.returncode == 1 and "broken.gguf: cannot load this GGUF file" in res.stderr, res.stderr
    (tmp_path / "weights.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    res = run(home, "models", "add", "zip", str(tmp_path / "weights.gguf"), check=False)
    assert res.returncode == 1 and "weights.gguf: not a GGUF file" in res.stderr
    res = run(home, "models", "add", "hubby", "nobody-xyz/not-cached-model", check=False)
    assert res.returncode == 1 and "no model 'nobody-xyz/not-cached-model' in the local Hugging Face cache" in res.stderr
    assert json.loads(run(home, "models", "--json").stdout) == []
    assert not (home.models / "converted").exists() or not any((home.models / "converted").iterdir())


def test_models_add_checks_a_directory_in_a_subprocess_and_reports_it(engine, home, tiny):
    out = json.loads(run(home, "models", "add", "tiny", str(tiny["dir"]), "--dtype", "fp32", "--json").stdout)
    assert out["kind"] == "hf" and out["params"] > 100_000 and len(out["weights_sha256"]) == 64
    assert out["checked"]["chat_template"] is False and out["checked"]["model_type"] == "llama"
    assert out["options"] == {"chat_template": "auto", "dtype": "fp32"}


LOG = ["2026-12-02 05:01:00 INFO engine started, 1 slot(s): cpu",
       "2026-12-02 05:01:02 INFO job 7 phase load 1.2 s cpu",
       "2026-12-02 05:01:03 INFO job 17 phase load 0.9 s cpu",
       "2026-12-02 05:08:55 WARNING job 7 phase verify:reconstruction 412.3 s cpu",
       "2026-12-02 05:09:00 INFO job 70 queued"]


def test_engine_logs_shows_the_last_lines_or_one_jobs(home):
    home.log.write_text("".join(line + "\n" for line in LOG))
    assert run(home, "engine", "logs", "-n", "2").stdout.splitlines() == LOG[-2:]
    assert run(home, "engine", "logs", "--job", "7").stdout.splitlines() == [LOG[1], LOG[3]]  # not 17, not 70
    assert run(home, "engine", "logs", "--job", "7", "-n", "1").stdout.splitlines() == [LOG[3]]
    assert run(home, "engine", "logs", "--job", "8").stdout.strip() == ""


def test_engine_logs_follow_prints_new_lines_until_interrupted(home):
    home.log.write_text("".join(line + "\n" for line in LOG))
    env = {**os.environ, "EXPUNGE_HOME": str(home.config.parent)}
    # The `expunge` entry point with ctrl+c's default action, as from a terminal: under pytest-xdist the child has
    # twice inherited SIGINT ignored (SigIgn 0x81001006: SIGINT and SIGQUIT, as C system() sets them while it runs
    # in another thread), and a process that starts with SIGINT ignored rightly keeps ignoring it.
    entry = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'expunge'; from console.cli import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", entry, "engine", "logs", "--follow", "--job", "7", "-n", "1"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x.rstrip("\n")) for x in proc.stdout], daemon=True).start()

    def next_line(timeout: float = 30.0) -> str:
        return lines.get(timeout=timeout)

    try:
        assert next_line() == LOG[3]  # the last line about job 7, then it waits
        with home.log.open("a") as fh:
            fh.write("2026-12-02 05:09:01 INFO job 8 phase load 1.0 s cpu\n")
            fh.write("2026-12-02 05:09:02 INFO job 7 phase ver")  # half a line: printed once it is whole
            fh.flush()
            time.sleep(0.5)
            fh.write("dict 0.4 s cpu\n")
        assert next_line() == "2026-12-02 05:09:02 INFO job 7 phase verdict 0.4 s cpu"
        home.log.write_text("2026-12-02 06:00:00 INFO job 7 phase load 1.1 s cpu\n")  # rotated: read from the top
        assert next_line() == "2026-12-02 06:00:00 INFO job 7 phase load 1.1 s cpu"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # say what the process was at
            status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            proc.kill()
            raise AssertionError(f"still running 30 s after SIGINT: {[x for x in status if x.startswith('Sig')]}, "
                                 f"stderr: {proc.communicate()[1][-2000:]}") from None
        assert code == 0, proc.stderr.read()
    assert lines.empty()
