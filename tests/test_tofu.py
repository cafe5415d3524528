"""The TOFU benchmark: data loading and the table without models, and `expunge bench tofu --split
forget01 --base tiny` end to end as a subprocess (slow: it trains two small models on the CPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench_tofu import COLUMNS, format_table, load_tofu
from engine.tofu_data import SHIPPED, default_data_dir, read_split

REPO = Path(__file__).resolve().parent.parent
DATA = default_data_dir()
RELEASE = REPO.parent / "shared" / "data" / "tofu"  # the uncompressed release, where this checkout has one


def test_the_package_ships_the_data_and_reads_it_without_the_release(monkeypatch):
    """A user's clone has no ../shared: the default is the copy inside the package, and it is the release's data
    (compared file by file where the release is beside the repository)."""
    monkeypatch.delenv("EXPUNGE_TOFU_DIR", raising=False)
    assert default_data_dir() == SHIPPED and REPO / "engine" in SHIPPED.parents
    assert (SHIPPED / "LICENSE").is_file() and (SHIPPED / "PROVENANCE.md").is_file()
    assert len(read_split(SHIPPED, "retain95")) == 3800
    if RELEASE.is_dir():
        for name in ("forget01_perturbed", "retain99", "retain_perturbed", "holdout10", "world_facts_perturbed"):
            assert read_split(SHIPPED, name) == read_split(RELEASE, name), name
    with pytest.raises(FileNotFoundError, match="forget02_perturbed"):
        read_split(SHIPPED, "forget02_perturbed")


def test_load_tofu_tiny_subset():
    data = load_tofu("forget01", DATA, tiny=True)
    assert len(data.forget) == 40 and all(len(r["perturbed_answer"]) == 5 for r in data.forget)
    assert len(data.holdout) == 40
    # The retain rows evaluated are exactly the perturbed retain rows the target trained on.
    trained = {r["question"] for r in data.retain_train}
    assert data.retain_eval and {r["question"] for r in data.retain_eval} <= trained
    assert not trained & {r["question"] for r in data.forget}
    assert data.notes  # the subset is said
    full = load_tofu("forget01", DATA, tiny=False)
    assert len(full.retain_train) == 3960 and len(full.retain_eval) == 400 and not full.general_train
    with pytest.raises(ValueError):
        load_tofu("forget02", DATA, tiny=True)


def test_truth_ratio_split_scoring_by_hand(monkeypatch):
    """evaluate_split's probabilities and truth ratios from known NLLs (the model is replaced)."""
    from engine.compute.verify import scoring, truth

    nll = {("q1", "gold1"): 0.5, ("q1", "para1"): 1.0, ("q1", "w1"): 2.0, ("q1", "w2"): 3.0,
           ("q2", "gold2"): 1.0, ("q2", "w3"): 1.0}
    monkeypatch.setattr(scoring, "answer_nlls",
                        lambda model, tok, items, batch_size=32: [nll[(i["question"], i["answer"])] for i in items])
    monkeypatch.setattr(truth, "greedy", lambda model, tok, qs, **kw: ["gold1", "nothing"])
    rows = [{"question": "q1", "answer": "gold1", "paraphrased_answer": "para1", "perturbed_answer": ["w1", "w2"]},
            {"question": "q2", "answer": "gold2", "perturbed_answer": ["w3"]}]
    res = truth.evaluate_split(None, None, rows, "forget")
    # Row 1 against its paraphrase: exp(1.0 - (2 + 3) / 2) = exp(-1.5); row 2 against its gold: exp(0) = 1.
    assert res["truth_ratios"] == pytest.approx([math.exp(-1.5), 1.0])
    assert res["truth_ratio"] == pytest.approx((math.exp(-1.5) + 1.0) / 2)  # mean(min(R, 1/R))
    assert res["prob"] == pytest.approx((math.exp(-0.5) + math.exp(-1.0)) / 2)
    assert res["rouge_l"] == pytest.approx(0.5)
    opts = truth.evaluate_split(None, None, rows, "retain", options_prob=True)
    p1 = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-2.0) + math.exp(-3.0))
    assert opts["prob"] == pytest.approx((p1 + 0.5) / 2, rel=1e-6)
    assert opts["truth_ratio"] == pytest.approx(((1 - math.exp(-1.5)) + 0.0) / 2)  # mean(max(0, 1 - R))


