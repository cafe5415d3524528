"""Building a model version and judging its regression check, for engine.control.service.versions (which writes).

The build runs in a subprocess (`python -m engine.compute.lineage_build`: the API process never imports
torch). The judgement is here, in plain Python:

- every request the version carries must not leak again: the share of its forget prompts whose greedy answer
  leaks one of its key spans may not exceed the larger of its policy's `unit.leak_rate` threshold and the share
  measured when it landed (the incoming request: the larger of the threshold and its own job's leak rate);
- cumulative utility against v0: the accepting request's policy's `[cumulative]` rules (DEFAULT_CUMULATIVE when
  it has none) on retain ROUGE-L, retain probability and general perplexity, each 'before' being v0's figure.

A failure names the request that leaks again, or the metric that fell too far from v0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine.schema.errors import SpecError
from engine.schema.policy import _rule_problem, holds, rule_text

BUILD_TIMEOUT_S = float(os.environ.get("EXPUNGE_VERSION_BUILD_TIMEOUT", 3600))
# Against v0, over the whole line: looser than one job's control stage (0.9 of the parent each time would let ten
# versions lose 65%), tight enough that a line never drifts into a different model.
DEFAULT_CUMULATIVE = {
    "retain_rouge_l": {"rule": "ratio_min", "threshold": 0.8},
    "retain_prob": {"rule": "ratio_min", "threshold": 0.5},
    "general_ppl": {"rule": "ratio_max", "threshold": 2.0},
}
DEFAULT_LEAK_MAX = 0.05


def run_build(request: dict) -> dict:
    """Run the build subprocess on `request`; its answer, or SpecError with its reason."""
    try:
        proc = subprocess.run([sys.executable, "-m", "engine.compute.lineage_build"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    except subprocess.TimeoutExpired:
        raise SpecError(f"building the model version took longer than {BUILD_TIMEOUT_S:.0f} s") from None
    try:
        answer = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise SpecError(f"building the model version failed (exit {proc.returncode}): {tail}") from None
    if not answer.get("ok"):
        raise SpecError(f"building the model version failed: {answer.get('error')}")
    return answer


def cumulative_rules(policy: dict) -> dict:
    rules = policy.get("cumulative") or DEFAULT_CUMULATIVE
    for metric, spec in rules.items():
        problem = _rule_problem(metric, spec)
        if problem:
            raise SpecError(f"policy {policy.get('name')}: cumulative.{metric} {problem}")
    return rules


def leak_limit(policy: dict) -> float:
    spec = (policy.get("unit") or {}).get("leak_rate")
    return float(spec["threshold"]) if spec and spec.get("rule") == "max" else DEFAULT_LEAK_MAX


def judge(carried: list[dict], measured: dict, control: dict, v0_control: dict, policy: dict) -> dict:
    """`carried`: per request {request_id, reference, limit (policy), landed (leak rate when it landed, or the
    incoming job's own), incoming}; `measured`: the build's regression figures by request id. The verdict, the
    per-request and cumulative rows, and the failures in words."""
    rows, failures = {}, []
    for c in carried:
        rid = str(c["request_id"])
        got = measured.get(rid) or {}
        rate = got.get("leak_rate")
        allowed = max(c["limit"], c.get("landed") or 0.0)
        passed = rate is not None and rate <= allowed + 1e-12
        rows[rid] = {"request_id": c["request_id"], "reference": c.get("reference", ""), "incoming": c["incoming"],
                     "leaked": got.get("leaked"), "n": got.get("n"), "leak_rate": rate, "allowed": allowed,
                     "landed": c.get("landed"), "passed": passed, "note": c.get("note")}
        if not passed:
            who = f"request {c['request_id']}" + (f" ({c['reference']})" if c.get("reference") else "")
            if rate is None:
                failures.append(f"{who}: no forget prompts to check")
            elif c["incoming"]:
                failures.append(f"{who} leaks in the new version: {got['leaked']}/{got['n']} forget prompts leak "
                                f"(leak rate {rate:.2f} > {allowed:.2f})")
            else:
                failures.append(f"{who} leaks again: {got['leaked']}/{got['n']} of its forget prompts leak in the new "
                                f"version (leak rate {rate:.2f} > {allowed:.2f}, {c.get('landed') or 0:.2f} when it "
                                "landed)")
    cumulative = {}
    for metric, spec in cumulative_rules(policy).items():
        before, after = v0_control.get(metric), control.get(metric)
        if before is None or after is None:
            cumulative[metric] = {"v0": before, "after": after, "rule": rule_text(spec), "passed": None,
                                  "note": "not measured (no control set)" if after is None else "no v0 figure"}
            continue
        passed = holds(spec, before, after)
        cumulative[metric] = {"v0": before, "after": after, "rule": rule_text(spec), "passed": passed}
        if not passed:
            failures.append(f"cumulative {metric} {after:.3f} against v0's {before:.3f} breaks the rule "
                            f"{rule_text(spec).replace('before', 'v0')}")
    return {"verdict": "fail" if failures else "pass", "requests": rows, "cumulative": cumulative,
            "failures": failures}
