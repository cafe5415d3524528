"""The report's trials section for a tuned job: how the winner was chosen (budget, validation split, rule), every
trial in a table, and a forget-vs-retain scatter of the completed trials with the winner marked (HTML only)."""

from __future__ import annotations

from engine.control.report.blocks import UL, Figure, H, P, Table
from engine.schema.tuning import TRIAL_COLUMNS, trial_row, tuning_lines


def trials_blocks(j: dict, charts: bool) -> list:
    trials = j.get("trials") or []
    lines = tuning_lines(j.get("result") or {})
    if not trials and not lines:
        return []
    job = j["job"]
    out: list = [H(3, f"Tuning trials — how job {job['id']}'s hyperparameters were chosen"),
                 P(["Each trial trained a fresh copy of the base model and was judged by a cheap proxy of the unit "
                    "and control stages (greedy answers, answer probability, the leak check, KL to the base) and of "
                    "two reconstruction checks (membership inference against the holdout rows, the direct questions "
                    "asked of a 4-bit copy of the weights) on a validation split; the winner was then run on the "
                    "request's own rows and verified in full (the stages above)."])]
    if lines:
        out.append(UL([[line] for line in lines]))
    if trials:
        out.append(Table(list(TRIAL_COLUMNS), [list(trial_row(t)) for t in trials], numeric={3, 4, 5, 6, 7, 8, 12, 13, 14},
                         cls="trials"))
        reasons = [f"trial {t['number']} {t['state']}: {t['reason']}" for t in trials
                   if t["state"] in ("pruned", "failed", "cancelled") and t.get("reason")]
        if reasons:
            out.append(UL([[r] for r in reasons]))
    done = [t for t in trials if t["state"] == "complete" and t.get("metrics")]
    if charts and done:
        out.append(Figure(chart_trials(job, done), f"Forget vs retain of job {job['id']}'s completed trials on the "
                          "validation split (★ the winner).", f"trials scatter of job {job['id']}"))
    return out


def chart_trials(job: dict, trials: list[dict]) -> bytes:
    from engine.control.report.charts import _new_figure, _png

    fig = _new_figure(5.5, 3.4)
    ax = fig.add_subplot()
    for t in trials:
        x, y = t["metrics"].get("forget_rouge_l"), t["metrics"].get("retain_rouge_l")
        if x is None or y is None:
            continue
        style = dict(marker="*", s=180, color="#d4ac0d", zorder=3) if t.get("winner") else \
            dict(marker="o", s=36, color="#1e8449" if t.get("passed") else "#c0392b", zorder=2)
        ax.scatter([x * 100], [y * 100], edgecolors="black", linewidths=0.5, **style)
        ax.annotate(str(t["number"]), (x * 100, y * 100), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xlabel("forget ROUGE-L % (validation; lower is better)", fontsize=8)
    ax.set_ylabel("retain ROUGE-L % (validation)", fontsize=8)
    ax.set_xlim(-4, 104)
    ax.set_ylim(-4, 104)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Tuning trials — job {job['id']} (green: passed the proxy)", fontsize=10, loc="left")
    return _png(fig)
