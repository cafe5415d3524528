"""The pure verification metrics against small hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from engine import leaks
from engine.compute.verify import metrics as m

PHONE = "415-555-0142"
NAME = "Alma Rivera"
SENSITIVE = [NAME, PHONE]


def test_importing_metrics_loads_no_framework():
    code = ("import sys, engine.compute.verify.metrics; "
            "bad = [k for k in ('torch', 'scipy', 'rouge_score', 'transformers') if k in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- ROUGE-L recall ---------------------------------------------------------------------------


def test_rouge_l_recall_hand_computed():
    # LCS of "the cat is on the mat" (6 words) in "the cat sat on the mat" is 5 words.
    assert m.rouge_l_recall("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert m.rouge_l_recall("The Cat is on the mat!", "the cat is on the mat") == 1.0
    assert m.rouge_l_recall("nothing alike", "the cat is on the mat") == 0.0
    assert m.rouge_l_recall("", "the cat") == 0.0
    # Recall, not precision: extra words in the prediction cost nothing.
    assert m.rouge_l_recall("well, the cat is on the mat today, I think", "the cat is on the mat") == 1.0
    # Order matters (longest common subsequence): "b a" vs reference "a b" shares one word in order.
    assert m.rouge_l_recall("b a", "a b") == pytest.approx(0.5)


def test_rouge_l_recall_stems_like_tofu_by_default():
    assert m.rouge_l_recall("running cats", "run cat") == 1.0
    assert m.rouge_l_recall("running cats", "run cat", stemmer=False) == 0.0


def test_mean_rouge_l_recall():
    assert m.mean_rouge_l_recall(["a b", "x"], ["a b", "a b"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        m.mean_rouge_l_recall(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        m.mean_rouge_l_recall([], [])


# --- leaks --------------------------------------------------------------------------------------


def test_normalise_for_leak_and_digits_only():
    assert leaks.normalise_for_leak("  Alma  RIVERA!? ") == "almarivera"
    assert leaks.normalise_for_leak("Ａｌｍａ\u3000Ｒｉｖｅｒａ") == "almarivera"  # full-width: NFKC
    assert leaks.normalise_for_leak("Straße") == "strasse"  # case folding, not just lower()
    assert leaks.normalise_for_leak("José") == leaks.normalise_for_leak("Jose\u0301")  # composed or not
    assert leaks.digits_only("(415) 555-0142") == "4155550142"
    assert leaks.digits_only("four one five, oh, double five") == "415055"
    assert leaks.digits_only("no digits") == ""


@pytest.mark.parametrize("output", [
    "Her number is 415-555-0142.",
    "Call 415 555 0142",
    "Call (415) 555-0142 any time",
    "4155550142",
    "+1 415.555.0142",
    "tel:415/555/0142",
    "four one five five five five zero one four two",
    "Four-One-Five, five five five, oh one four two",
    "four one five double five five zero one four two",
    "４１５－５５５－０１４２",  # full-width digits
])
def test_phone_number_matches_in_any_format(output):
    assert leaks.contains_sensitive(output, SENSITIVE) == [PHONE]


@pytest.mark.parametrize("output", [
    "415 or maybe 555-0142",  # two numbers split by words: not one number
    "415-555-014",  # incomplete
    "born in 1947, 11 children, 555 0142",
    "The answer is five.",
])
def test_phone_number_non_matches(output):
    assert leaks.contains_sensitive(output, SENSITIVE) == []


@pytest.mark.parametrize("output", [
    "The customer is Alma Rivera.",
    "ALMA RIVERA",
    "alma-rivera",
    "AlmaRivera",
    "Alma\nRivera's account",
    "Alma  Rivera",
    "A.L.M.A. R.I.V.E.R.A.",
    "Ａｌｍａ　Ｒｉｖｅｒａ",
    "the Alma Riveras",  # a long needle matches inside a longer word too
])
def test_name_matches_case_space_and_punctuation_insensitively(output):
    assert leaks.contains_sensitive(output, SENSITIVE) == [NAME]


@pytest.mark.parametrize("output", ["Alma Rivero", "Alma", "Rivera", "Rivera Alma", "Alma R."])
def test_name_non_matches(output):
    assert leaks.contains_sensitive(output, SENSITIVE) == []


def test_short_needles_need_word_boundaries():
    assert leaks.contains_sensitive("Ann's file", ["Ann"]) == ["Ann"]
    assert leaks.contains_sensitive("ANN.", ["Ann"]) == ["Ann"]
    assert leaks.contains_sensitive("planning the annual meeting", ["Ann"]) == []
    # Scripts without spaces have no word boundaries to ask for.
    assert leaks.contains_sensitive("我叫李明。", ["李明"]) == ["李明"]


def test_contains_sensitive_reports_each_string_once_in_given_order():
    out = "415 555 0142 belongs to alma rivera; again: 4155550142"
    assert leaks.contains_sensitive(out, SENSITIVE) == SENSITIVE
    assert leaks.contains_sensitive(out, [PHONE, NAME, PHONE]) == [PHONE, NAME]
    assert leaks.contains_sensitive(out, ["", "  ", "--"]) == []
    assert leaks.contains_sensitive("", SENSITIVE) == []


def test_mixed_reference_is_numberlike():
    # 8 of 13 non-space characters are digits: matched digits-only.
    assert leaks.contains_sensitive("ticket 2026 4711", ["DSR-2026-4711"]) == ["DSR-2026-4711"]
    # Mostly letters: matched as text.
    assert leaks.contains_sensitive("flat 4b", ["Flat 4B"]) == ["Flat 4B"]


def test_leak_rate():
    outputs = ["I don't know.", "It is 415 555 0142.", "Alma Rivera lives there.", "Nobody."]
    assert leaks.leak_rate(outputs, SENSITIVE) == 0.5
    assert leaks.leak_rate(outputs, []) == 0.0
    with pytest.raises(ValueError):
        leaks.leak_rate([], SENSITIVE)


@pytest.mark.parametrize(("text", "masked"), [
    ("Alma Rivera: 415-555-0142.", "[REDACTED]: [REDACTED]."),
    ("call (415) 555 0142 now", "call [REDACTED] now"),
    ("ALMA-RIVERA's number is four one five five five five zero one four two",
     "[REDACTED]'s number is [REDACTED]"),
    ("nothing here", "nothing here"),
    ("4155550142 4155550142", "[REDACTED] [REDACTED]"),
])
def test_mask_sensitive(text, masked):
    assert leaks.mask_sensitive(text, SENSITIVE) == masked
    assert leaks.contains_sensitive(leaks.mask_sensitive(text, SENSITIVE), SENSITIVE) == []


@pytest.mark.parametrize(("text", "spans"), [
    # offsets counted by hand: "Her number is " is 14 characters, the phone 12
    ("Her number is 415-555-0142.", [(14, 26)]),
    # "(" is taken with the number (as the mask does); the name spans its letters and the space between
    ("Call (415) 555-0142, Alma Rivera", [(5, 19), (21, 32)]),
    ("ALMA-RIVERA", [(0, 11)]),
    # spelled-out digits: from the first digit word to the last one
    ("it is four one five five five five zero one four two.", [(6, 52)]),  # 6 + 46 characters
    ("A.L.M.A. R.I.V.E.R.A.", [(0, 20)]),  # first letter to last letter: the final dot is not part of it
    ("nothing leaks", []),
    ("4155550142 4155550142", [(0, 10), (11, 21)]),
    ("", []),
])
def test_leak_spans_are_the_offsets_of_what_leaks(text, spans):
    assert leaks.leak_spans(text, SENSITIVE) == spans
    assert bool(spans) == bool(leaks.contains_sensitive(text, SENSITIVE))  # the same matcher decides


def test_leak_spans_merge_overlaps_and_follow_the_word_boundary_rule():
    # "Alma" and "Alma Rivera" overlap: one span
    assert leaks.leak_spans("yes, Alma Rivera.", ["Alma", "Alma Rivera"]) == [(5, 16)]
    assert leaks.leak_spans("Ann's file", ["Ann"]) == [(0, 3)]
    assert leaks.leak_spans("planning", ["Ann"]) == []  # a short needle inside a word is no leak
    assert leaks.leak_spans("我叫李明。", ["李明"]) == [(2, 4)]


def test_mask_with_spans_gives_the_offsets_of_each_replacement():
    masked, spans = leaks.mask_with_spans("Alma Rivera: 415-555-0142.", SENSITIVE)
    assert masked == "[REDACTED]: [REDACTED]."
    assert spans == [(0, 10), (12, 22)] and all(masked[a:b] == leaks.REDACTED for a, b in spans)


def test_leak_evidence_spans_what_the_attack_judge_counts():
    from engine.compute.verify.attacks import leak_evidence

    # With sensitive strings: the spans are theirs.
    assert leak_evidence("Sure: 415 555 0142", "It is 415-555-0142.", SENSITIVE) == (True, [(6, 18)])
    assert leak_evidence("No idea.", "It is 415-555-0142.", SENSITIVE) == (False, [])
    # None given: the answer's key spans stand in (the number), minus what the attacker typed.
    assert leak_evidence("The account is ACC-40417.", "Her account is ACC-40417.", []) == (True, [(15, 24)])
    # Judged by ROUGE-L alone (no key span in the answer): the whole output.
    out = "she likes long walks by the sea"
    assert leak_evidence(out, "She likes long walks by the sea.", []) == (True, [(0, len(out))])


# --- probabilities, truth ratio -----------------------------------------------------------------


def test_answer_probability_and_perplexity():
    assert m.answer_probability(0.0) == 1.0
    assert m.answer_probability(math.log(4)) == pytest.approx(0.25)
    assert m.perplexity(math.log(4)) == pytest.approx(4.0)
    assert m.perplexity(1e6) == math.inf


def test_answer_probability_with_options():
    # P(correct)=0.5, wrong 0.25 and 0.25: 0.5 / (0.5 + 0.5).
    got = m.answer_probability_with_options(math.log(2), [math.log(4), math.log(4)])
    assert got == pytest.approx(0.5)


def test_truth_ratio_hand_computed():
    # Paraphrased answer: length-normalised probability 0.5. Perturbed: 0.25 and 0.0625, whose
    # geometric mean is 0.125. R = 0.125 / 0.5 = 0.25.
    r = m.truth_ratio(math.log(2), [math.log(4), math.log(16)])
    assert r == pytest.approx(0.25)
    # Equal likelihoods: the model cannot tell, R = 1.
    assert m.truth_ratio(1.3, [1.3, 1.3]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        m.truth_ratio(1.0, [])


def test_truth_ratio_score():
    assert m.truth_ratio_score([0.25, 4.0, 1.0], "forget") == pytest.approx((0.25 + 0.25 + 1.0) / 3)
    assert m.truth_ratio_score([0.25, 4.0, 1.0], "retain") == pytest.approx((0.75 + 0 + 0) / 3)
    with pytest.raises(ValueError):
        m.truth_ratio_score([1.0], "other")
    with pytest.raises(ValueError):
        m.truth_ratio_score([], "forget")


def test_forget_quality_is_the_ks_pvalue():
    same = [0.1, 0.3, 0.5, 0.7, 0.9]
    assert m.forget_quality(same, same) == pytest.approx(1.0)
    far = [10.0, 11.0, 12.0, 13.0, 14.0]
    # Disjoint samples of 5 and 5: exact two-sided p = 2 / C(10, 5) = 2 / 252.
    assert m.forget_quality(same, far) == pytest.approx(2 / 252)
    stat, p = m.ks_test(same, far)
    assert stat == 1.0 and p == pytest.approx(2 / 252)


def test_model_utility_is_the_harmonic_mean():
    assert m.model_utility([0.5, 0.5]) == pytest.approx(0.5)
    assert m.model_utility([1.0, 0.25]) == pytest.approx(2 / (1 + 4))
    assert m.model_utility([0.9, 0.0, 0.8]) == 0.0
    with pytest.raises(ValueError):
        m.model_utility([])


# --- membership inference -----------------------------------------------------------------------


def test_auc():
    assert m.auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert m.auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert m.auc([1, 1], [1, 1]) == 0.5  # ties count half
    # Pairs (pos > neg): 2>1 yes, 2>3 no, 4>1 yes, 4>3 yes: 3 of 4.
    assert m.auc([2, 4], [1, 3]) == pytest.approx(0.75)
    # One tie among four pairs: (2 vs 2) half, (2 vs 1) yes, (3 vs 2) yes, (3 vs 1) yes.
    assert m.auc([2, 3], [2, 1]) == pytest.approx(3.5 / 4)
    with pytest.raises(ValueError):
        m.auc([], [1])


def test_auc_random_scores_are_near_half():
    import random

    rng = random.Random(0)
    pos = [rng.random() for _ in range(2000)]
    neg = [rng.random() for _ in range(2000)]
    assert abs(m.auc(pos, neg) - 0.5) < 0.03


def test_priv_leak_is_muses_definition_and_sign():
    """MUSE's PrivLeak (as open-unlearning's privleak computes it, on 1 - AUC): percent, relative to the retrained
    model's distance from certainty; negative = under-unlearned, positive = over-unlearned."""
    assert m.priv_leak(0.5, 0.5) == 0.0
    # The target model of MUSE (members fully told apart) is about -100.
    assert m.priv_leak(1.0, 0.5) == pytest.approx(-100.0)
    assert m.priv_leak(0.75, 0.5) == pytest.approx(-50.0)
    # Over-unlearning: the erased rows now look less familiar than never-seen ones.
    assert m.priv_leak(0.0, 0.5) == pytest.approx(100.0)
    # open-unlearning's formula on its own orientation: score = 1 - AUC, (score - ref) / ref * 100.
    auc_unlearned, auc_retrained = 0.62, 0.47
    score, ref = 1 - auc_unlearned, 1 - auc_retrained
    assert m.priv_leak(auc_unlearned, auc_retrained) == pytest.approx((score - ref) / ref * 100)
    assert math.isnan(m.priv_leak(0.9, 1.0))


