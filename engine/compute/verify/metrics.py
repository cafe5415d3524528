"""Verification metrics as plain functions: numbers and strings in, numbers out. No torch here.

Definitions follow the benchmarks so that numbers are comparable with published results:

- TOFU (Maini et al. 2024) and its maintained implementation, locuslab/open-unlearning
  (src/evals/metrics/memorization.py, utils.py): ROUGE-L recall, answer probability, truth ratio,
  forget quality, model utility.
- MUSE (Shi et al. 2024): PrivLeak from membership-inference AUCs.
- 95% intervals: Wilson for rates, a seeded stratified bootstrap for AUCs (numpy).
- Min-K%++ (Zhang et al. 2024) scores are computed in `engine.compute.verify.scoring`; their AUC here.

scipy, numpy and rouge-score are imported inside the functions that need them, so importing this module
costs nothing (the API server and the console's report code import it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

REDACTED = "[REDACTED]"

# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------

_SCORERS: dict[bool, object] = {}


def _rouge_scorer(stemmer: bool):
    scorer = _SCORERS.get(stemmer)
    if scorer is None:
        from rouge_score import rouge_scorer

        scorer = _SCORERS[stemmer] = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)
    return scorer


def rouge_l_recall(prediction: str, reference: str, *, stemmer: bool = True) -> float:
    """ROUGE-L recall of `prediction` against `reference`: LCS length / reference length, in words.

    rouge-score's tokenizer lowercases and drops everything but [a-z0-9]. `stemmer=True` (Porter)
    is what TOFU and open-unlearning use (`RougeScorer(["rouge1", "rougeL"], use_stemmer=True)`),
    so it is the default here: numbers then compare with the papers'."""
    return float(_rouge_scorer(stemmer).score(reference, prediction)["rougeL"].recall)


def rouge_l_f1(prediction: str, reference: str, *, stemmer: bool = False) -> float:
    """ROUGE-L F1 of `prediction` against `reference`, without stemming by default: MUSE's VerbMem score
    (its RougeEvalLogger: `RougeScorer([...], use_stemmer=False)`, the "rougeL" F-measure)."""
    return float(_rouge_scorer(stemmer).score(reference, prediction)["rougeL"].fmeasure)


def mean_rouge_l_recall(preds: Sequence[str], refs: Sequence[str], *, stemmer: bool = True) -> float:
    """Mean per-pair ROUGE-L recall (TOFU's "ROUGE" on a split)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("mean_rouge_l_recall of no pairs")
    return sum(rouge_l_recall(p, r, stemmer=stemmer) for p, r in zip(preds, refs, strict=True)) / len(preds)


# ---------------------------------------------------------------------------------------------
# Probabilities (TOFU)
# ---------------------------------------------------------------------------------------------


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def answer_probability(mean_nll: float) -> float:
    """TOFU's length-normalised answer probability P(a|q)^(1/|a|) = exp(-mean token NLL)."""
    return _exp(-mean_nll)


def answer_probability_with_options(correct_nll: float, wrong_nlls: Sequence[float]) -> float:
    """TOFU's probability on real-authors / world-facts: the correct answer's length-normalised
    probability divided by the sum over the correct and every perturbed (wrong) answer,
    P(a)^(1/|a|) / (P(a)^(1/|a|) + sum_i P(w_i)^(1/|w_i|)), all from mean token NLLs."""
    correct = _exp(-correct_nll)
    total = correct + sum(_exp(-w) for w in wrong_nlls)
    return correct / (total + 1e-10)


def perplexity(mean_nll: float) -> float:
    """exp(mean token NLL)."""
    return _exp(mean_nll)


