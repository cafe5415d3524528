"""Memorisation on the rows a method trained on: a retain metric measured there that rises beyond the base's
own value shows the retain term learning those answers (NPO's retain NLL on 8 rows took SmolLM2's retain
ROUGE-L from 0.76 to 1.00), not the model keeping what it knew. Such a rise is flagged on the metric's row
and never credited: the control verdict judges the held-out rows only (engine.compute.verify.split)."""

from __future__ import annotations

# Metrics on trained rows -> the held-out metric they shadow.
TRAINED_METRICS = {"retain_trained_rouge_l": "retain_rouge_l", "retain_trained_prob": "retain_prob"}
# A rise smaller than this is noise (greedy ties, batch padding), not learning.
MARGIN = 0.05


def flag_memorisation(stages: list[dict]) -> list[str]:
    """Note every trained-row metric that rose more than MARGIN above the base; the names flagged."""
    flagged = []
    for stage in stages:
        for row in stage["metrics"]:
            shadowed = TRAINED_METRICS.get(row["name"])
            if shadowed is None or row["before"] is None or row["after"] is None:
                continue
            if row["after"] > row["before"] + MARGIN:
                flagged.append(row["name"])
                row["note"] = (f"memorisation: rose from {row['before']:.3f} (the base) to {row['after']:.3f} on "
                               f"rows the method trained on; not credited (the verdict judges {shadowed} on "
                               "held-out rows)")
            elif row["note"] is None:
                row["note"] = "rows the method trained on: reported, not judged"
    return flagged
