"""The report's words: numbers formatted for a reader, verdicts, policy rules and the plain-words sentence of
each metric ("After tier 3 (graddiff), the model's answers ... recall 4% of the gold answers (was 98%); the
policy requires at most half of before: PASS.")."""

from __future__ import annotations

import json

from engine.schema.figures import interval_text
from engine.schema.policy import band_limits

STAGE_QUESTION = {"unit": "are the targeted outputs gone?", "control": "is everything else intact?",
                  "reconstruction": "can an attacker bring it back?"}
INTENTION_TEXT = {"suppress": "suppress — the model must no longer say the data (judged on black-box tests only)",
                  "remove": "remove — the knowledge must be gone from the weights (judged on every test)"}
TIER_TEXT = {1: "output suppression (nothing in the weights changes)", 2: "model editing (a few located layers)",
             3: "gradient-based removal (many weights)"}

# metric: (label, kind, clause). kind "pct" values are shares in [0, 1], shown as percentages in sentences.
METRICS = {
    "forget_rouge_l": ("forget answers recalled (ROUGE-L)", "pct",
                       "the model's answers to the {n_forget} forget questions recall {after} of the gold "
                       "answers (was {before})"),
    "forget_prob": ("forget answer probability", "prob",
                    "the model gives the correct forget answers a mean probability of {after} (was {before})"),
    "leak_rate": ("forget answers leaking a sensitive string", "pct",
                  "{after} of its answers to the forget questions contain a sensitive string (was {before})"),
    "retain_rouge_l": ("retain answers recalled (ROUGE-L)", "pct",
                       "its answers to the held-out retain questions (facts that must stay, none of them trained "
                       "on) recall {after} of the gold answers (was {before})"),
    "retain_prob": ("retain answer probability", "prob",
                    "it gives the correct retain answers a mean probability of {after} (was {before})"),
    "general_ppl": ("perplexity on general text", "num",
                    "its perplexity on general text is {after} (was {before}; lower is better)"),
    "retain_kl": ("divergence from the original model on retain prompts", "num",
                  "its next-token predictions on retain prompts differ from the original model's by {after} "
                  "nats of KL divergence (0 = identical)"),
    "attack_leak_rate": ("answers leaking under attack", "pct",
                         "under paraphrase, format and sampling attacks {after} of its answers contain a "
                         "sensitive string (was {before})"),
    "relearn_recovery": ("recovery after a relearning fine-tune", "pct",
                         "a small fine-tune on half of the forget set brings back {after} of the other half "
                         "(was {before})"),
    "mia_auc": ("membership-inference AUC", "num",
                "a membership-inference test tells forget facts from never-seen facts with an AUC of {after} "
                "(0.5 = cannot tell; was {before})"),
    "logit_lens_presence": ("answer readable in intermediate layers", "prob",
                            "the gold answers are readable in the model's intermediate layers at {after} "
                            "(was {before})"),
    "incontext_leak_rate": ("answers leaking with the rest of the forget set as context", "pct",
                            "with the other half of the forget set shown in the prompt, {after} of its answers "
                            "contain a sensitive string (was {before})"),
    "retain_relearn_recovery": ("recovery after a fine-tune on retain rows only", "pct",
                                "a small fine-tune on retain rows alone (no forget data) brings back {after} of "
                                "the forget answers (was {before})"),
    "quant8_forget_rouge_l": ("forget answers recalled by the 8-bit quantized model", "pct",
                              "quantized to 8 bits, its answers to the forget questions recall {after} of the gold "
                              "answers (was {before})"),
    "quant8_leak_rate": ("8-bit quantized answers leaking", "pct",
                         "quantized to 8 bits, {after} of its answers to the forget questions contain a sensitive "
                         "string (was {before})"),
    "quant4_forget_rouge_l": ("forget answers recalled by the 4-bit quantized model", "pct",
                              "quantized to 4 bits, its answers to the forget questions recall {after} of the gold "
                              "answers (was {before})"),
    "quant4_leak_rate": ("4-bit quantized answers leaking", "pct",
                         "quantized to 4 bits, {after} of its answers to the forget questions contain a sensitive "
                         "string (was {before})"),
    "extraction_strength": ("extraction strength", "pct",
                            "an attacker must supply all but {after} of an answer's leading tokens before the rest "
                            "comes out top-1 (was {before})"),
    "exact_memorisation": ("answer tokens predicted exactly", "pct",
                           "it predicts {after} of the forget answers' tokens top-1 (was {before})"),
    "verbmem_rouge_l": ("verbatim continuation recalled (VerbMem)", "pct",
                        "given the start of each forget text, its continuation recalls {after} of the true one "
                        "(was {before})"),
    "neighbour_rouge_l": ("neighbour answers kept (ROUGE-L)", "pct",
                          "its answers to the held-out neighbours (same-shaped questions about other entities) "
                          "recall {after} of the original model's own answers (was {before})"),
    "neighbour_kl": ("divergence from the original model on neighbours", "num",
                     "its next-token predictions on the held-out neighbours differ from the original model's by "
                     "{after} nats of KL divergence (0 = identical)"),
    "retain_trained_rouge_l": ("retain answers recalled on rows trained on", "pct",
                               "on the retain rows the method trained on its answers recall {after} of the gold "
                               "answers (was {before}; a rise is memorisation, never credited)"),
    "retain_trained_prob": ("retain answer probability on rows trained on", "prob",
                            "on the retain rows the method trained on it gives the gold answers {after} (was "
                            "{before}; a rise is memorisation, never credited)"),
}
RATIO_WORDS = {0.25: "a quarter of", 0.5: "half of", 0.75: "three quarters of", 1.0: "the same as", 2.0: "twice"}


