"""Competing risks against R (survival 3.5-3, cmprsk 2.2-11; ``make_competing.R`` and
``make_competing_extra.R``), the case-weighted Cox engine the Fine-Gray fit rests on, its
properties, and recovery of a known subdistribution hazard ratio."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError
from pooled.models.competing import (
    CompetingRisksSpec,
    cumulative_incidence_arrays,
    finegray_expand,
    fit_cause_specific_cox,
    fit_cumulative_incidence,
    fit_fine_gray,
    gray_test,
)
from pooled.models.cox import CoxSpec, cox_fit_arrays, fit_cox
from pooled.models.km import KMSpec, fit_kaplan_meier

from .conftest import REFERENCE

REL = 1e-6  # estimates, SEs, variances, log-likelihoods, test statistics (observed ~1e-13)
P_ABS = 1e-9  # p-values
TIMES = (12.0, 24.0, 36.0, 60.0, 120.0)
COVARIATES = ("ctc_positive", "age")


@pytest.fixture(scope="module")
def competing_reference() -> dict:
    return json.loads((REFERENCE / "expected_competing.json").read_text())


@pytest.fixture(scope="module")
def extra_reference() -> dict:
    return json.loads((REFERENCE / "expected_competing_extra.json").read_text())


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cohort_competing.csv")


@pytest.fixture(scope="module")
def untied() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cohort_competing_untied.csv")


def spec(**kw) -> CompetingRisksSpec:
    base = dict(
        duration="time_months",
        status="status",
        group="ctc_positive",
        covariates=COVARIATES,
        times=TIMES,
        tol=1e-12,
        max_iter=100,
    )
    return CompetingRisksSpec(**{**base, **kw})


def values(mapping: dict) -> np.ndarray:
    return np.array(list(mapping.values()), dtype=float)


# --- Aalen-Johansen, cuminc, Gray: expected_competing.json ------------------------------------


def test_cumulative_incidence_matches_survfit_and_cuminc(cohort, competing_reference):
    res = fit_cumulative_incidence(cohort, spec())
    aj = competing_reference["aalen_johansen"]
    cuminc = competing_reference["cuminc"]["estimates"]
    variances = dict(zip(cuminc["rows"], np.array(cuminc["var"]), strict=True))
    for group in (0, 1):
        at = res.at_times[res.at_times["group"] == group]
        ref = aj[f"ctc_positive_{group}"]
        assert at["time"].tolist() == ref["time"]
        assert at["n_risk"].tolist() == ref["n_risk"]
        for ours, theirs in (("event_free", "event_free"), ("event", "cause1"),
                             ("competing", "cause2")):  # fmt: skip
            column = ours if ours == "event_free" else f"cif_{ours}"
            np.testing.assert_allclose(at[column], ref["pstate"][theirs], rtol=REL)
            np.testing.assert_allclose(at[f"std_err_{ours}"], ref["std_err"][theirs], rtol=REL)
        np.testing.assert_allclose(at["variance_event"], variances[f"{group} 1"], rtol=REL)
        np.testing.assert_allclose(at["variance_competing"], variances[f"{group} 2"], rtol=REL)
    gray = competing_reference["cuminc"]["gray_test"]
    np.testing.assert_allclose(res.gray["chisq"], gray["stat"], rtol=REL)
    np.testing.assert_allclose(res.gray["p_value"], gray["p"], atol=P_ABS)
    assert res.gray["df"].tolist() == gray["df"]
    assert (res.n, res.events, res.competing_events) == (3000, 1153, 535)


def test_stratified_gray_test_matches_cuminc(cohort, extra_reference):
    ref = extra_reference["gray_stratified"]
    res = fit_cumulative_incidence(cohort, spec(strata=("centre",)))
    np.testing.assert_allclose(res.gray["chisq"], ref["stat"], rtol=REL)
    np.testing.assert_allclose(res.gray["p_value"], ref["p"], atol=P_ABS)


# --- cause-specific Cox ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "cause", "ties"),
    [("cause1_efron", 1, "efron"), ("cause1_breslow", 1, "breslow"), ("cause2_efron", 2, "efron")],
)
def test_cause_specific_cox_matches_r(key, cause, ties, cohort, competing_reference):
    ref = competing_reference["cause_specific_cox"][key]
    res = fit_cause_specific_cox(cohort, spec(strata=("centre",), ties=ties), cause)
    assert res.n == ref["n"] and res.events == ref["events"]
    np.testing.assert_allclose(res.coefficients, values(ref["coef"]), rtol=REL)
    np.testing.assert_allclose(res.std_errors, values(ref["se"]), rtol=REL)
    np.testing.assert_allclose(res.vcov, ref["vcov"]["matrix"], rtol=REL)
    np.testing.assert_allclose([res.loglik_null, res.loglik], ref["loglik"], rtol=REL)


# --- Fine-Gray: finegray() + weighted coxph ----------------------------------------------------


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize(
    ("key", "strata"), [("unstratified", ()), ("stratified_censoring_by_centre", ("centre",))]
)
def test_fine_gray_matches_finegray_coxph(key, strata, ties, cohort, competing_reference):
    block = competing_reference["fine_gray_finegray_coxph"][key]
    ref = block[ties]
    res = fit_fine_gray(cohort, spec(strata=strata, ties=ties))
    assert res.n_rows == block["n_rows"] == ref["n"]
    assert res.events == ref["events"] == 1153
    fit = res.fit
    np.testing.assert_allclose(fit.coefficients, values(ref["coef"]), rtol=REL)
    np.testing.assert_allclose(fit.std_errors, values(ref["se_robust"]), rtol=REL)
    np.testing.assert_allclose(fit.naive_std_errors, values(ref["se_naive"]), rtol=REL)
    np.testing.assert_allclose(fit.vcov, ref["vcov"]["matrix"], rtol=REL)
    np.testing.assert_allclose(fit.covariance, ref["vcov_naive"]["matrix"], rtol=REL)
    np.testing.assert_allclose([fit.loglik_null, fit.loglik], ref["loglik"], rtol=REL)
    assert fit.iterations == ref["iter"]


def test_fine_gray_on_untied_times_matches_crr(untied, extra_reference):
    ref = extra_reference["untied"]
    res = fit_fine_gray(untied, spec(ties="breslow"))
    assert res.n_rows == ref["finegray"]["n_rows"]
    np.testing.assert_allclose(res.coefficients, values(ref["crr"]["coef"]), rtol=REL)
    np.testing.assert_allclose(
        res.coefficients, values(ref["finegray"]["breslow"]["coef"]), rtol=REL
    )
    np.testing.assert_allclose(res.std_errors, values(ref["finegray"]["breslow"]["se"]), rtol=REL)
    # crr's sandwich adds the variance of estimating the censoring distribution: close only
    np.testing.assert_allclose(res.std_errors, values(ref["crr"]["se"]), rtol=2e-3)
    efron = fit_fine_gray(untied, spec(ties="efron"))
    np.testing.assert_allclose(efron.coefficients, res.coefficients, rtol=1e-10)


def test_fine_gray_with_tied_times_differs_from_crr_as_documented(cohort, competing_reference):
    """crr and finegray weight tied censoring and failure times differently (~2.4e-4)."""
    crr = values(competing_reference["fine_gray_crr"]["default"]["coef"])
    res = fit_fine_gray(cohort, spec(ties="breslow"))
    gap = abs(res.coefficients[0] - crr[0])
    assert 1e-4 < gap < 5e-4


# --- the weighted Cox engine -------------------------------------------------------------------


def _weighted_data(seed: int, n: int = 300) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    time = np.ceil(rng.exponential(20, n) * np.exp(-0.5 * x[:, 0]))
    event = (rng.random(n) < 0.7).astype(float)
    weights = rng.integers(1, 4, n).astype(float)
    strata = rng.integers(0, 3, n)
    return x, time, event, weights, strata


@pytest.mark.parametrize("seed", [1, 2])
def test_integer_weights_equal_replicated_rows_breslow(seed):
    x, time, event, weights, strata = _weighted_data(seed)
    reps = weights.astype(int)
    weighted = cox_fit_arrays(x, time, event, strata, ties="breslow", weights=weights)
    replicated = cox_fit_arrays(
        np.repeat(x, reps, axis=0), np.repeat(time, reps), np.repeat(event, reps),
        np.repeat(strata, reps), ties="breslow",
    )  # fmt: skip
    np.testing.assert_allclose(weighted.coefficients, replicated.coefficients, rtol=1e-10)
    np.testing.assert_allclose(weighted.covariance, replicated.covariance, rtol=1e-10)
    assert weighted.loglik == pytest.approx(replicated.loglik, rel=1e-12)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_constant_weights_scale_the_information(ties):
    x, time, event, _, strata = _weighted_data(3)
    plain = cox_fit_arrays(x, time, event, strata, ties=ties)
    doubled = cox_fit_arrays(x, time, event, strata, ties=ties, weights=np.full(time.size, 2.0))
    np.testing.assert_allclose(doubled.coefficients, plain.coefficients, rtol=1e-9)
    np.testing.assert_allclose(doubled.covariance, plain.covariance / 2.0, rtol=1e-9)
    # sum 2 eta - 2 log(2 S0) per event
    expected = 2.0 * plain.loglik - 2.0 * np.log(2.0) * plain.events
    assert doubled.loglik == pytest.approx(expected, rel=1e-12)


def test_unit_weights_change_nothing():
    x, time, event, _, strata = _weighted_data(4)
    plain = cox_fit_arrays(x, time, event, strata, cluster=np.arange(time.size) % 40)
    ones = cox_fit_arrays(
        x, time, event, strata, cluster=np.arange(time.size) % 40, weights=np.ones(time.size)
    )
    np.testing.assert_allclose(ones.coefficients, plain.coefficients, rtol=1e-12)
    np.testing.assert_allclose(ones.robust_covariance, plain.robust_covariance, rtol=1e-10)


def test_weights_must_be_positive():
    x, time, event, weights, strata = _weighted_data(5)
    weights[3] = 0.0
    with pytest.raises(DataError, match="weights must be finite and > 0"):
        cox_fit_arrays(x, time, event, strata, weights=weights)
    with pytest.raises(ConfigError, match="missing='mice'"):
        CoxSpec(duration="t", event="e", covariates=("x",), weights="w", missing="mice")


def test_weighted_fit_skips_concordance_and_refuses_the_ph_test():
    from pooled.models.zph import proportional_hazards_test

    x, time, event, weights, _ = _weighted_data(6)
    df = pd.DataFrame({"t": time, "e": event, "x": x[:, 0], "w": weights})
    res = fit_cox(df, CoxSpec(duration="t", event="e", covariates=("x",), strata=(), weights="w"))
    assert np.isnan(res.concordance)
    with pytest.raises(ConfigError, match="unweighted"):
        proportional_hazards_test(res, df)


# --- properties --------------------------------------------------------------------------------


def test_cumulative_incidence_without_competing_events_is_one_minus_km(cohort):
    data = cohort.assign(status=cohort["status"].where(cohort["status"] != 2, 0))
    res = fit_cumulative_incidence(data, spec())
    km = fit_kaplan_meier(
        data.assign(ev=(data["status"] == 1).astype(int)),
        KMSpec(duration="time_months", event="ev", group="ctc_positive", times=TIMES),
    )
    for group in (0, 1):
        ours = res.at_times.loc[res.at_times["group"] == group, "cif_event"].to_numpy()
        theirs = km.at_times.loc[km.at_times["group"] == group, "survival"].to_numpy()
        np.testing.assert_allclose(ours, 1.0 - theirs, rtol=1e-12)


def test_states_sum_to_one_and_curves_never_fall(cohort):
    res = fit_cumulative_incidence(cohort, spec())
    total = res.curves["event_free"] + res.curves["cif_event"] + res.curves["cif_competing"]
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    for _, part in res.curves.groupby("group"):
        assert np.all(np.diff(part["cif_event"]) >= 0)
        assert np.all(part["ci_lower_event"] <= part["cif_event"] + 1e-15)
        assert np.all(part["ci_upper_event"] >= part["cif_event"] - 1e-15)
    frame = res.to_frame()
    assert set(frame["term"]) == {"cif_event", "cif_competing", "gray_test_event",
                                  "gray_test_competing"}  # fmt: skip


def test_finegray_without_competing_events_is_the_cox_model(cohort):
    data = cohort.assign(status=cohort["status"].where(cohort["status"] != 2, 0))
    expanded = finegray_expand(data, duration="time_months", status="status")
    assert len(expanded) == len(data) and np.all(expanded["fgwt"] == 1.0)
    fg = fit_fine_gray(data, spec())
    cox = fit_cox(
        data.assign(ev=(data["status"] == 1).astype(float)),
        CoxSpec(duration="time_months", event="ev", covariates=COVARIATES, strata=(),
                tol=1e-12, max_iter=100),
    )  # fmt: skip
    np.testing.assert_allclose(fg.coefficients, cox.coefficients, rtol=1e-10)


def test_finegray_weights_are_censoring_survival_ratios():
    df = pd.DataFrame({"t": [1.0, 2, 3, 4, 5, 6], "s": [2, 1, 0, 1, 0, 1]})
    out = finegray_expand(df, duration="t", status="s")
    competing = out[out.index < 3]  # the first patient (status 2) and its added rows
    # G after the censoring at 3 is 2/3 of ... 1 - 1/4 (4 at risk at 3) = 0.75; at 5: 0.75 * 1/2
    assert competing["fgstop"].tolist() == [3.0, 5.0, 6.0]
    np.testing.assert_allclose(competing["fgwt"], [1.0, 0.75, 0.375])
    assert competing["fgstatus"].tolist() == [0.0, 0.0, 0.0]


def test_gray_test_is_invariant_to_group_labels(cohort):
    t, s = cohort["time_months"].to_numpy(float), cohort["status"].to_numpy()
    a = gray_test(t, s, cohort["ctc_positive"].to_numpy())
    b = gray_test(t, s, np.where(cohort["ctc_positive"] == 1, "pos", "neg"))
    np.testing.assert_allclose(a["chisq"], b["chisq"], rtol=1e-12)
    with pytest.raises(DataError, match="two groups"):
        gray_test(t, s, np.zeros(t.size))


def test_status_and_spec_errors(cohort):
    with pytest.raises(DataError, match="0 \\(censored\\), 1"):
        fit_cumulative_incidence(cohort.assign(status=cohort["status"] + 1), spec())
    with pytest.raises(ConfigError, match="ties"):
        spec(ties="exact")
    with pytest.raises(ConfigError, match="patient id"):
        fit_fine_gray(cohort.drop(columns="patient_id"), spec())
    with pytest.raises(DataError, match="No events"):
        finegray_expand(cohort.assign(status=0), duration="time_months", status="status")
    out = cumulative_incidence_arrays(np.array([1.0, 2.0]), np.array([0, 0]))
    assert out["cif_event"].tolist() == [0.0, 0.0]


# --- recovery ------------------------------------------------------------------------------------


def test_fine_gray_recovers_a_known_subdistribution_hazard_ratio():
    """Fine & Gray (1999, section 5): F1(t | x) = 1 - (1 - p (1 - e^-t))^exp(b x)."""
    rng = np.random.default_rng(20260)
    n, p, beta = 4000, 0.4, 0.6
    x = rng.binomial(1, 0.5, n).astype(float)
    f1_inf = 1.0 - (1.0 - p) ** np.exp(beta * x)
    cause1 = rng.random(n) < f1_inf
    u = rng.random(n)
    # time of cause 1 given cause 1: invert F1(t) / F1(inf)
    t1 = -np.log(1.0 - (1.0 - (1.0 - u * f1_inf) ** np.exp(-beta * x)) / p)
    t2 = rng.exponential(1.0 / np.exp(0.3 * x))
    time = np.where(cause1, t1, t2)
    cens = rng.uniform(0, 3, n)
    status = np.where(time <= cens, np.where(cause1, 1, 2), 0)
    df = pd.DataFrame({"t": np.minimum(time, cens), "s": status, "x": x,
                       "patient_id": np.arange(n)})  # fmt: skip
    res = fit_fine_gray(df, CompetingRisksSpec(duration="t", status="s", covariates=("x",)))
    est, se = res.coefficients[0], res.std_errors[0]
    assert abs(est - beta) < 3 * se
    assert 0.02 < se < 0.1
    frame = res.to_frame()
    assert frame.loc[0, "model"] == "fine_gray" and frame.loc[0, "n"] == n
