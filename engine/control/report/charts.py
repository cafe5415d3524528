"""The report's charts as PNG bytes (matplotlib, Agg canvas, no pyplot state). matplotlib is imported inside
the functions only, so the API server does not load it at start-up."""

from __future__ import annotations

import io


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, facecolor="white")
    return buf.getvalue()


def job_label(job: dict) -> str:
    return f"tier {job['tier']}\n{job['method']} (job {job['id']})"


def chart_tradeoff(points: list[tuple[str, dict]], limits: dict[str, float]) -> bytes:
    """Forget and retain scores (in %) at each point of the ladder, with the policy's limits dotted."""
    fig = _new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    series = [("forget_rouge_l", "forget recall (ROUGE-L) — should fall", "#c0392b", "o-"),
              ("leak_rate", "forget answers leaking — should fall", "#7d3c98", "^:"),
              ("retain_rouge_l", "retain recall (ROUGE-L) — should stay", "#1e8449", "o-"),
              ("retain_prob", "retain answer probability — should stay", "#2471a3", "s--")]
    for key, label, color, style in series:
        ys = [p.get(key) for _, p in points]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [float("nan") if y is None else y * 100 for y in ys], style, color=color, label=label,
                linewidth=1.8, markersize=5)
    for key, label, color in (("forget_rouge_l", "forget limit", "#c0392b"),
                              ("retain_rouge_l", "retain floor", "#1e8449")):
        if limits.get(key) is not None:
            ax.axhline(limits[key] * 100, color=color, linestyle=(0, (2, 3)), linewidth=1, alpha=0.8)
            ax.annotate(label, (0, limits[key] * 100), xytext=(2, 2), textcoords="offset points",
                        fontsize=7, color=color)
    ax.set_xticks(xs, [label for label, _ in points], fontsize=8)
    ax.set_ylim(-4, 104)
    ax.set_ylabel("% (after each tier)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title("Forget / retain trade-off across the ladder", fontsize=10, loc="left")
    return _png(fig)


def chart_loss(job: dict, losses: list) -> bytes:
    """A job's training loss over its logged `(step, loss)` pairs."""
    fig = _new_figure(7.0, 2.3)
    ax = fig.add_subplot()
    steps = [p[0] for p in losses]
    values = [p[1] for p in losses]
    ax.plot(steps, values, color="#2c3e50", linewidth=1.4)
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Training loss — tier {job['tier']} {job['method']} (job {job['id']})", fontsize=10, loc="left")
    return _png(fig)


def chart_locate(rows: list[dict], edited_lens_layers: set[int]) -> bytes:
    """The logit lens per hidden state: gold-answer probability bars, the edited layers in orange."""
    fig = _new_figure(7.0, 2.6)
    ax = fig.add_subplot()
    rows = sorted(rows, key=lambda r: r["layer"])
    xs = [r["layer"] for r in rows]
    colors = ["#d35400" if x in edited_lens_layers else "#5d6d7e" for x in xs]
    ax.bar(xs, [r.get("prob") or 0.0 for r in rows], color=colors, width=0.7, label="gold-answer probability")
    if any(r.get("top1") is not None for r in rows):
        ax.plot(xs, [r.get("top1") for r in rows], "o-", color="#1a5276", markersize=4, linewidth=1.2,
                label="share with the answer's first token on top")
    if edited_lens_layers:
        from matplotlib.patches import Patch

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="#d35400"))
        labels.append("edited by tier 2")
        ax.legend(handles, labels, fontsize=7, loc="upper left", frameon=False)
    else:
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_xticks(xs, [str(x) for x in xs], fontsize=8)
    ax.set_xlabel("hidden state (0 = embeddings, i = output of decoder block i, last = model output)", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Locate — where the forget answers become decodable (logit lens)", fontsize=10, loc="left")
    return _png(fig)