def after_with_interval(metric: dict) -> str:
    """The value after, with its 95% interval and the sample it rests on where one was measured."""
    return fmt_num(metric.get("after")) + interval_text(metric)


def fmt_num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def fmt_delta(before, after) -> str:
    if before is None or after is None:
        return "—"
    d = after - before
    return f"{d:+.3f}" if abs(d) < 1000 else f"{d:+,.0f}"


def fmt_kind(value, kind: str) -> str:
    if value is None:
        return "not measured"
    if kind == "pct":
        pct = value * 100
        return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.1f}%"
    if kind == "prob":
        return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def verdict_word(v: str | None) -> tuple[str, str]:
    if v == "pass":
        return ("PASS", "pass")
    if v == "fail":
        return ("FAIL", "fail")
    if v == "incomplete":  # a judged metric was not measured or shows no signal: not a pass
        return ("INCOMPLETE", "fail")
    if v == "skipped":
        return ("skipped", "skip")
    return ("—", "skip")


def rule_display(rule: str) -> str:
    if not rule:
        return "—"
    text = rule.replace("<=", "≤").replace(">=", "≥").replace(" x before", "×before")
    return text.replace("×before", " × before")


def short(text: str, n: int = 220) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def compact(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def policy_rule(stage: dict, metric: dict) -> dict | None:
    """The policy's rule for a metric: from the policy stored with the stage, else read back from its rule text."""
    rule = (stage.get("policy_content") or {}).get(stage["stage"], {}).get(metric["name"])
    if isinstance(rule, dict) and "rule" in rule and ("threshold" in rule or rule["rule"] == "band"):
        return rule
    text = metric.get("rule") or ""
    if metric.get("threshold") is None or "reported only" in text:
        return None
    le = "<=" in text or "≤" in text
    kind = ("ratio_max" if le else "ratio_min") if "before" in text else ("max" if le else "min")
    return {"rule": kind, "threshold": metric["threshold"]}


def policy_clause(rule: dict | None, kind: str, before) -> str:
    if rule is None:
        return "the policy reports it without judging it"
    if rule["rule"] == "band":
        lo, hi = band_limits(rule)
        return f"the policy requires it between {fmt_kind(lo, kind)} and {fmt_kind(hi, kind)} (both sides)"
    t = float(rule["threshold"])
    if rule["rule"] == "max":
        return f"the policy allows at most {fmt_kind(t, kind)}"
    if rule["rule"] == "min":
        return f"the policy requires at least {fmt_kind(t, kind)}"
    words = RATIO_WORDS.get(t, f"{t:g} ×")
    limit = f" ({'≤' if rule['rule'] == 'ratio_max' else '≥'} {fmt_kind(t * before, kind)})" if before is not None \
        else ""
    if rule["rule"] == "ratio_max":
        return f"the policy requires at most {words} before{limit}"
    if t < 1:
        return f"the policy requires at least {t * 100:g}% of before{limit}"
    return f"the policy requires at least {words} before{limit}"


def metric_sentence(job: dict, stage: dict, metric: dict, n_forget: int, n_retain: int) -> list:
    """'After tier 3 (graddiff), the model's answers ... recall 4% of the gold answers (was 98%); the policy
    requires at most half of before: PASS.' as parts (the verdict styled)."""
    label, kind, clause = METRICS.get(metric["name"], (metric["name"], "num", "{name} is {after} (was {before})"))
    head = f"After tier {job['tier']} ({job['method']}), "
    if metric["after"] is None:
        if metric.get("note"):  # why it was not measured, or the waiver: what the verdict rests on
            return [head + f"{label}: {metric['note']}."]
        why = " (this tier leaves the weights unchanged)" if job["tier"] == 1 else ""
        return [head + f"{label} was not measured{why}; not judged."]
    text = clause.format(after=fmt_kind(metric["after"], kind), before=fmt_kind(metric["before"], kind),
                         n_forget=n_forget, n_retain=n_retain, name=metric["name"])
    rule = policy_rule(stage, metric)
    if "not judged for suppress" in (metric.get("rule") or ""):
        return [head + text + "; a white-box measure, not judged for a suppress request."]
    if metric["passed"] is None:
        return [head + text + f"; {policy_clause(rule, kind, metric['before']) if rule else 'reported only, not judged by this policy'}."]
    word, style = verdict_word("pass" if metric["passed"] else "fail")
    return [head + text + f"; {policy_clause(rule, kind, metric['before'])}: ", (word, style), "."]


def stage_sentence(stage: dict, intention: str) -> list:
    word, style = verdict_word(stage["verdict"])
    lead = "Stage verdict: "
    if not stage["required"]:
        return [lead, (word, style), f": nothing this stage measured is judged for a {intention} request."]
    if stage["verdict"] == "pass":
        return [lead, (word, style), ": every metric the policy judges is within its threshold."]
    failed = [m["name"] for m in stage["metrics"] if m["passed"] is False]
    if not failed and stage.get("note"):  # incomplete: what was not measured, and why
        return [lead, (word, style), f": {stage['note']}."]
    out = [lead, (word, style), ": outside the threshold: ", (", ".join(failed) or "—", "code"), "."]
    return out + ([f" Also: {stage['note']}."] if stage.get("note") else [])
