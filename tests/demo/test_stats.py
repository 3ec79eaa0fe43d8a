"""demo.stats: the Wilson interval against published values and its defining equation, McNemar's exact test
against its definition, the two-proportion z-test against a hand computation, and the choice between them."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from demo.stats import binomial_interval, compare_accuracies, mcnemar_exact, two_proportion_z_test

Z95 = NormalDist().inv_cdf(0.975)


@pytest.mark.parametrize(
    "correct, n, low, high",
    [
        # published 95% Wilson intervals (Newcombe, Statistics in Medicine 1998; Brown, Cai & DasGupta 2001)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (80, 100, 0.7112, 0.8666),
        (1000, 1000, 0.9962, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(correct, n, low, high):
    got = binomial_interval(correct, n)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("correct, n", [(1, 10), (5, 10), (80, 100), (814, 1000), (999, 1000), (3, 7)])
def test_wilson_bounds_solve_the_score_equation(correct, n):
    """The Wilson bounds are the proportions p at which the observed p-hat sits exactly z standard errors away,
    with the standard error taken at p: (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat = correct / n
    for p in binomial_interval(correct, n):
        assert (p_hat - p) ** 2 == pytest.approx(Z95**2 * p * (1 - p) / n, rel=1e-9)


def test_wilson_interval_is_symmetric_contains_the_estimate_and_narrows_with_n():
    for correct, n in [(0, 10), (3, 10), (37, 50), (999, 1000)]:
        low, high = binomial_interval(correct, n)
        mirror_low, mirror_high = binomial_interval(n - correct, n)
        assert (low, high) == pytest.approx((1 - mirror_high, 1 - mirror_low), abs=1e-12)
        assert 0.0 <= low <= correct / n <= high <= 1.0
    widths = [math.fsum((-low, high)) for low, high in (binomial_interval(4 * k, 5 * k) for k in (2, 10, 100, 1000))]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 4
    low90, high90 = binomial_interval(80, 100, confidence=0.90)
    low99, high99 = binomial_interval(80, 100, confidence=0.99)
    assert low99 < binomial_interval(80, 100)[0] < low90 and high90 < binomial_interval(80, 100)[1] < high99


@pytest.mark.parametrize(
    "args, match",
    [((0, 0), r"n: an interval needs at least one evaluated row, got n=0"), ((11, 10), r"correct: expected 0 <= correct <= n=10, got 11")],
)
def test_wilson_interval_refuses_impossible_counts(args, match):
    with pytest.raises(ValueError, match=match):
        binomial_interval(*args)
    with pytest.raises(ValueError, match=r"confidence: expected a level strictly between 0 and 1 \(e.g. 0.95\), got 95"):
        binomial_interval(5, 10, confidence=95)


def _mcnemar_by_definition(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value as the total probability of the splits of the discordant rows no more likely than
    the observed one, under Binomial(m, 1/2)."""
    m = only_a + only_b
    probs = [math.comb(m, k) / 2**m for k in range(m + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[only_a] * (1 + 1e-12)))


def test_mcnemar_exact_on_known_cases_and_by_its_definition():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    for a, b in [(0, 1), (2, 7), (10, 25), (40, 60), (300, 340)]:
        assert mcnemar_exact(a, b) == mcnemar_exact(b, a)
        assert mcnemar_exact(a, b) == pytest.approx(_mcnemar_by_definition(a, b), rel=1e-9)
    with pytest.raises(ValueError, match=r"discordant counts must be non-negative, got only_a=-1, only_b=2"):
        mcnemar_exact(-1, 2)


def test_two_proportion_z_test_against_a_hand_computation():
    # 45/100 vs 30/100: pooled 0.375, se = sqrt(0.375 * 0.625 * 0.02) = 0.068465, z = 2.1909, p = 0.02846
    assert two_proportion_z_test(45, 100, 30, 100) == pytest.approx(0.02846, abs=2e-5)
    assert two_proportion_z_test(45, 100, 30, 100) == two_proportion_z_test(30, 100, 45, 100)
    assert two_proportion_z_test(50, 100, 50, 100) == 1.0
    assert two_proportion_z_test(10, 10, 20, 20) == 1.0  # both perfect: nothing to test
    with pytest.raises(ValueError, match=r"accuracy b: expected 0 <= correct <= n with n > 0, got 5/0"):
        two_proportion_z_test(1, 2, 5, 0)


def test_compare_accuracies_uses_mcnemar_on_paired_rows_and_the_z_test_otherwise():
    # 1000 rows: a gets 9 rows right that b gets wrong, and no row the other way round (81.4% vs 80.5%)
    rows_b = [True] * 805 + [False] * 195
    rows_a = [True] * 814 + [False] * 186
    paired = compare_accuracies(814, 1000, 805, 1000, rows_a, rows_b)
    assert paired.test == "McNemar exact" and paired.p_value == pytest.approx(2 / 2**9)
    assert paired.difference == pytest.approx(0.009) and paired.significant()
    unpaired = compare_accuracies(814, 1000, 805, 1000)
    assert unpaired.test == "two-proportion z" and unpaired.p_value == two_proportion_z_test(814, 1000, 805, 1000)
    assert not unpaired.significant() and unpaired.p_value > 0.5  # the same gap, without the pairing: noise
    # the same accuracies with the disagreements going both ways (59 and 50 rows): not significant either way
    rows_a_mixed = [True] * 50 + [False] * 50 + [True] * 755 + [True] * 9 + [False] * 136
    rows_b_mixed = [False] * 50 + [True] * 50 + [True] * 755 + [False] * 9 + [False] * 136
    mixed = compare_accuracies(814, 1000, 805, 1000, rows_a_mixed, rows_b_mixed)
    assert mixed.p_value == pytest.approx(mcnemar_exact(59, 50)) and not mixed.significant()


def test_compare_accuracies_refuses_rows_that_do_not_match_the_counts():
    with pytest.raises(ValueError, match=r"a paired test needs both classifiers on the same rows"):
        compare_accuracies(2, 3, 1, 3, [True, True, False], [True, False])
    with pytest.raises(ValueError, match=r"per-row outcomes disagree with the counts: 2 and 1 rows correct, counts 2 and 2"):
        compare_accuracies(2, 3, 2, 3, [True, True, False], [True, False, False])
