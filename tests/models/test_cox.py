"""Cox engine: reference tests against R survival 3.5-3, recovery on simulated consortia,
agreement with lifelines, and the data errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import (
    CoxSpec,
    cox_fit_arrays,
    cox_score_residuals,
    effect_within_levels,
    fit_cox,
    interaction_lr_test,
)
from pooled.results import TIDY_COLUMNS

REL = 1e-6  # coefficients, SEs, log-likelihoods, test statistics
P_ABS = 1e-6  # p-values
COVARIATES = ("ctc_positive", "subtype", "age", "node_positive", "grade3")


@pytest.fixture(scope="module")
def cohort_r(cohort: pd.DataFrame, survival_reference: dict) -> pd.DataFrame:
    """The cohort with subtype levels in the order R used (read off R's coefficient names)."""
    names = survival_reference["cox_strat_efron"]["coef"]
    levels = ["luminal_a"] + [k.removeprefix("subtype") for k in names if k.startswith("subtype")]
    df = cohort.copy()
    df["subtype"] = pd.Categorical(df["subtype"], categories=levels)
    return df


def make_spec(**kw) -> CoxSpec:
    base = dict(
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        categorical=(("subtype", "luminal_a"),),
        tol=1e-12,  # the reference used coxph.control(eps = 1e-12)
    )
    base.update(kw)
    return CoxSpec(**base)


INTERACTION = (("ctc_positive", "subtype"),)
CASES = {
    "cox_strat_efron": {},
    "cox_strat_breslow": {"ties": "breslow"},
    "cox_unstratified_efron": {"strata": ()},
    "cox_strat_interaction_efron": {"interactions": INTERACTION},
}


@pytest.mark.parametrize("key", list(CASES))
def test_coxph_matches_r(key, cohort_r, survival_reference):
    ref = survival_reference[key]
    res = fit_cox(cohort_r, make_spec(**CASES[key]))
    assert list(res.term_names) == list(ref["coef"])
    assert res.n == ref["n"] == 2899
    assert res.events == ref["nevent"]
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    assert res.loglik == pytest.approx(ref["loglik"], rel=REL)
    assert res.loglik_null == pytest.approx(ref["loglik_null"], rel=REL)
    assert res.lr_test == pytest.approx(ref["lr_test"], rel=REL)
    assert res.wald_test == pytest.approx(ref["wald_test"], rel=REL)
    assert res.score_test == pytest.approx(ref["score_test"], rel=REL)
    assert res.iterations == ref["iterations"]
    assert res.converged


def test_default_tolerance_still_matches_r(cohort_r, survival_reference):
    ref = survival_reference["cox_strat_interaction_efron"]
    res = fit_cox(cohort_r, make_spec(interactions=INTERACTION, tol=1e-10, term_lr_tests=False))
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)


def test_robust_cluster_centre_matches_r(cohort_r, survival_reference):
    ref = survival_reference["cox_strat_robust_cluster_centre"]
    res = fit_cox(cohort_r, make_spec(cluster="centre", term_lr_tests=False))
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["robust_se"].values()), rtol=REL)
    np.testing.assert_allclose(res.naive_std_errors, list(ref["naive_se"].values()), rtol=REL)
    frame = res.to_frame()
    np.testing.assert_allclose(frame["std_error"], list(ref["robust_se"].values()), rtol=REL)
    np.testing.assert_allclose(frame["naive_std_error"], list(ref["naive_se"].values()), rtol=REL)


def test_interaction_lr_test_matches_r(cohort_r, survival_reference):
    ref = survival_reference["interaction_lr_test"]
    res = interaction_lr_test(cohort_r, make_spec(interactions=INTERACTION))
    assert res.chisq == pytest.approx(ref["chisq"], rel=REL)
    assert res.df == ref["df"]
    assert res.p_value == pytest.approx(ref["p"], abs=P_ABS)
    assert res.n == 2899
    assert res.to_frame().loc[0, "p_value"] == res.p_value


def test_ctc_hr_within_subtype_matches_r(cohort_r, survival_reference):
    ref = survival_reference["ctc_hr_within_subtype"]
    fit = fit_cox(cohort_r, make_spec(interactions=INTERACTION, term_lr_tests=False))
    table = effect_within_levels(fit, marker="ctc_positive", by="subtype")
    assert list(table["level"]) == list(ref)
    for row in table.itertuples():
        r = ref[row.level]
        assert row.estimate == pytest.approx(r["log_hr"], rel=REL)
        assert row.std_error == pytest.approx(r["se"], rel=REL)
        assert row.hr == pytest.approx(r["hr"], rel=REL)
        assert row.ci_lower == pytest.approx(r["lower"], rel=REL)
        assert row.ci_upper == pytest.approx(r["upper"], rel=REL)


