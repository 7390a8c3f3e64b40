"""Multiple imputation: the reference cohort (age ~3 % missing) and a simulated MAR covariate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError
from pooled.models.cox import CoxSpec, fit_cox, fit_cox_mice
from pooled.models.imputation import nelson_aalen_at_times, rubin_pool

COVARIATES = ("ctc_positive", "subtype", "age", "node_positive", "grade3")


def spec(**kw) -> CoxSpec:
    base = dict(
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        categorical=(("subtype", "luminal_a"),),
        term_lr_tests=False,
    )
    base.update(kw)
    return CoxSpec(**base)


def test_mi_on_reference_cohort_close_to_complete_case(cohort):
    cc = fit_cox(cohort, spec())
    mi = fit_cox(cohort, spec(missing="mice", n_imputations=5, seed=3))
    assert mi.term_names == cc.term_names
    assert mi.n == len(cohort) and cc.n == 2899
    # 3 % MCAR-like missingness in one covariate: estimates move by a fraction of an SE ...
    assert np.all(np.abs(mi.coefficients - cc.coefficients) < 0.5 * cc.std_errors)
    # ... and the SEs barely shrink (3 % more patients, plus imputation variance)
    assert np.all(mi.std_errors >= cc.std_errors * 0.97)
    frame = mi.to_frame()
    assert (frame["model"] == "cox_stratified_mi").all()
    assert np.isnan(mi.loglik) and mi.df is not None and np.all(mi.df > 10)
    assert set(mi.per_imputation["imputation"]) == {1, 2, 3, 4, 5}


def test_mi_imputes_categorical_and_binary_covariates(cohort):
    rng = np.random.default_rng(4)
    df = cohort.copy()
    df.loc[rng.uniform(size=len(df)) < 0.05, "subtype"] = np.nan
    df.loc[rng.uniform(size=len(df)) < 0.05, "grade3"] = np.nan
    cc = fit_cox(df, spec())
    mi = fit_cox_mice(df, spec(missing="mice", n_imputations=3, seed=2), n_cycles=5)
    assert mi.n == len(df) and cc.n < len(df)
    assert np.all(np.abs(mi.coefficients - cc.coefficients) < 0.6 * cc.std_errors)
    assert np.all(mi.std_errors < 1.1 * cc.std_errors)


def test_mi_is_reproducible_with_a_seed(cohort):
    a = fit_cox(cohort, spec(missing="mice", n_imputations=2, seed=9))
    b = fit_cox(cohort, spec(missing="mice", n_imputations=2, seed=9))
    np.testing.assert_array_equal(a.coefficients, b.coefficients)


def test_mi_recovers_truth_with_covariate_missing_at_random():
    rng = np.random.default_rng(20)
    n = 3000
    centre = rng.integers(0, 6, n)
    marker = rng.binomial(1, 0.35, n).astype(float)
    age = rng.normal(60, 10, n) + 4 * marker
    grade = np.where(rng.uniform(size=n) < 0.4, "high", "low")
    truth = {"marker": 0.5, "age": 0.03, "gradehigh": 0.4}
    lp = (
        truth["marker"] * marker
        + truth["age"] * (age - 60)
        + truth["gradehigh"] * (grade == "high")
    )
    t_event = 50 * rng.exponential(size=n) / np.exp(lp)
    t_cens = rng.uniform(12, 100, n)
    time = np.ceil(np.minimum(t_event, t_cens))
    event = (t_event <= t_cens).astype(int)
    # age missing at random: more often for marker-positive patients and for events
    p_miss = 1 / (1 + np.exp(-(-2.0 + 1.2 * marker + 0.8 * event)))
    age_obs = np.where(rng.uniform(size=n) < p_miss, np.nan, age)
    df = pd.DataFrame(
        {"centre": centre, "marker": marker, "age": age_obs, "grade": grade, "t": time, "e": event}
    )
    assert 0.15 < df["age"].isna().mean() < 0.45
    s = CoxSpec(
        duration="t",
        event="e",
        covariates=("marker", "age", "grade"),
        categorical=(("grade", "low"),),
        missing="mice",
        n_imputations=8,
        seed=1,
        term_lr_tests=False,
    )
    mi = fit_cox(df, s)
    frame = mi.to_frame().set_index("term")
    for term, value in truth.items():
        lower, upper = np.log(frame.loc[term, "ci_lower"]), np.log(frame.loc[term, "ci_upper"])
        assert lower < value < upper, (term, lower, value, upper)


def test_rubin_pool_formulas():
    est = np.array([[1.0, 0.0], [1.4, 0.2], [0.6, -0.2], [1.0, 0.0]])
    cov = np.tile(np.diag([0.04, 0.01]), (4, 1, 1))
    q, total, df = rubin_pool(est, cov, np.inf)
    np.testing.assert_allclose(q, [1.0, 0.0])
    between = np.var(est, axis=0, ddof=1)
    np.testing.assert_allclose(np.diag(total), [0.04, 0.01] + 1.25 * between)
    lam = 1.25 * between / np.diag(total)
    np.testing.assert_allclose(df, 3 / lam**2)
    _, _, df_small = rubin_pool(est, cov, 20.0)
    assert np.all(df_small < df)


def test_nelson_aalen_handles_ties():
    h = nelson_aalen_at_times(np.array([2.0, 1.0, 2.0, 3.0, 3.0]), np.array([1, 1, 0, 1, 1]))
    np.testing.assert_allclose(h, [1 / 5 + 1 / 4, 1 / 5, 1 / 5 + 1 / 4, 0.45 + 1.0, 0.45 + 1.0])


def test_interaction_lr_test_refuses_mice(cohort):
    from pooled.models.cox import interaction_lr_test

    with pytest.raises(ConfigError, match="complete_case"):
        interaction_lr_test(
            cohort, spec(missing="mice", interactions=(("ctc_positive", "subtype"),))
        )


def _imputation_design(n: int = 600, seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [np.ones(n), rng.normal(60, 10, n), rng.integers(0, 2, n), rng.exponential(1.0, n)]
    )
    return X, rng


@pytest.mark.parametrize("units", [1e-3, 365.25])
def test_imputation_models_do_not_depend_on_covariate_units(units):
    # rescaling a predictor (age in days, or in thousands of years) rescales its coefficient
    # and changes nothing else: ridges and stopping rules are relative
    from pooled.models.imputation import _draw_linear, _fit_logistic, _fit_multinomial

    X, rng = _imputation_design()
    eta = -6 + 0.08 * X[:, 1] + 0.7 * X[:, 2] - 0.4 * X[:, 3]
    y = (rng.uniform(size=len(eta)) < 1 / (1 + np.exp(-eta))).astype(float)
    codes = np.minimum((rng.uniform(size=len(eta)) * 3 + 0.02 * (X[:, 1] - 60)).astype(int), 2)
    codes = np.clip(codes, 0, 2)
    scale = np.array([1.0, units, 1.0, 1.0])
    Xs = X * scale

    beta, cov = _fit_logistic(X, y)
    beta_s, cov_s = _fit_logistic(Xs, y)
    np.testing.assert_allclose(beta_s * scale, beta, rtol=1e-8)
    np.testing.assert_allclose(cov_s * np.outer(scale, scale), cov, rtol=1e-7)

    B, _ = _fit_multinomial(X, codes, 3)
    B_s, _ = _fit_multinomial(Xs, codes, 3)
    np.testing.assert_allclose(B_s * scale[:, None], B, rtol=1e-8)

    cont = 0.5 * X[:, 1] + rng.normal(size=len(eta))
    a = _draw_linear(X, cont, X[:20], np.random.default_rng(1))
    b = _draw_linear(Xs, cont, Xs[:20], np.random.default_rng(1))
    np.testing.assert_allclose(b, a, rtol=1e-9)
