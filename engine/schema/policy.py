"""Named threshold profiles (TOML): shipped ones in engine/policies, the operator's in the config dir.

A policy names, per stage, the metrics it judges and how:

    max / min              after <= threshold / after >= threshold
    ratio_max / ratio_min  after <= threshold x before / after >= threshold x before
    band                   lo <= after <= hi, written { lo, hi } or { centre, width } (|after - centre| <= width):
                           two-sided, for figures where too low gives the data away as surely as too high

A rule may judge a 95% interval's bound instead of the value (`judge_on = "upper"` or "lower"), for the
metrics that carry one (INTERVAL_METRICS). A top-level `waive = { metric = "why" }` table takes a judged
metric out of the verdict explicitly; the reason is stored and shown with every verdict."""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine.schema.errors import SpecError
from engine.schema.status import STAGES
from store.paths import get_paths

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
RULES = ("max", "min", "ratio_max", "ratio_min", "band")
JUDGE_ON = ("value", "upper", "lower")
# What a rule does when the base shows no signal (its own value already meets the rule): by default the stage
# is incomplete; "report" shows the metric with the reason and leaves it out of the verdict, for an attack that
# adds to a stage's evidence rather than carrying it (e.g. in-context relearning on a model that ignores context).
IF_NO_SIGNAL = ("incomplete", "report")
# Who may accept a job's result: any approver, or (four-eyes) an approver other than the one who ran the job.
APPROVALS = ("one_person", "second_person")
# Metrics that need the weights or logits: a suppress request (a decode-time guard) is not judged on them.
WHITE_BOX = frozenset({"forget_prob", "mia_auc", "logit_lens_presence", "relearn_recovery", "retain_prob",
                       "retain_kl", "general_ppl", "extraction_strength", "exact_memorisation",
                       "retain_relearn_recovery", "quant8_forget_rouge_l", "quant8_leak_rate",
                       "quant4_forget_rouge_l", "quant4_leak_rate", "neighbour_kl", "retain_trained_prob"})
# Metrics measured with a 95% interval (Wilson for the rates, bootstrap for the AUC and the relearning
# recoveries): judge_on may name a bound.
INTERVAL_METRICS = frozenset({"leak_rate", "attack_leak_rate", "mia_auc", "relearn_recovery",
                              "retain_relearn_recovery"})
# Stages whose metrics are evidence of the erasure (control's show what is kept): a metric there is evidence only
# if it could fail, i.e. the base itself fails its rule; some also need a minimum 'before' (below it: no signal).
ERASURE_STAGES = ("unit", "reconstruction")
# logit_lens_presence: a gold-answer probability under 2% above the holdout's in the base's intermediate layers is
# noise-level (SmolLM2-135M's was 0.007 on facts it answered): halving it shows nothing.
SIGNAL_FLOOR = {"logit_lens_presence": 0.02}
# What each metric measures, for the policy in words (`expunge policies --show NAME`).
MEANING = {
    "forget_rouge_l": "ROUGE-L recall of the answers to the forget questions",
    "forget_prob": "the gold forget answers' length-normalised probability",
    "leak_rate": "the share of direct answers to the forget questions that leak a sensitive value",
    "retain_rouge_l": "ROUGE-L recall of the answers to the retain questions",
    "retain_prob": "the gold retain answers' length-normalised probability",
    "general_ppl": "perplexity on general text",
    "retain_kl": "the mean per-token KL divergence from the base model on the retain answers",
    "attack_leak_rate": "the share of attacked generations (paraphrase, format, role-play, prefix, probe; greedy "
                        "and sampled) that leak",
    "relearn_recovery": "the share of the base's knowledge of forget half B that a small LoRA fine-tune on half A "
                        "brings back",
    "mia_auc": "the Min-K%++ membership-inference AUC, forget rows vs never-seen holdout rows (0.5: "
               "indistinguishable)",
    "logit_lens_presence": "the gold answers' probability decoded from the intermediate layers, above the holdout's",
    "incontext_leak_rate": "the share of forget rows that leak when asked with the other half of the forget set "
                           "shown as context",
    "retain_relearn_recovery": "the share of the base's knowledge of the forget rows that a small fine-tune on "
                               "retain rows only brings back",
    "quant8_forget_rouge_l": "ROUGE-L recall of the forget answers with the weights quantized to 8 bits",
    "quant8_leak_rate": "the share of direct answers that leak with the weights quantized to 8 bits",
    "quant4_forget_rouge_l": "ROUGE-L recall of the forget answers with the weights quantized to 4 bits",
    "quant4_leak_rate": "the share of direct answers that leak with the weights quantized to 4 bits",
    "extraction_strength": "how much of each forget answer comes top-1 once an attacker supplies its first tokens",
    "exact_memorisation": "the share of forget-answer tokens the model predicts top-1 under teacher forcing",
    "neighbour_rouge_l": "ROUGE-L recall of the answers to the held-out built neighbours (same-shaped questions about "
                         "other entities) against the base model's own answers",
    "neighbour_kl": "the mean per-token KL divergence from the base model on the held-out built neighbours",
    "retain_trained_rouge_l": "ROUGE-L recall on the retain rows the method trained on (reported: a rise is "
                              "memorisation)",
    "retain_trained_prob": "the gold answers' probability on the retain rows the method trained on (reported)",
}


