"""Student's t distribution and the two t-tests a sweep report needs, in pure Python (no scipy).

    paired([-0.02, -0.03, -0.01])          # variant minus baseline, one difference per seed
    welch([3.01, 3.05], [3.10, 3.08, 3.12])  # seeds that do not match: unpaired, unequal variances

Each test returns the mean difference, its 95% confidence interval, the two-sided p-value and the
degrees of freedom. The t CDF is the regularized incomplete beta function,
P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2), evaluated with its continued fraction (modified Lentz);
the quantile inverts the CDF by bisection, which is slow by numerical standards and instant for
the handful of groups a report has.
"""

from __future__ import annotations

import math
from typing import Any

CONFIDENCE = 0.95
_EPS = 1e-15  # continued-fraction convergence: near float64 resolution
_TINY = 1e-300  # keeps Lentz's denominators away from zero
_MAX_TERMS = 10_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), converging fast for x < (a + 1) / (a + b + 2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_TERMS + 1):
        # two steps per m: the even term m(b-m)x / ((a+2m-1)(a+2m)), then the odd one
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            result *= step
        if abs(step - 1.0) < _EPS:
            return result
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    # the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) keeps the fraction in its fast region
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student t with df degrees of freedom (df need not be an integer)."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    tail = two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on `cdf` (monotone, so it cannot miss)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


def _mean_var(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    return mean, sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def _result(test: str, diff: float, se: float, df: float, n: int) -> dict[str, Any]:
    if se == 0.0:  # every seed moved by exactly the same amount: no spread to weigh the mean against
        p = 1.0 if diff == 0.0 else 0.0
        return {"test": test, "n": n, "diff": diff, "ci_low": diff, "ci_high": diff, "p": p, "df": df, "se": 0.0}
    half = quantile(1.0 - (1.0 - CONFIDENCE) / 2.0, df) * se
    return {"test": test, "n": n, "diff": diff, "ci_low": diff - half, "ci_high": diff + half,
            "p": two_sided_p(diff / se, df), "df": df, "se": se}


def paired(diffs: list[float]) -> dict[str, Any]:
    """Paired t-test of the per-seed differences (variant - baseline) against 0; needs 2 or more."""
    if len(diffs) < 2:
        raise ValueError(f"a paired t-test needs at least 2 differences, got {len(diffs)}")
    mean, var = _mean_var(diffs)
    return _result("paired", mean, math.sqrt(var / len(diffs)), len(diffs) - 1.0, len(diffs))


def welch(a: list[float], b: list[float]) -> dict[str, Any]:
    """Welch's unpaired t-test of mean(a) - mean(b) (unequal variances); needs 2 or more in each."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values on each side, got {len(a)} and {len(b)}")
    (mean_a, var_a), (mean_b, var_b) = _mean_var(a), _mean_var(b)
    va, vb = var_a / len(a), var_b / len(b)
    se = math.sqrt(va + vb)
    # Welch-Satterthwaite degrees of freedom; with no spread on either side any df gives the same answer
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else len(a) + len(b) - 2.0
    return _result("welch", mean_a - mean_b, se, df, min(len(a), len(b)))


__all__ = ["CONFIDENCE", "cdf", "incomplete_beta", "paired", "quantile", "two_sided_p", "welch"]
