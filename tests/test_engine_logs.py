"""The engine log as an operator reads it: one line per job phase, when it ends, with its duration and device
(`job 7 phase verify:unit 3.2 s cpu`); every line about a job names it (`job 7 `); no third-party INFO noise."""

from __future__ import annotations

import re

from tests.fixtures_model import wait_job


def test_a_job_writes_one_line_per_phase_to_the_engine_log(engine, home, tiny, demo_request):
    from engine.schema.spec import load_spec_file

    engine.add_model("tiny", str(tiny["dir"]))
    # The cheapest whole job: the decode-time guard, judged on the quick verification profile.
    spec = {**load_spec_file(demo_request["spec_path"]), "intention": "suppress", "verification": "quick"}
    job_id = engine.submit(spec, method="guard")["job"]["id"]
    detail = wait_job(engine, job_id, timeout=900)
    assert detail["job"]["status"] == "succeeded", detail["job"]["error"]

    log = home.log.read_text()
    phase_line = re.compile(rf"job {job_id} phase (\S+) (\d+\.\d) s (\S+)$")
    phases = [m.groups() for m in map(phase_line.search, log.splitlines()) if m]
    names = [name for name, _, _ in phases]
    # In the order they ran, each once per run: the worker's start, loading, the guard, each stage measured
    # (before and after), saving the artifact.
    assert names[:2] == ["start", "load"] and names[-1] == "save"
    assert {"guard", "verify:unit", "verify:control", "verify:reconstruction"} <= set(names)
    assert all(device == "cpu" and float(seconds) >= 0 for _, seconds, device in phases)
    assert f"job {job_id} succeeded: verdict {detail['job']['verdict']}" in log
    assert "alembic" not in log  # its plugin and context set-up lines: off unless EXPUNGE_VERBOSE=1
