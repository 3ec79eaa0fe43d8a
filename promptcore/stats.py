"""Uncertainty of measured scores: confidence intervals for an accuracy (a proportion) and for a mean score in
[0, 1] (token F1). Pure Python (``math``, ``statistics``): no SciPy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from .errors import UserError


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 at 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence: expected a level strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def binomial_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``correct`` out of ``n`` rows.

    Wilson rather than the textbook normal (Wald) interval ``p ± z·sqrt(p(1-p)/n)``: Wald's coverage falls well below
    the nominal level for small ``n`` or accuracies near 0 or 1, and it collapses to a zero-width interval at 0/n and
    n/n, exactly where classifiers often sit. Wilson inverts the score test, stays inside [0, 1], keeps close to
    nominal coverage down to a few dozen rows, and needs no iteration (Brown, Cai & DasGupta, Statistical Science
    2001, recommend it for these reasons).

    Args:
        correct: rows classified correctly, ``0 <= correct <= n``.
        n: rows evaluated, positive.
        confidence: the interval's nominal coverage, strictly between 0 and 1.

    Returns:
        ``(low, high)`` as fractions in [0, 1].
    """
    if n <= 0:
        raise ValueError(f"n: an interval needs at least one evaluated row, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct: expected 0 <= correct <= n={n}, got {correct}")
    z = z_value(confidence)
    p = correct / n
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # exact bounds at the ends: the formula gives 0 and 1 there up to rounding
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == n else min(1.0, center + half)
    return low, high


def mean_interval(total: float, total_sq: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval for the mean of ``n`` per-row scores in [0, 1] (token F1), from their sum and
    the sum of their squares: ``mean ± z·s/sqrt(n)`` with ``s`` the sample standard deviation, clipped to [0, 1].
    Scores that are all 0 or all 1 (the proportion case) give Wilson's interval instead (:func:`binomial_interval`),
    which does not collapse to a point there.

    Raises:
        ValueError: ``n`` not positive.
    """
    if n <= 0:
        raise ValueError(f"n: an interval needs at least one evaluated row, got n={n}")
    mean = total / n
    if math.isclose(total, total_sq, abs_tol=1e-9 * n):  # every score 0 or 1: a proportion
        return binomial_interval(round(total), n, confidence)
    variance = max(0.0, (total_sq - n * mean * mean) / max(n - 1, 1))
    half = z_value(confidence) * math.sqrt(variance / n)
    return max(0.0, mean - half), min(1.0, mean + half)


__all__ = ["binomial_interval", "mean_interval", "z_value"]