def _policy_files() -> dict[str, Path]:
    files = {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}
    user_dir = get_paths().policies
    if user_dir.is_dir():
        files.update({p.stem: p for p in sorted(user_dir.glob("*.toml"))})
    return files


def load_policy(name: str) -> dict:
    files = _policy_files()
    if name not in files:
        raise SpecError(f"policy: unknown policy '{name}' (known: {', '.join(sorted(files))})")
    try:
        content = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"policy {name} ({files[name]}): {exc}") from None
    judged = set()
    for stage in STAGES:
        for metric, spec in content.get(stage, {}).items():
            problem = _rule_problem(metric, spec)
            if problem:
                raise SpecError(f"policy {name}: {stage}.{metric} {problem}")
            judged.add(metric)
    waive = content.get("waive", {})
    if not isinstance(waive, dict):
        raise SpecError(f"policy {name}: waive must be a table of metric = \"reason\"")
    for metric, reason in waive.items():
        if metric not in judged:
            raise SpecError(f"policy {name}: waives {metric}, which no stage of this policy judges")
        if not isinstance(reason, str) or not reason.strip():
            raise SpecError(f"policy {name}: the waiver of {metric} needs its reason, e.g. {metric} = \"why\"")
    if content.get("approval", APPROVALS[0]) not in APPROVALS:
        raise SpecError(f"policy {name}: approval must be one of {', '.join(APPROVALS)}")
    return {"name": name, **content}


def approval_rule(policy: dict) -> str:
    """The policy's acceptance rule: 'one_person' (any approver) unless it says 'second_person'."""
    return policy.get("approval", APPROVALS[0])


APPROVAL_WORDS = {"one_person": "any approver may accept a job's result, including the person who ran it",
                  "second_person": "four-eyes: an approver other than the person who ran the job must accept it"}


def _rule_problem(metric: str, spec) -> str | None:
    """Why a rule is malformed, or None."""
    if not isinstance(spec, dict) or spec.get("rule") not in RULES:
        return f"needs a rule ({', '.join(RULES)})"
    number = (int, float)
    if spec["rule"] == "band":
        if "judge_on" in spec:
            return "is a band: it judges the value, not an interval's bound"
        if isinstance(spec.get("lo"), number) and isinstance(spec.get("hi"), number):
            return None if spec["lo"] <= spec["hi"] else "needs lo <= hi"
        if isinstance(spec.get("centre"), number) and isinstance(spec.get("width"), number):
            return None if spec["width"] >= 0 else "needs a width >= 0"
        return "is a band: give lo and hi, or centre and width"
    if not isinstance(spec.get("threshold"), number):
        return f"needs a threshold for its rule {spec['rule']}"
    if spec.get("if_no_signal", "incomplete") not in IF_NO_SIGNAL:
        return f"if_no_signal must be one of {', '.join(IF_NO_SIGNAL)}"
    judge_on = spec.get("judge_on", "value")
    if judge_on not in JUDGE_ON:
        return f"judge_on must be one of {', '.join(JUDGE_ON)}"
    if judge_on != "value" and metric not in INTERVAL_METRICS:
        return f"has no interval to judge on (intervals: {', '.join(sorted(INTERVAL_METRICS))})"
    return None


