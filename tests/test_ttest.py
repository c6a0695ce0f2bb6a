"""sweepctl.views.ttest against tabulated Student t values, closed forms and hand-computed tests."""

from __future__ import annotations

import math

import pytest

from sweepctl.views import ttest


# Two-sided 95% critical values t_{0.975, df}, as printed in every t table (3 decimals).
@pytest.mark.parametrize(("df", "t975"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
                                          (10, 2.228), (30, 2.042), (120, 1.980), (1e7, 1.960)])
def test_quantile_matches_the_t_table(df: float, t975: float) -> None:
    assert ttest.quantile(0.975, df) == pytest.approx(t975, abs=5e-4)
    assert ttest.quantile(0.025, df) == pytest.approx(-t975, abs=5e-4)


@pytest.mark.parametrize("t", [-30.0, -3.0, -0.4, 0.0, 0.7, 2.0, 12.706, 1e3])
def test_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t: float) -> None:
    # df=1 is the Cauchy distribution; df=2 has the closed form 1/2 + t / (2 sqrt(2 + t²))
    assert ttest.cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert ttest.cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


def _p_by_integration(t: float, df: float, steps: int = 20_000) -> float:
    """2 * ∫_|t|^∞ of the t density, by Simpson's rule after u = 1/(1+x) (an independent check)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def integrand(u: float) -> float:  # density(x) dx with x = 1/u - 1, dx = du / u²
        if u == 0.0:
            return 0.0
        x = abs(t) + 1.0 / u - 1.0
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df)) / (u * u)

    h = 1.0 / steps
    total = integrand(0.0) + integrand(1.0)
    total += sum((4 if k % 2 else 2) * integrand(k * h) for k in range(1, steps))
    return 2 * total * h / 3


@pytest.mark.parametrize(("t", "df"), [(2.0, 10), (1.7320508, 4.41176), (3.4641016, 2), (0.5, 30), (5.0, 3.5)])
def test_two_sided_p_matches_a_numerical_integral_of_the_density(t: float, df: float) -> None:
    assert ttest.two_sided_p(t, df) == pytest.approx(_p_by_integration(t, df), rel=1e-7)


def test_two_sided_p_at_the_tabulated_critical_values_is_five_percent() -> None:
    for df, t975 in ((2, 4.302653), (4, 2.776445), (30, 2.042272)):  # 6-decimal table values
        assert ttest.two_sided_p(t975, df) == pytest.approx(0.05, abs=1e-6)
    assert ttest.two_sided_p(2.0, 10) == pytest.approx(0.07339, abs=1e-5)  # the familiar t=2, df=10 value


def test_paired_test_by_hand() -> None:
    # differences -0.02, -0.03, -0.01: mean -0.02, sd 0.01, SE 0.01/√3, t = -2√3 on 2 df
    r = ttest.paired([-0.02, -0.03, -0.01])
    se = 0.01 / math.sqrt(3)
    assert (r["test"], r["n"], r["df"]) == ("paired", 3, 2.0)
    assert r["diff"] == pytest.approx(-0.02, abs=1e-15)
    assert r["se"] == pytest.approx(se, rel=1e-12)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(-0.02 - 4.302653 * se, abs=1e-8),
                                           pytest.approx(-0.02 + 4.302653 * se, abs=1e-8))
    t = 2 * math.sqrt(3)  # df=2 closed form: p = 1 - t / sqrt(2 + t²)
    assert r["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert r["ci_low"] < 0 < r["ci_high"]  # every seed better, and still not significant with 3 seeds


def test_welch_test_by_hand() -> None:
    # means 2.5 and 5, variances 5/3 and 20/3 over 4 each: SE² = 5/12 + 20/12, Welch-Satterthwaite df
    r = ttest.welch([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    va, vb = 5 / 12, 20 / 12
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 3)
    assert (r["test"], r["n"]) == ("welch", 4)
    assert r["diff"] == -2.5 and r["se"] == pytest.approx(math.sqrt(va + vb), rel=1e-12)
    assert r["df"] == pytest.approx(df, rel=1e-12) and df == pytest.approx(4.41176, abs=1e-5)
    assert r["p"] == pytest.approx(_p_by_integration(2.5 / math.sqrt(va + vb), df), rel=1e-7)
    half = ttest.quantile(0.975, df) * math.sqrt(va + vb)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(-2.5 - half), pytest.approx(-2.5 + half))


def test_no_spread_and_too_few_values() -> None:
    same = ttest.paired([-0.01, -0.01])
    assert (same["p"], same["ci_low"], same["ci_high"]) == (0.0, -0.01, -0.01)
    assert ttest.paired([0.0, 0.0])["p"] == 1.0
    with pytest.raises(ValueError, match="at least 2 differences, got 1"):
        ttest.paired([0.1])
    with pytest.raises(ValueError, match="at least 2 values on each side, got 1 and 3"):
        ttest.welch([0.1], [0.1, 0.2, 0.3])