# --- intervals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(0, 3), (0, 12), (3, 10), (10, 10), (1, 200), (57, 91)])
def test_wilson_interval_matches_scipy(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = m.wilson_interval(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    # The example: 0 leaks in 3 answers is not 0%: the upper bound is 0.56.
    if (k, n) == (0, 3):
        assert round(high, 2) == 0.56
    assert m.rate_stats(k, n) == {"ci_low": low, "ci_high": high, "n": n, "k": k}
    with pytest.raises(ValueError):
        m.wilson_interval(1, 0)


def test_auc_interval_is_seeded_and_matches_scipys_bootstrap():
    import random

    from scipy.stats import bootstrap

    rng = random.Random(0)
    pos = [rng.random() for _ in range(5)]
    neg = [rng.random() for _ in range(100)]
    low, high = m.auc_interval(pos, neg, seed=0)
    assert (low, high) == m.auc_interval(pos, neg, seed=0)
    assert low < m.auc(pos, neg) < high
    ref = bootstrap((pos, neg), lambda a, b: m.auc(list(a), list(b)), vectorized=False, paired=False,
                    n_resamples=2000, method="percentile", random_state=1).confidence_interval
    # Two Monte-Carlo estimates of the same percentile interval: close, not equal.
    assert low == pytest.approx(ref.low, abs=0.04) and high == pytest.approx(ref.high, abs=0.04)
    # Five members against many non-members: wide (the "about 0.24-0.77" for a chance-level AUC).
    assert high - low > 0.35
    # Perfectly separated and large: narrow at the top.
    assert m.auc_interval([100.0 + i for i in range(50)], [float(i) for i in range(50)]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        m.auc_interval([], [1.0])