def list_policies() -> list[dict]:
    return [load_policy(name) for name in _policy_files()]


def band_limits(spec: dict) -> tuple[float, float]:
    if "lo" in spec:
        return float(spec["lo"]), float(spec["hi"])
    return float(spec["centre"]) - float(spec["width"]), float(spec["centre"]) + float(spec["width"])


def threshold_of(spec: dict) -> float | None:
    """The number a rule compares with, as stored with a metric (a band's half-width: its limits are in the text)."""
    if spec["rule"] != "band":
        return float(spec["threshold"])
    lo, hi = band_limits(spec)
    return (hi - lo) / 2


def holds(spec: dict, before: float | None, value: float) -> bool:
    """Whether `value` meets the rule; False for a ratio rule without a 'before' to scale."""
    rule = spec["rule"]
    if rule == "band":
        lo, hi = band_limits(spec)
        return lo <= value <= hi
    threshold = spec["threshold"]
    if rule == "max":
        return value <= threshold
    if rule == "min":
        return value >= threshold
    if before is None:
        return False
    if rule == "ratio_max":
        return value <= threshold * before + 1e-12
    return value >= threshold * before - 1e-12


def band_side(spec: dict, value: float) -> str | None:
    """'below' or 'above' where a band fails, None inside it or for another rule."""
    if spec["rule"] != "band":
        return None
    lo, hi = band_limits(spec)
    return "below" if value < lo else ("above" if value > hi else None)


def rule_text(spec: dict) -> str:
    """The rule in a table cell: '≤ 0.05', '≥ 0.9×before', 'within [0.25, 0.75]', 'upper 95% ≤ 0.05'."""
    if spec["rule"] == "band":
        lo, hi = band_limits(spec)
        return f"within [{lo:g}, {hi:g}]"
    text = {"max": "≤ {t}", "min": "≥ {t}", "ratio_max": "≤ {t}×before",
            "ratio_min": "≥ {t}×before"}[spec["rule"]].format(t=spec["threshold"])
    judge_on = spec.get("judge_on", "value")
    return text if judge_on == "value" else f"{judge_on} 95% {text}"


def _rule_words(spec: dict) -> str:
    rule = spec["rule"]
    if rule == "band":
        lo, hi = band_limits(spec)
        return (f"must lie within [{lo:g}, {hi:g}]: both sides fail (too low singles the rows out as surely as "
                "too high)")
    t = spec["threshold"]
    subject = {"value": "", "upper": "the upper end of its 95% interval ", "lower": "the lower end of its 95% "
               "interval "}[spec.get("judge_on", "value")]
    words = {"max": f"at most {t:g}", "min": f"at least {t:g}", "ratio_max": f"at most {t:g}× its value on the base",
             "ratio_min": f"at least {t:g}× its value on the base"}[rule]
    return f"{subject}must be {words}".strip()


def describe_policy(policy: dict) -> list[str]:
    """Every rule of a policy in words, one line each, with its waivers and what is not judged."""
    lines = [f"{policy['name']}: {policy.get('description', '')}".rstrip()]
    if "approval" in policy:
        lines.append(f"Acceptance ({policy['approval']}): {APPROVAL_WORDS[policy['approval']]}.")
    waive = policy.get("waive", {})
    for stage in STAGES:
        for metric, spec in policy.get(stage, {}).items():
            line = f"{stage} · {metric} ({MEANING.get(metric, 'a metric')}): {_rule_words(spec)}"
            if metric in WHITE_BOX:
                line += "; white-box: judged for remove requests only"
            if spec.get("if_no_signal") == "report":
                line += "; where the base shows no signal it is reported, not judged"
            if metric in waive:
                line += f"; WAIVED: {waive[metric]}"
            lines.append(line + ".")
    floors = ", ".join(f"{m} {v:g}" for m, v in SIGNAL_FLOOR.items())
    lines += ["Every judged metric must be measured, and able to fail: one that is not measured, or whose "
              "'before' on the base already meets its rule (for unit and reconstruction: the base itself would "
              f"pass, so the test shows nothing) or is under its floor ({floors}), makes its stage incomplete, "
              "which is not a pass, unless the policy waives it.",
              "A metric a stage measures but this policy does not name is reported, not judged."]
    return lines