def truth_ratio(paraphrased_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """TOFU's truth ratio for one question, from per-token mean NLLs (natural log):

        R_truth = ( prod_i P(a_pert_i | q)^(1/|a_pert_i|) )^(1/n)  /  P(a_para | q)^(1/|a_para|)

    i.e. the geometric mean of the length-normalised probabilities of the n perturbed (wrong)
    answers divided by the length-normalised probability of the paraphrased (correct) answer.
    Since P(a)^(1/|a|) = exp(-mean_nll(a)), this is exp(paraphrased_nll - mean_i perturbed_nll_i).
    Below 1: the model prefers the truth; around 1: it cannot tell (the goal on forget data).

    open-unlearning computes the same wrong_prob / correct_prob (its aggregate_to_1D averages the
    perturbed answers' mean losses before exponentiating)."""
    if not perturbed_nlls:
        raise ValueError("truth_ratio needs at least one perturbed answer")
    return _exp(paraphrased_nll - sum(perturbed_nlls) / len(perturbed_nlls))


def truth_ratio_score(ratios: Sequence[float], kind: str = "forget") -> float:
    """TOFU's aggregate truth-ratio score in [0, 1], higher is better (open-unlearning's aggregators):

    - kind="forget" ("closer_to_1_better"): mean(min(R, 1/R)); 1 when the model cannot tell the
      true answer from the wrong ones.
    - kind="retain" ("true_better", the truth-ratio term of model utility): mean(max(0, 1 - R));
      high when the model clearly prefers the truth."""
    if not ratios:
        raise ValueError("truth_ratio_score of no ratios")
    if kind == "forget":
        vals = [min(r, 1.0 / (r + 1e-10)) for r in ratios]
    elif kind == "retain":
        vals = [max(0.0, 1.0 - r) for r in ratios]
    else:
        raise ValueError(f"kind must be 'forget' or 'retain', not {kind!r}")
    return sum(vals) / len(vals)


def ks_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (statistic, p-value)."""
    from scipy.stats import ks_2samp

    if not a or not b:
        raise ValueError("ks_test needs two non-empty samples")
    res = ks_2samp(list(a), list(b))
    return float(res.statistic), float(res.pvalue)


def forget_quality(unlearned_truth_ratios: Sequence[float], retain_model_truth_ratios: Sequence[float]) -> float:
    """TOFU's forget quality: the KS-test p-value between the unlearned model's forget-set truth
    ratios and those of a model trained on the retain set only. High (e.g. > 0.05) means the two
    distributions are indistinguishable. (open-unlearning tests 1/R; KS is invariant under a
    monotone map applied to both samples, so the p-value is the same.)"""
    return ks_test(unlearned_truth_ratios, retain_model_truth_ratios)[1]


def model_utility(values: Sequence[float]) -> float:
    """TOFU's model utility: harmonic mean of the utility metrics (probability, ROUGE and truth-ratio
    score on retain, real authors and world facts); 0 as soon as any of them is 0."""
    if not values:
        raise ValueError("model_utility of no values")
    if any(v < 0 for v in values):
        raise ValueError("model_utility needs non-negative values")
    if any(v == 0 for v in values):
        return 0.0
    from scipy.stats import hmean

    return float(hmean(list(values)))


# ---------------------------------------------------------------------------------------------
# Membership inference
# ---------------------------------------------------------------------------------------------


def auc(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> float:
    """ROC AUC of a score that should be higher for positives (members) than negatives (non-members):
    P(score_pos > score_neg) + 0.5 * P(tie), i.e. the Mann-Whitney U of the positives / (n_pos * n_neg).
    0.5 = no better than chance: after true removal, forget vs holdout should look like this."""
    if not scores_pos or not scores_neg:
        raise ValueError("auc needs positive and negative scores")
    from scipy.stats import rankdata

    n_pos, n_neg = len(scores_pos), len(scores_neg)
    ranks = rankdata(list(scores_pos) + list(scores_neg))  # ties get their average rank
    u_pos = float(ranks[:n_pos].sum()) - n_pos * (n_pos + 1) / 2
    return u_pos / (n_pos * n_neg)


def priv_leak(auc_unlearned: float, auc_retrained: float) -> float:
    """MUSE's PrivLeak, in percent, from membership-inference AUCs (forget vs holdout) of the unlearned model
    and of a model never trained on the forget set (the retrained reference):

        PrivLeak = (AUC_retrained - AUC_unlearned) / (1 - AUC_retrained) * 100

    Our AUCs score members high (1 = the forget rows are told apart from never-seen ones). MUSE reports
    1 - that AUC, and open-unlearning's `privleak` (src/evals/metrics/privacy.py) converts to MUSE's
    orientation before taking the relative difference (score - ref) / ref * 100; this is the same number.
    Near 0 is good; negative = under-unlearned (the unlearned model still singles the rows out: MUSE's
    target model is about -100), positive = over-unlearned (the rows now look *less* familiar than
    never-seen ones, which gives them away too). NaN where undefined (a reference AUC of 1)."""
    if auc_retrained >= 1.0:
        return math.nan
    return (auc_retrained - auc_unlearned) / (1.0 - auc_retrained) * 100.0


# ---------------------------------------------------------------------------------------------
# Intervals (95%): a figure from a handful of rows carries its uncertainty
# ---------------------------------------------------------------------------------------------

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
AUC_BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (no continuity correction), as
    scipy.stats.binomtest(k, n).proportion_ci(method="wilson") gives it. Unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0/n: 0 leaks in 12 is [0, 0.24], not 0."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval needs 0 <= successes <= trials and trials > 0, not {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0/n and n/n the bound is exactly 0 (1); the formula leaves rounding dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def rate_stats(successes: int, trials: int) -> dict:
    """A rate's record beside its value: its Wilson interval, n and count (what the verdict stores)."""
    low, high = wilson_interval(successes, trials)
    return {"ci_low": low, "ci_high": high, "n": trials, "k": successes}


def auc_interval(scores_pos: Sequence[float], scores_neg: Sequence[float], *, resamples: int = AUC_BOOTSTRAP_RESAMPLES,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A seeded percentile bootstrap interval of `auc`, resampling positives and negatives separately
    (the two samples are independent; a stratified bootstrap keeps both present in every resample).

    Exact per resample without re-ranking: with C[i, j] = 1 if pos_i > neg_j, 0.5 on a tie, 0 else, a
    resample that draws pos_i a_i times and neg_j b_j times has AUC = a C b / (n_pos n_neg)."""
    import numpy as np

    if not scores_pos or not scores_neg:
        raise ValueError("auc_interval needs positive and negative scores")
    pos, neg = np.asarray(scores_pos, dtype=float), np.asarray(scores_neg, dtype=float)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    draws_pos = rng.multinomial(len(pos), np.full(len(pos), 1.0 / len(pos)), size=resamples)
    draws_neg = rng.multinomial(len(neg), np.full(len(neg), 1.0 / len(neg)), size=resamples)
    aucs = np.einsum("bi,ij,bj->b", draws_pos, wins, draws_neg) / (len(pos) * len(neg))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)