def test_tidy_frame_and_lr_p_values(cohort_r):
    res = fit_cox(cohort_r, make_spec(analysis="paddy", endpoint="os"))
    frame = res.to_frame()
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert (frame["analysis"] == "paddy").all() and (frame["n"] == 2899).all()
    np.testing.assert_allclose(frame["hr"], np.exp(res.coefficients))
    z = res.coefficients / res.std_errors
    np.testing.assert_allclose(frame["p_value"], 2 * stats.norm.sf(np.abs(z)))
    # LR p of grade3 = a refit without it on the same patients
    without = fit_cox(cohort_r, make_spec(covariates=COVARIATES[:-1], term_lr_tests=False))
    assert without.n == res.n
    expected = stats.chi2.sf(2 * (res.loglik - without.loglik), 1)
    assert frame.loc[frame.term == "grade3", "lr_p_value"].item() == pytest.approx(
        expected, abs=1e-9
    )
    # LR and Wald p-values agree roughly (same hypothesis, large sample)
    np.testing.assert_allclose(frame["lr_p_value"], frame["p_value"], atol=0.02)
    assert res.aic == pytest.approx(-2 * res.loglik + 2 * 7)


def test_dropped_patients_counted_per_centre(cohort_r):
    res = fit_cox(cohort_r, make_spec(term_lr_tests=False))
    expected = cohort_r[cohort_r["age"].isna()].groupby("centre").size()
    dropped = res.dropped.set_index("centre")
    assert (dropped["reason"] == "missing: age").all()
    pd.testing.assert_series_equal(
        dropped["n_dropped"], expected, check_names=False, check_dtype=False
    )
    assert res.n + dropped["n_dropped"].sum() == len(cohort_r)


