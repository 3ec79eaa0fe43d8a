"""Uncertainty of measured accuracies: a confidence interval for one accuracy, a test for the difference of two.

An accuracy measured on ``n`` test rows is a binomial proportion; with the few hundred to few thousand rows of a
quick comparison its 95% interval spans several points, so two methods a point apart are often indistinguishable.
Pure Python (``math``, ``statistics``): no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from promptcore.stats import binomial_interval


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's exact test from the discordant rows of two classifiers on the same rows.

    Rows both get right or both get wrong say nothing about which is better; under the null hypothesis of equal
    accuracy each discordant row is equally likely to favour either, so ``only_a`` is Binomial(only_a + only_b, 1/2).
    The p-value is twice the smaller tail, capped at 1, computed exactly in integers.

    Args:
        only_a: rows the first classifier gets right and the second wrong.
        only_b: rows the second gets right and the first wrong.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be non-negative, got only_a={only_a}, only_b={only_b}")
    m = only_a + only_b
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**m)


def two_proportion_z_test(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test for accuracies ``correct_a/n_a`` and ``correct_b/n_b``.

    For accuracies measured on independent rows, or when the per-row outcomes are unknown. On the same rows it
    ignores the pairing and is conservative: McNemar's test (:func:`mcnemar_exact`) is the right one there.
    """
    for name, c, n in (("a", correct_a, n_a), ("b", correct_b, n_b)):
        if n <= 0 or not 0 <= c <= n:
            raise ValueError(f"accuracy {name}: expected 0 <= correct <= n with n > 0, got {c}/{n}")
    pooled = (correct_a + correct_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):  # both all wrong or all right: no difference to test
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (correct_a / n_a - correct_b / n_b) / se
    return min(1.0, 2 * NormalDist().cdf(-abs(z)))


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_accuracies`.

    Attributes:
        difference: accuracy of a minus accuracy of b, as a fraction.
        p_value: two-sided p-value of ``test``.
        test: ``"McNemar exact"`` (per-row outcomes on the same rows) or ``"two-proportion z"``.
    """

    difference: float
    p_value: float
    test: str

    def significant(self, level: float = 0.05) -> bool:
        """Whether the difference is significant at ``level`` (p-value below it)."""
        return self.p_value < level


def compare_accuracies(
    correct_a: int,
    n_a: int,
    correct_b: int,
    n_b: int,
    rows_a: Sequence[bool] | None = None,
    rows_b: Sequence[bool] | None = None,
) -> Comparison:
    """Tests whether two accuracies differ: McNemar's exact test when both per-row outcomes on the same rows are
    given, else the two-proportion z-test.

    Args:
        correct_a, n_a, correct_b, n_b: the two accuracies as counts.
        rows_a, rows_b: optional per-row correctness of each, in the same row order; they must agree with the
            counts.
    """
    paired = rows_a is not None and rows_b is not None
    if paired:
        if len(rows_a) != n_a or len(rows_b) != n_b or n_a != n_b:
            raise ValueError(
                f"per-row outcomes: expected two lists of the same rows, {n_a} and {n_b} long, got {len(rows_a)} and "
                f"{len(rows_b)}; a paired test needs both classifiers on the same rows"
            )
        if sum(map(bool, rows_a)) != correct_a or sum(map(bool, rows_b)) != correct_b:
            raise ValueError(
                f"per-row outcomes disagree with the counts: {sum(map(bool, rows_a))} and {sum(map(bool, rows_b))} "
                f"rows correct, counts {correct_a} and {correct_b}"
            )
    if correct_a < 0 or correct_b < 0 or n_a <= 0 or n_b <= 0 or correct_a > n_a or correct_b > n_b:
        raise ValueError(f"expected 0 <= correct <= n with n > 0, got {correct_a}/{n_a} and {correct_b}/{n_b}")
    difference = correct_a / n_a - correct_b / n_b
    if paired:
        only_a = sum(1 for a, b in zip(rows_a, rows_b) if a and not b)
        only_b = sum(1 for a, b in zip(rows_a, rows_b) if b and not a)
        return Comparison(difference, mcnemar_exact(only_a, only_b), "McNemar exact")
    return Comparison(difference, two_proportion_z_test(correct_a, n_a, correct_b, n_b), "two-proportion z")
