"""The performance measures of Morris, White and Crowther (2019) and their Monte Carlo SEs.

A hand-worked example pins each formula; simulated "studies" with known truth check that each
measure recovers its value and that each Monte Carlo SE is the spread of its measure over
repeated studies (the property the MCSE is for).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pooled.study.performance import MEASURES, performance_measures, performance_wide

Z = float(stats.norm.ppf(0.975))


def _estimates(b: np.ndarray, se: np.ndarray, method: str = "m") -> pd.DataFrame:
    return pd.DataFrame({"endpoint": "os", "method": method, "estimate": b, "std_error": se,
                         "ci_lower": b - Z * se, "ci_upper": b + Z * se})  # fmt: skip


def _measure(table: pd.DataFrame, name: str) -> tuple[float, float]:
    row = table.loc[table["measure"] == name].iloc[0]
    return float(row["estimate"]), float(row["mcse"])


def test_a_hand_worked_example() -> None:
    b = np.array([0.1, 0.3, 0.2, 0.6])
    se = np.array([0.1, 0.2, 0.1, 0.2])
    table = performance_measures(_estimates(b, se), {"os": 0.25})
    n, mean, sd = 4, 0.3, math.sqrt(((b - 0.3) ** 2).sum() / 3)
    assert _measure(table, "bias") == pytest.approx((mean - 0.25, sd / 2))
    assert _measure(table, "empirical_se") == pytest.approx((sd, sd / math.sqrt(6)))
    sq = (b - 0.25) ** 2
    mse = sq.mean()
    assert _measure(table, "mse") == pytest.approx((mse, math.sqrt(((sq - mse) ** 2).sum() / 12)))
    v = se**2
    model = math.sqrt(v.mean())
    var_v = v.var(ddof=1)
    assert _measure(table, "model_se") == pytest.approx(
        (model, math.sqrt(var_v / (4 * n * model**2)))
    )
    ratio = model / sd
    assert _measure(table, "relative_error_model_se") == pytest.approx(
        (100 * (ratio - 1), 100 * ratio * math.sqrt(var_v / (4 * n * model**4) + 1 / (2 * (n - 1))))
    )
    covered = ((b - Z * se <= 0.25) & (0.25 <= b + Z * se)).mean()
    assert _measure(table, "coverage") == pytest.approx(
        (covered, math.sqrt(covered * (1 - covered) / n))
    )
    power = ((b - Z * se > 0) | (b + Z * se < 0)).mean()
    assert _measure(table, "power")[0] == pytest.approx(power)
    assert set(table["measure"]) == set(MEASURES) and (table["n_replicates"] == 4).all()


def test_failed_replicates_are_counted_not_used() -> None:
    est = _estimates(np.array([0.1, np.nan, 0.3]), np.array([0.1, np.nan, 0.1]))
    table = performance_measures(est, {"os": 0.2})
    assert (table["n_replicates"] == 2).all() and (table["n_failed"] == 1).all()
    assert _measure(table, "bias")[0] == pytest.approx(0.0, abs=1e-15)


def test_a_correct_estimator_is_recovered_within_its_monte_carlo_error() -> None:
    rng = np.random.default_rng(3)
    n, truth, sigma = 4000, 0.3, 0.1
    b = rng.normal(truth, sigma, n)
    se = sigma * np.sqrt(rng.chisquare(200, n) / 200)  # an estimated SE, unbiased for sigma^2
    wide = performance_wide(performance_measures(_estimates(b, se), {"os": truth})).iloc[0]
    assert abs(wide["bias"]) < 3 * wide["bias_mcse"]
    assert abs(wide["empirical_se"] - sigma) < 3 * wide["empirical_se_mcse"]
    assert abs(wide["relative_error_model_se"]) < 3 * wide["relative_error_model_se_mcse"]
    assert abs(wide["coverage"] - 0.95) < 3 * wide["coverage_mcse"]
    assert wide["bias_within_mc_error"]


def test_each_monte_carlo_se_is_the_spread_of_its_measure_over_studies() -> None:
    rng = np.random.default_rng(11)
    studies, n = 600, 150
    values: dict[str, list[float]] = {m: [] for m in MEASURES}
    errors: dict[str, list[float]] = {m: [] for m in MEASURES}
    for _ in range(studies):
        b = rng.normal(0.2, 0.1, n) + 0.02  # a biased estimator with a misestimated SE
        se = 0.09 * np.sqrt(rng.chisquare(30, n) / 30)
        table = performance_measures(_estimates(b, se), {"os": 0.2})
        for m in MEASURES:
            value, mcse = _measure(table, m)
            values[m].append(value)
            errors[m].append(mcse)
    for m in (
        "bias",
        "empirical_se",
        "mse",
        "model_se",
        "relative_error_model_se",
        "coverage",
        "power",
    ):
        spread = float(np.std(values[m], ddof=1))
        typical = float(np.sqrt(np.mean(np.square(errors[m]))))
        if spread == 0:  # power 1 in every study: nothing to spread
            assert typical == 0, m
            continue
        # the SD of a measure over 600 studies is known to about 3 %; allow 12 %
        assert typical == pytest.approx(spread, rel=0.12), m