def simulate_consortium(n: int, seed: int, betas: np.ndarray, n_centres: int = 20):
    """Stratified cohort: centre-specific Weibull baseline, whole-month times (heavy ties)."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, n_centres, n)
    x = np.column_stack(
        [
            rng.binomial(1, 0.3, n),
            rng.normal(0, 1, n),
            rng.binomial(1, 0.5, n),
            rng.normal(0, 1, n) * 0.5,
        ]
    ).astype(float)
    scale = np.exp(rng.normal(0, 0.4, n_centres))[centre] * 60
    shape = rng.uniform(0.8, 1.5, n_centres)[centre]
    u = rng.uniform(size=n)
    t_event = scale * (-np.log(u) / np.exp(x @ betas)) ** (1 / shape)
    t_cens = rng.uniform(12, 120, n)
    time = np.ceil(np.minimum(t_event, t_cens))
    event = (t_event <= t_cens).astype(float)
    return x, time, event, centre


def test_recovers_known_log_hazard_ratios():
    truth = np.array([0.4, -0.3, 0.2, 0.0])
    x, time, event, centre = simulate_consortium(6000, seed=11, betas=truth)
    for ties in ("efron", "breslow"):
        fit = cox_fit_arrays(x, time, event, centre, ties=ties)
        z = (fit.coefficients - truth) / fit.std_errors
        assert np.all(np.abs(z) < 3.0), (ties, z)
    # Efron is closer to the truth than Breslow under heavy ties (Breslow attenuates)
    efron = cox_fit_arrays(x, time, event, centre, ties="efron")
    breslow = cox_fit_arrays(x, time, event, centre, ties="breslow")
    assert np.all(np.abs(breslow.coefficients[:3]) < np.abs(efron.coefficients[:3]))


def test_agrees_with_lifelines(cohort_r):
    lifelines = pytest.importorskip("lifelines")
    res = fit_cox(cohort_r, make_spec(term_lr_tests=False))
    df = cohort_r.dropna(subset=["age"]).copy()
    for level in ("luminal_b", "her2_positive", "triple_negative"):
        df[f"subtype{level}"] = (df["subtype"] == level).astype(float)
    cols = list(res.term_names)
    cph = lifelines.CoxPHFitter()
    cph.fit(
        df[cols + ["os_months", "os_event", "centre"]],
        duration_col="os_months",
        event_col="os_event",
        strata=["centre"],
    )
    np.testing.assert_allclose(cph.params_[cols].to_numpy(), res.coefficients, rtol=1e-3)
    np.testing.assert_allclose(cph.standard_errors_[cols].to_numpy(), res.std_errors, rtol=1e-3)
    assert cph.log_likelihood_ == pytest.approx(res.loglik, rel=1e-6)


def test_strata_without_events_contribute_nothing():
    x, time, event, centre = simulate_consortium(1500, seed=5, betas=np.array([0.3, 0.2, 0, 0]))
    base = cox_fit_arrays(x, time, event, centre)
    extra = simulate_consortium(200, seed=6, betas=np.zeros(4))
    xx = np.vstack([x, extra[0]])
    tt = np.concatenate([time, extra[1]])
    ee = np.concatenate([event, np.zeros(200)])
    cc = np.concatenate([centre, np.full(200, 99)])
    more = cox_fit_arrays(xx, tt, ee, cc)
    np.testing.assert_allclose(more.coefficients, base.coefficients, rtol=1e-10)
    assert more.loglik == pytest.approx(base.loglik, rel=1e-12)
    assert more.events == base.events and more.n == base.n + 200


def test_score_residuals_sum_to_score_and_init_is_respected():
    x, time, event, centre = simulate_consortium(800, seed=2, betas=np.array([0.5, 0, 0, 0]))
    fit = cox_fit_arrays(x, time, event, centre)
    resid = cox_score_residuals(x, time, event, centre, fit.coefficients)
    np.testing.assert_allclose(resid.sum(axis=0), 0.0, atol=1e-8)
    at_zero = cox_score_residuals(x, time, event, centre, np.zeros(4))
    warm = cox_fit_arrays(x, time, event, centre, init=fit.coefficients * 0.9)
    np.testing.assert_allclose(warm.coefficients, fit.coefficients, rtol=1e-7)
    assert warm.loglik_null == pytest.approx(fit.loglik_null, rel=1e-12)
    # the score test at zero is u' I^-1 u, u the summed residuals at zero and I the
    # derivative of the score there (finite differences)
    u = at_zero.sum(axis=0)
    info0 = _info_at_zero(x, time, event, centre)
    assert fit.score_test == pytest.approx(float(u @ np.linalg.solve(info0, u)), rel=1e-6)


def _info_at_zero(x, time, event, centre):
    """Information at zero by finite differences of the summed score residuals."""
    h = 1e-6
    p = x.shape[1]
    info = np.zeros((p, p))
    for j in range(p):
        step = np.zeros(p)
        step[j] = h
        up = cox_score_residuals(x, time, event, centre, step).sum(axis=0)
        down = cox_score_residuals(x, time, event, centre, -step).sum(axis=0)
        info[:, j] = -(up - down) / (2 * h)
    return (info + info.T) / 2


def test_no_events_is_a_data_error(cohort_r):
    df = cohort_r.assign(os_event=0)
    with pytest.raises(DataError, match="No events"):
        fit_cox(df, make_spec())


def test_constant_covariate_is_named(cohort_r):
    df = cohort_r.assign(grade3=1)
    with pytest.raises(DataError, match="grade3"):
        fit_cox(df, make_spec())


def test_covariate_constant_within_strata_is_named(cohort_r):
    codes = cohort_r["centre"].astype("category").cat.codes
    df = cohort_r.assign(centre_size=codes.astype(float))
    with pytest.raises(DataError, match="centre_size.*constant within every stratum"):
        fit_cox(df, make_spec(covariates=(*COVARIATES, "centre_size")))
    # unstratified, the same covariate is estimable
    res = fit_cox(
        df, make_spec(covariates=(*COVARIATES, "centre_size"), strata=(), term_lr_tests=False)
    )
    assert np.isfinite(res.coefficient("centre_size"))


def test_collinear_term_is_named(cohort_r):
    df = cohort_r.assign(age_months=cohort_r["age"] * 12 + 3 * cohort_r["grade3"])
    with pytest.raises(DataError, match="age_months.*linear combination"):
        fit_cox(df, make_spec(covariates=(*COVARIATES, "age_months")))


def test_bad_event_coding_and_bad_spec(cohort_r):
    with pytest.raises(DataError, match="0 \\(censored\\) or 1"):
        fit_cox(cohort_r.assign(os_event=cohort_r["os_event"] * 2), make_spec())
    with pytest.raises(ConfigError, match="ties"):
        make_spec(ties="exact")
    with pytest.raises(ConfigError, match="tuples"):
        make_spec(covariates="age")
    with pytest.raises(ConfigError, match="no_such"):
        fit_cox(cohort_r, make_spec(covariates=("no_such",)))
