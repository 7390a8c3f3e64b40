"""PH test: R's cox.zph (survival 3.5-3, terms = FALSE) and a simulated non-PH effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.errors import DataError
from pooled.models.cox import CoxSpec, cox_fit_arrays, fit_cox
from pooled.models.zph import proportional_hazards_arrays, proportional_hazards_test

COVARIATES = ("ctc_positive", "subtype", "age", "node_positive", "grade3")


@pytest.fixture(scope="module")
def fitted(cohort: pd.DataFrame, survival_reference: dict):
    names = survival_reference["cox_strat_efron"]["coef"]
    levels = ["luminal_a"] + [k.removeprefix("subtype") for k in names if k.startswith("subtype")]
    df = cohort.copy()
    df["subtype"] = pd.Categorical(df["subtype"], categories=levels)
    spec = CoxSpec(
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        categorical=(("subtype", "luminal_a"),),
        tol=1e-12,
        term_lr_tests=False,
    )
    return df, fit_cox(df, spec)


@pytest.mark.parametrize("transform", ["km", "rank", "identity"])
def test_cox_zph_matches_r(transform, fitted, survival_reference):
    ref = survival_reference["cox_zph_strat_efron_no_terms_grouping"][transform]
    df, fit = fitted
    res = proportional_hazards_test(fit, df, transform=transform)
    assert list(res.table["term"]) == ref["terms"]
    np.testing.assert_allclose(res.table["chisq"], ref["chisq"], rtol=1e-6)
    assert list(res.table["df"]) == ref["df"]
    np.testing.assert_allclose(res.table["p_value"], ref["p"], atol=1e-6)
    # residuals for plotting: one row per event, a column per term, sorted by stratum/time
    assert res.residuals.shape == (fit.events, 3 + len(fit.term_names))
    assert res.residuals.groupby("stratum")["time"].apply(lambda t: t.is_monotonic_increasing).all()
    frame = res.to_frame()
    assert list(frame["term"]) == ref["terms"]
    assert (frame["transform"] == transform).all()


def test_scaled_residuals_centre_on_the_coefficients(fitted):
    df, fit = fitted
    res = proportional_hazards_test(fit, df)
    # the scaled Schoenfeld residuals are beta + V^-1 (x - xbar); their events-mean is near beta
    means = res.residuals[list(fit.term_names)].mean().to_numpy()
    np.testing.assert_allclose(means, fit.coefficients, atol=3 * fit.std_errors.max())


def test_terms_grouping_tests_a_factor_jointly(fitted):
    df, fit = fitted
    res = proportional_hazards_test(fit, df, terms=True)
    assert list(res.table["term"]) == [
        "ctc_positive",
        "subtype",
        "age",
        "node_positive",
        "grade3",
        "GLOBAL",
    ]
    assert res.table.set_index("term").loc["subtype", "df"] == 3
    ungrouped = proportional_hazards_test(fit, df)
    assert res.table["chisq"].iloc[-1] == pytest.approx(ungrouped.table["chisq"].iloc[-1])


def test_detects_a_time_varying_effect():
    rng = np.random.default_rng(7)
    n = 3000
    x = rng.binomial(1, 0.5, n).astype(float)
    # hazard ratio exp(1.0) before 12 months, exp(-0.5) after: piecewise exponential
    rate0 = 1 / 30
    t1 = rng.exponential(1 / (rate0 * np.exp(1.0 * x)))
    late = t1 > 12
    t2 = 12 + rng.exponential(1 / (rate0 * np.exp(-0.5 * x)))
    t = np.where(late, t2, t1)
    c = rng.uniform(24, 60, n)
    time, event = np.ceil(np.minimum(t, c)), (t <= c).astype(float)
    fit = cox_fit_arrays(x[:, None], time, event)
    res = proportional_hazards_arrays(x[:, None], time, event, None, fit.coefficients)
    assert res.table["p_value"].iloc[0] < 1e-6
    # and under proportional hazards the test does not reject
    t_ph = rng.exponential(1 / (rate0 * np.exp(0.5 * x)))
    time, event = np.ceil(np.minimum(t_ph, c)), (t_ph <= c).astype(float)
    fit = cox_fit_arrays(x[:, None], time, event)
    res = proportional_hazards_arrays(x[:, None], time, event, None, fit.coefficients)
    assert res.table["p_value"].iloc[0] > 0.01


def test_data_must_match_the_fit(fitted):
    df, fit = fitted
    with pytest.raises(DataError, match="fitted to"):
        proportional_hazards_test(fit, df.iloc[:1000], transform="km")