def test_table_layout():
    rows = [{"model": m, "forget_quality": fq, "model_utility": 0.5, "forget_rouge_l": 0.9, "forget_truth_ratio": 0.6,
             "mia_min_k_pp": 0.8, "mia_loss": 0.7, "priv_leak": 0.1, "retain_utility": 0.6}
            for m, fq in (("finetuned", 1e-5), ("retain", 1.0), ("ga", 0.2))]
    text = format_table({"header": ["TOFU forget01, base tiny"], "rows": rows})
    lines = text.splitlines()
    assert lines[0].startswith("# TOFU forget01")
    assert all(title in lines[1] for _, title, _ in COLUMNS[:3])
    assert [ln.split()[0] for ln in lines[3:6]] == ["finetuned", "retain", "ga"]


def _parse_table(out: str) -> dict[str, dict]:
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("Model") and set(lines[1]) <= {"-", " "}
    rows = {}
    for ln in lines[2:]:
        cells = ln.split()
        rows[cells[0]] = {key: (float(c) if c != "-" else math.nan)
                          for (key, _, _), c in zip(COLUMNS[1:], cells[1:], strict=True)}
    return rows


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~4 min of CPU; a machine shared with other jobs stretches the wall time
def test_bench_tofu_forget01_tiny_end_to_end(home):
    # The shipped copy of the data, as in a user's clone (no ../shared, no EXPUNGE_TOFU_DIR).
    env = {k: v for k, v in os.environ.items() if k != "EXPUNGE_TOFU_DIR"}
    env["EXPUNGE_HOME"] = str(home.data.parent)  # conftest: one thread per test process
    cmd = [sys.executable, "-m", "console.cli", "bench", "tofu", "--split", "forget01", "--base", "tiny"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout)
    assert "training the finetuned target" in res.stderr and "training the retain-only reference" in res.stderr
    header = [ln for ln in res.stdout.splitlines() if ln.startswith("#")]
    assert "TOFU forget01" in header[0] and any("subset:" in h for h in header)
    table = _parse_table(res.stdout)
    assert list(table) == ["finetuned", "retain", "ga", "graddiff", "npo"]
    fin, ref = table["finetuned"], table["retain"]
    # The target knows the forget set far better than the model that never saw it, and the
    # membership-inference attack tells its forget rows from the holdout; the reference matches itself.
    assert fin["forget_rouge_l"] > 0.8 > ref["forget_rouge_l"]
    assert fin["mia_min_k_pp"] > ref["mia_min_k_pp"]
    assert ref["forget_quality"] == pytest.approx(1.0)
    assert fin["forget_quality"] < 0.05
    for name, r in table.items():
        assert 0 <= r["model_utility"] <= 1 and 0 <= r["forget_truth_ratio"] <= 1, name
        assert r["retain_utility"] > 0, name
    # Unlearning moves the forget set away from what the target said.
    assert min(table[m]["forget_rouge_l"] for m in ("ga", "graddiff", "npo")) < fin["forget_rouge_l"]


def test_a_local_hugging_face_cache_of_tofu_is_read_when_no_folder_is_named(tmp_path, monkeypatch):
    """A user who already has locuslab/TOFU in their Hugging Face cache gets that copy (found by huggingface_hub's
    own cache layout, whose folder it reads from HF_HUB_CACHE when imported), before the shipped one;
    EXPUNGE_TOFU_DIR still wins over both."""
    from huggingface_hub import constants

    monkeypatch.delenv("EXPUNGE_TOFU_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert default_data_dir() == SHIPPED  # an empty cache: the shipped copy
    repo = tmp_path / "hub" / "datasets--locuslab--TOFU"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    rows = read_split(SHIPPED, "forget01_perturbed")[:3]
    (snapshot / "forget01_perturbed.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert default_data_dir() == snapshot
    assert read_split(default_data_dir(), "forget01_perturbed") == rows
    monkeypatch.setenv("EXPUNGE_TOFU_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
