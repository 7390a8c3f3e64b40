"""Mixed-effects Cox models: reference tests against coxme 2.2-22 and survival 3.5-3
(``tests/reference/expected_coxme.json``, ``expected_coxme_breslow.json``), recovery on
simulated consortia, and properties / edge cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pooled.errors import ConfigError, DataError, PooledWarning
from pooled.models._mixed_cox_core import Problem
from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.mixed_cox import (
    MixedCoxSpec,
    coxph_frailty_quantities,
    fit_mixed_cox,
    predict_survival,
)
from pooled.results import TIDY_COLUMNS

# one tolerance per kind of quantity (see tests/reference/SOURCE.md)
FIXED_REL = 1e-8  # coefficients, their covariance, SEs, df at a given variance
RANEF_ABS = 1e-8  # random effects (BLUPs; values of order 0.01-1) at a given variance
LOGLIK_ABS = 1e-6  # log-likelihoods (|value| ~ 1e4) at a given variance
VARIANCE_REL = 1e-6  # estimated variances against coxme's polished optimum
COXME_OPTIM_REL = 1e-5  # estimates against coxme's own (unpolished) optimum
SURVIVAL_ABS = 1e-9  # survival curves at a given variance
COVARIATES = ("ctc_positive", "age", "node_positive", "grade3")
MODELS = {
    "a_random_intercept": {"random": ("intercept",), "strata": False},
    "b_random_slope_strata": {"random": ("marker",), "strata": True},
    "c_random_intercept_slope": {"random": ("intercept", "marker"), "strata": False},
}


@pytest.fixture(scope="module")
def coxme_reference(reference_dir) -> dict:
    return json.loads((reference_dir / "expected_coxme.json").read_text())


@pytest.fixture(scope="module")
def breslow_reference(reference_dir) -> dict:
    return json.loads((reference_dir / "expected_coxme_breslow.json").read_text())


@pytest.fixture(scope="module")
def heterogeneous(reference_dir) -> pd.DataFrame:
    """4,002 simulated patients in 20 centres of unequal size (made by make_coxme.R)."""
    return pd.read_csv(reference_dir / "cohort_heterogeneous.csv")


@pytest.fixture(scope="module")
def datasets(heterogeneous, cohort) -> dict[str, pd.DataFrame]:
    return {"heterogeneous": heterogeneous, "multicentre_complete_cases": cohort}


def spec_for(model: str, **kw) -> MixedCoxSpec:
    return MixedCoxSpec(
        duration="os_months", event="os_event", covariates=COVARIATES, **MODELS[model], **kw
    )


def fixed_variance(theta) -> tuple[float, ...]:
    """coxme's theta (variance, or var_intercept, correlation, var_slope) in our order."""
    theta = np.atleast_1d(theta)
    if theta.size == 1:
        return (float(theta[0]),)
    return (float(theta[0]), float(theta[2]), float(theta[1]))


def coxme_theta(entry: dict) -> list[float]:
    vc = entry["variance_components"]
    v = list(vc["variance"].values())
    return [v[0], vc["correlation"], v[1]] if "correlation" in vc else v


def assert_matches_coxme_fit(res, ref: dict) -> None:
    """Everything coxme reports for a fit at a given variance."""
    names = list(ref["coef"])
    idx = [res.term_names.index(n) for n in names]
    np.testing.assert_allclose(res.coefficients[idx], list(ref["coef"].values()), rtol=FIXED_REL)
    vnames = ref["vcov"]["names"]
    vidx = [res.term_names.index(n) for n in vnames]
    np.testing.assert_allclose(
        res.covariance[np.ix_(vidx, vidx)], ref["vcov"]["matrix"], rtol=FIXED_REL, atol=1e-20
    )
    if "se" in ref:
        np.testing.assert_allclose(res.std_errors[idx], list(ref["se"].values()), rtol=FIXED_REL)
    ranef = ref["ranef"]
    assert list(res.centres) == ranef["centre"]
    if "value" in ranef:
        np.testing.assert_allclose(res.random_effects[:, 0], ranef["value"], atol=RANEF_ABS)
    else:
        for k, term in enumerate(res.random_terms):
            key = "Intercept" if term == "intercept" else term
            np.testing.assert_allclose(res.random_effects[:, k], ranef[key], atol=RANEF_ABS)
    loglik = ref.get("loglik", {})
    if "Integrated" in loglik:
        assert res.loglik_integrated == pytest.approx(loglik["Integrated"], abs=LOGLIK_ABS)
        assert res.loglik_penalized == pytest.approx(loglik["Penalized"], abs=LOGLIK_ABS)
        assert res.loglik_null == pytest.approx(loglik["NULL"], abs=LOGLIK_ABS)
    else:
        assert res.loglik_integrated == pytest.approx(ref["loglik_integrated"], abs=LOGLIK_ABS)
        assert res.loglik_penalized == pytest.approx(ref["loglik_penalized"], abs=LOGLIK_ABS)


# --------------------------------------------------------------------------------------------
# coxme at a given variance
# --------------------------------------------------------------------------------------------

FIXED_CASES = [
    ("heterogeneous", "a_random_intercept"),
    ("heterogeneous", "b_random_slope_strata"),
    ("heterogeneous", "c_random_intercept_slope"),
    ("multicentre_complete_cases", "a_random_intercept"),
    ("multicentre_complete_cases", "b_random_slope_strata"),
]


@pytest.mark.parametrize(("dataset", "model"), FIXED_CASES)
def test_at_coxme_variance_matches_coxme(dataset, model, datasets, coxme_reference):
    """Held at coxme's estimate, every reported quantity agrees (coef, vcov, SE, ranef,
    NULL / Integrated / Penalized log-likelihoods, penalty, df, n, events)."""
    ref = coxme_reference[dataset][model]
    res = fit_mixed_cox(
        datasets[dataset], spec_for(model, fixed_variance=fixed_variance(coxme_theta(ref)))
    )
    assert (res.n, res.events) == (ref["n"], ref["events"])
    assert_matches_coxme_fit(res, ref)
    assert res.penalty == pytest.approx(ref["loglik"]["penalty"], rel=FIXED_REL)
    assert res.loglik_fitted == pytest.approx(ref["loglik"]["Fitted_as_printed"], abs=LOGLIK_ABS)
    assert res.df_integrated == len(COVARIATES)  # the variances are given, not estimated
    assert res.df_penalized == pytest.approx(ref["df"]["penalized"], rel=FIXED_REL)
    assert res.variance_fixed and np.isnan(res.lr_statistic)


@pytest.mark.parametrize(
    "model", ["a_random_intercept", "b_random_slope_strata", "c_random_intercept_slope"]
)
def test_at_polished_variance_matches_coxme(model, heterogeneous, coxme_reference):
    pol = coxme_reference["heterogeneous"][model]["optimum_check"]["polished"]
    res = fit_mixed_cox(heterogeneous, spec_for(model, fixed_variance=fixed_variance(pol["theta"])))
    assert_matches_coxme_fit(res, pol)


def test_at_polished_variance_multicentre(cohort, coxme_reference):
    pol = coxme_reference["multicentre_complete_cases"]["a_random_intercept"]["optimum_check"][
        "polished"
    ]
    res = fit_mixed_cox(
        cohort, spec_for("a_random_intercept", fixed_variance=fixed_variance(pol["theta"]))
    )
    assert_matches_coxme_fit(res, pol)


# --------------------------------------------------------------------------------------------
# coxme's estimated variances
# --------------------------------------------------------------------------------------------

ESTIMATE_CASES = [
    ("heterogeneous", "a_random_intercept"),
    ("heterogeneous", "b_random_slope_strata"),
    ("heterogeneous", "c_random_intercept_slope"),
    ("multicentre_complete_cases", "a_random_intercept"),
]


@pytest.mark.parametrize(("dataset", "model"), ESTIMATE_CASES)
def test_estimated_variances_match_polished_optimum(dataset, model, datasets, coxme_reference):
    ref = coxme_reference[dataset][model]
    pol = ref["optimum_check"]["polished"]
    res = fit_mixed_cox(datasets[dataset], spec_for(model))
    assert res.converged and not res.boundary
    theta = np.atleast_1d(pol["theta"])
    if theta.size == 1:
        assert res.variances[0] == pytest.approx(theta[0], rel=VARIANCE_REL)
    else:
        assert res.variances[0] == pytest.approx(theta[0], rel=VARIANCE_REL)
        assert res.variances[1] == pytest.approx(theta[2], rel=VARIANCE_REL)
        assert res.correlation == pytest.approx(theta[1], rel=VARIANCE_REL)
        np.testing.assert_allclose(
            res.variance_matrix,
            pol["variance_components"]["covariance_matrix"]["matrix"],
            rtol=VARIANCE_REL,
        )
    # the fit at the estimate is the fit at the polished optimum, to the same accuracy
    names = list(pol["coef"])
    idx = [res.term_names.index(n) for n in names]
    np.testing.assert_allclose(res.coefficients[idx], list(pol["coef"].values()), rtol=VARIANCE_REL)
    # the integrated log-likelihood is flat at the optimum: it agrees far more tightly
    assert res.loglik_integrated == pytest.approx(pol["loglik_integrated"], abs=1e-8)
    assert res.loglik_null == pytest.approx(ref["loglik"]["NULL"], abs=LOGLIK_ABS)
    assert res.df_integrated == ref["df"]["integrated"]


@pytest.mark.parametrize(("dataset", "model"), ESTIMATE_CASES)
def test_variance_curvature_matches_coxme_finite_differences(
    dataset, model, datasets, coxme_reference
):
    """The Hessian of the integrated log-likelihood in coxme's parameters (log variances,
    2 atanh(rho)) at coxme's optimum: central differences in make_coxme.R, step 1e-3."""
    check = coxme_reference[dataset][model]["optimum_check"]["at_coxme_optimum"]
    ref_h = np.atleast_2d(check["hessian"])
    for exact, rel in ((True, 1e-4), (False, 3e-2)):
        res = fit_mixed_cox(datasets[dataset], spec_for(model, exact_variance_se=exact))
        cov_phi = res.variance_parameters_covariance
        h = -np.linalg.inv(cov_phi)
        if h.shape[0] == 3:
            # ours: (log v1, log v2, atanh rho); coxme: (log v1, 2 atanh rho, log v2)
            perm = [0, 2, 1]
            jac = np.diag([1.0, 0.5, 1.0])
            h = jac @ h[np.ix_(perm, perm)] @ jac
        np.testing.assert_allclose(h, ref_h, rtol=rel, atol=rel * np.max(np.abs(ref_h)))


@pytest.mark.parametrize(("dataset", "model"), ESTIMATE_CASES)
def test_gradient_at_coxme_optimum(dataset, model, datasets, coxme_reference):
    """Our exact gradient of the integrated log-likelihood at coxme's optimum against
    make_coxme.R's Richardson-extrapolated central differences (noise ~1e-7)."""
    check = coxme_reference[dataset][model]["optimum_check"]["at_coxme_optimum"]
    phi = np.atleast_1d(check["phi"])
    theta = np.exp(phi) if phi.size == 1 else [np.exp(phi[0]), np.tanh(phi[1] / 2), np.exp(phi[2])]
    data = datasets[dataset]
    res = fit_mixed_cox(data, spec_for(model, fixed_variance=fixed_variance(theta)))
    problem_fit = _refit_core(data, model, res)
    grad = problem_fit[0].laplace_gradient(problem_fit[1])[0]
    if grad.size == 3:  # ours (log v1, log v2, atanh rho) -> coxme (log v1, 2 atanh rho, log v2)
        grad = np.array([grad[0], grad[2] / 2.0, grad[1]])
    np.testing.assert_allclose(grad, check["gradient"], atol=2e-6)


def _refit_core(data, model, res):
    """The core problem at the result's (beta, b, phi), for the exact gradient."""
    complete = data.dropna(subset=list(COVARIATES))
    codes, _ = pd.factorize(complete["centre"], sort=True)
    random = MODELS[model]["random"]
    Z = np.column_stack(
        [np.ones(len(complete)) if t == "intercept" else complete["ctc_positive"] for t in random]
    ).astype(float)
    problem = Problem(
        complete[list(COVARIATES)].to_numpy(float),
        Z,
        complete["os_months"].to_numpy(float),
        complete["os_event"].to_numpy(),
        codes,
        int(codes.max()) + 1,
        codes if MODELS[model]["strata"] else None,
        efron=True,
    )
    gamma = np.concatenate((res.coefficients, res.random_effects.ravel()))
    return problem, problem.evaluate(gamma, res.variance_parameters)


@pytest.mark.parametrize(("dataset", "model"), ESTIMATE_CASES)
def test_coxme_default_control_stops_short(dataset, model, datasets, coxme_reference):
    """coxme at its default control: variances within ~1e-4 relative of ours (its optim
    stops early), its integrated log-likelihood lower than ours."""
    ref = coxme_reference[dataset][model]["default_control_for_comparison"]
    res = fit_mixed_cox(datasets[dataset], spec_for(model))
    v = list(ref["variance_components"]["variance"].values())
    np.testing.assert_allclose(res.variances, v, rtol=1e-3)
    assert res.loglik_integrated >= ref["loglik_integrated"] - 1e-9
    names = list(ref["coef"])
    idx = [res.term_names.index(n) for n in names]
    np.testing.assert_allclose(res.coefficients[idx], list(ref["coef"].values()), rtol=1e-4)


def test_centre_effects_track_the_drawn_truth(heterogeneous, coxme_reference):
    """cohort_heterogeneous.csv was drawn with known centre frailties and marker log HRs:
    the BLUPs of model (c) follow them."""
    truth = coxme_reference["truth"]
    res = fit_mixed_cox(heterogeneous, spec_for("c_random_intercept_slope"))
    assert list(res.centres) == truth["centre"]
    assert np.corrcoef(res.random_effects[:, 0], truth["frailty_u"])[0, 1] > 0.9
    slopes = res.per_centre["marker_log_hr"].to_numpy()
    assert np.corrcoef(slopes, truth["marker_log_hr_by_centre"])[0, 1] > 0.5
    # shrinkage: the BLUP slopes vary less than the drawn ones
    assert np.std(slopes) < np.std(truth["marker_log_hr_by_centre"])


@pytest.mark.parametrize("model", list(MODELS))
def test_nested_optimiser_agrees_with_joint_iteration(model, heterogeneous):
    """The fallback (inner Newton to convergence at each variance, outer quasi-Newton with
    exact gradients, finite-difference Hessian at the end) finds the same maximum as the
    default one-pass joint iteration, from a poor start."""
    from pooled.models._mixed_cox_core import optimise

    res = fit_mixed_cox(heterogeneous, spec_for(model, exact_variance_se=True))
    problem, _ = _refit_core(heterogeneous, model, res)
    q = len(MODELS[model]["random"])
    lower = np.array([np.log(1e-10)] * q + ([-8.0] if q == 2 else []))
    upper = np.array([np.log(1e3)] * q + ([8.0] if q == 2 else []))
    start = np.array([np.log(0.5)] * q + ([0.0] if q == 2 else []))
    gamma0 = np.zeros(problem.p + problem.m)
    gamma0[: problem.p] = res.coefficients
    out = optimise(
        problem,
        start,
        gamma0,
        None,
        lower=lower,
        upper=upper,
        tol_inner=1e-10,
        tol_outer=1e-9,
        max_outer=200,
    )
    assert out.converged
    np.testing.assert_allclose(out.fit.phi, res.variance_parameters, atol=1e-6)
    assert out.fit.laplace == pytest.approx(res.loglik_integrated, abs=1e-9)
    np.testing.assert_allclose(
        -np.linalg.inv(out.hessian), res.variance_parameters_covariance, rtol=1e-3
    )


@pytest.mark.parametrize("model", list(MODELS))
def test_pass_fills_the_baseline_as_the_baseline_pass(model, heterogeneous):
    """The optimiser's last pass hands over the baseline-hazard pieces; they are those of
    the separate baseline pass at the same point."""
    from pooled.models._mixed_cox_kernels import baseline_pass

    res = fit_mixed_cox(heterogeneous, spec_for(model))
    problem, fit = _refit_core(heterogeneous, model, res)
    fused = problem.baseline_arrays()
    problem.derivatives(fit.gamma, np.eye(problem.m), fused)
    separate = problem.baseline_arrays()
    baseline_pass(
        problem.X,
        problem.Z,
        problem.ract,
        problem.event_u8,
        problem.grp_start,
        problem.grp_nev,
        problem.str_gstart,
        problem.act_ptr,
        fit.r,
        problem.efron,
        *separate,
    )
    for a, b in zip(fused, separate, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)
    keep = problem.grp_nev > 0
    np.testing.assert_allclose(res.baseline.hazard, fused[0][keep], rtol=1e-7)


def test_boundary_slope_variance(cohort, coxme_reference):
    """coxme (b) on cohort_multicentre.csv: the slope variance runs to 0 (coxme stops at
    3e-8); we report 0 and the stratified Cox fit it approaches."""
    ref = coxme_reference["multicentre_complete_cases"]["b_random_slope_strata"]
    res = fit_mixed_cox(cohort, spec_for("b_random_slope_strata"))
    assert res.boundary and res.variances[0] < 1e-4
    cox = ref["coxph_without_random_slope"]
    idx = [res.term_names.index(n) for n in cox["coef"]]
    np.testing.assert_allclose(res.coefficients[idx], list(cox["coef"].values()), rtol=FIXED_REL)
    np.testing.assert_allclose(res.std_errors[idx], list(cox["se"].values()), rtol=FIXED_REL)
    # coxme's estimate is as close to the Cox fit as its variance is to 0
    np.testing.assert_allclose(res.coefficients[idx], list(ref["coef"].values()), rtol=1e-6)
    assert res.loglik_integrated == pytest.approx(cox["loglik"][1], abs=LOGLIK_ABS)
    assert res.loglik_integrated >= ref["loglik"]["Integrated"] - LOGLIK_ABS
    assert res.loglik_null == pytest.approx(ref["loglik"]["NULL"], abs=LOGLIK_ABS)
    assert res.lr_statistic == 0.0 and res.lr_p_value == 1.0
    assert np.all(res.random_effects == 0.0)
    lo, hi = res.prediction_interval
    j = res.term_names.index("ctc_positive")
    z = stats.norm.ppf(0.975)
    assert (lo, hi) == pytest.approx(
        (res.coefficients[j] - z * res.std_errors[j], res.coefficients[j] + z * res.std_errors[j])
    )


def test_lr_test_and_prediction_interval(heterogeneous, coxme_reference):
    ref = coxme_reference["heterogeneous"]["b_random_slope_strata"]
    res = fit_mixed_cox(heterogeneous, spec_for("b_random_slope_strata"))
    # the null model of the LR test is the stratified Cox fit recorded beside coxme's
    l0 = ref["coxph_without_random_slope"]["loglik"][1]
    assert res.loglik_without_random == pytest.approx(l0, abs=LOGLIK_ABS)
    stat = 2.0 * (res.loglik_integrated - l0)
    assert res.lr_statistic == pytest.approx(stat, abs=1e-6)
    assert res.lr_p_value == pytest.approx(0.5 * stats.chi2.sf(stat, 1), rel=1e-6)
    assert res.lr_distribution == "0.5 chi2(0) + 0.5 chi2(1)"
    j = res.term_names.index("ctc_positive")
    half = stats.norm.ppf(0.975) * np.sqrt(res.covariance[j, j] + res.tau2)
    assert res.prediction_interval == pytest.approx(
        (res.coefficients[j] - half, res.coefficients[j] + half)
    )
    frame = res.to_frame()
    marker_row = frame[(frame.row_type == "fixed") & (frame.term == "ctc_positive")].iloc[0]
    assert marker_row.pi_lower == pytest.approx(np.exp(res.coefficients[j] - half))


def test_lr_test_correlated_model_is_against_random_intercept(heterogeneous):
    c = fit_mixed_cox(heterogeneous, spec_for("c_random_intercept_slope"))
    a = fit_mixed_cox(heterogeneous, spec_for("a_random_intercept"))
    stat = 2.0 * (c.loglik_integrated - a.loglik_integrated)
    assert c.lr_null == "random intercept only"
    assert c.lr_statistic == pytest.approx(stat, abs=1e-6)
    p = 0.5 * stats.chi2.sf(stat, 1) + 0.5 * stats.chi2.sf(stat, 2)
    assert c.lr_p_value == pytest.approx(p, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Breslow ties (make_coxme_breslow.R)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_breslow_matches_coxme(model, heterogeneous, breslow_reference):
    ref = breslow_reference["breslow"][model]
    assert ref["ties"] == "breslow"
    at = fit_mixed_cox(
        heterogeneous, spec_for(model, ties="breslow", fixed_variance=fixed_variance(ref["theta"]))
    )
    assert_matches_coxme_fit(at, ref["at_theta"])
    assert at.df_penalized == pytest.approx(ref["at_theta"]["df"]["penalized"], rel=FIXED_REL)
    est = fit_mixed_cox(heterogeneous, spec_for(model, ties="breslow"))
    theta = np.atleast_1d(ref["theta"])
    if theta.size == 1:
        assert est.variances[0] == pytest.approx(theta[0], rel=COXME_OPTIM_REL)
    else:
        np.testing.assert_allclose(est.variances, theta[[0, 2]], rtol=COXME_OPTIM_REL)
        assert est.correlation == pytest.approx(theta[1], rel=COXME_OPTIM_REL)
    # coxme stopped short of the maximum; ours is at least as high
    assert est.loglik_integrated >= ref["estimate"]["loglik"]["Integrated"] - 1e-9


# --------------------------------------------------------------------------------------------
# survival's coxph(... + frailty(centre, "gaussian")) at a fixed theta
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["heterogeneous", "multicentre_complete_cases"])
def test_coxph_gaussian_frailty_not_sparse(dataset, datasets, coxme_reference):
    """At a fixed theta coxph's penalised fit is coxme's (1 | centre) with vfixed = theta."""
    ref = coxme_reference["coxph_gaussian_frailty"][dataset]["fixed_theta_not_sparse"]
    res = fit_mixed_cox(
        datasets[dataset],
        spec_for("a_random_intercept", fixed_variance=(ref["theta_frailty_variance"],)),
    )
    fq = coxph_frailty_quantities(res, sparse=False)
    names = list(ref["coef"])
    idx = [res.term_names.index(n) for n in names]
    np.testing.assert_allclose(res.coefficients[idx], list(ref["coef"].values()), rtol=FIXED_REL)
    np.testing.assert_allclose(res.random_effects[:, 0], ref["frailty"]["value"], atol=RANEF_ABS)
    np.testing.assert_allclose(
        fq.covariance[np.ix_(idx, idx)], ref["vcov"]["matrix"], rtol=FIXED_REL
    )
    np.testing.assert_allclose(
        fq.covariance_var2[np.ix_(idx, idx)], ref["vcov_var2"]["matrix"], rtol=FIXED_REL
    )
    np.testing.assert_allclose(fq.df, ref["df"], rtol=FIXED_REL)
    assert fq.loglik == pytest.approx(ref["loglik"]["final"], abs=LOGLIK_ABS)
    assert fq.loglik_null == pytest.approx(ref["loglik"]["null"], abs=LOGLIK_ABS)
    assert fq.penalty == pytest.approx(ref["penalty"][-1], rel=FIXED_REL)


@pytest.mark.parametrize("dataset", ["heterogeneous", "multicentre_complete_cases"])
def test_coxph_gaussian_frailty_sparse(dataset, datasets, coxme_reference):
    """sparse = TRUE: coxph iterates with the frailty-by-frailty information reduced to its
    diagonal. Its fixed point is the same maximum, but it stops with a score of 5e-5
    (heterogeneous) and 7e-4 (multicentre) left, so its coefficients agree with the
    maximum to ~1e-6 only; its reported variance formulas, evaluated at its own
    coefficients, agree with ours to rounding."""
    ref = coxme_reference["coxph_gaussian_frailty"][dataset]["fixed_theta_sparse"]
    theta = ref["theta_frailty_variance"]
    data = datasets[dataset]
    res = fit_mixed_cox(data, spec_for("a_random_intercept", fixed_variance=(theta,)))
    names = list(ref["coef"])
    idx = [res.term_names.index(n) for n in names]
    np.testing.assert_allclose(res.coefficients[idx], list(ref["coef"].values()), rtol=1e-5)
    np.testing.assert_allclose(res.random_effects[:, 0], ref["frailty"]["value"], atol=1e-5)
    fq = coxph_frailty_quantities(res, sparse=True)
    np.testing.assert_allclose(fq.df, ref["df"], rtol=1e-6)
    assert fq.loglik_null == pytest.approx(ref["loglik"]["null"], abs=LOGLIK_ABS)
    # the same formulas at coxph's own (beta, frailty): rebuild the information there
    complete = data.dropna(subset=list(COVARIATES))
    codes, _ = pd.factorize(complete["centre"], sort=True)
    problem = Problem(
        complete[list(COVARIATES)].to_numpy(float),
        np.ones((len(complete), 1)),
        complete["os_months"].to_numpy(float),
        complete["os_event"].to_numpy(),
        codes,
        int(codes.max()) + 1,
        None,
        efron=True,
    )
    coef = [ref["coef"][c] for c in COVARIATES]
    gamma = np.concatenate((coef, ref["frailty"]["value"]))
    fit_there = problem.evaluate(gamma, np.array([np.log(theta)]))
    p = len(COVARIATES)
    score = fit_there.score
    assert np.max(np.abs(score)) > 1e-6  # coxph's sparse fit is not at the maximum
    H = fit_there.hessian.copy()
    H[p:, p:] = np.diag(np.diag(H[p:, p:]))
    Hinv = np.linalg.inv(H)
    var2 = Hinv @ (H - np.diag(np.r_[np.zeros(p), np.full(H.shape[0] - p, 1 / theta)])) @ Hinv
    np.testing.assert_allclose(Hinv[:p, :p], ref["vcov"]["matrix"], rtol=1e-9)
    np.testing.assert_allclose(var2[:p, :p], ref["vcov_var2"]["matrix"], rtol=1e-9)
    assert fit_there.loglik == pytest.approx(ref["loglik"]["final"], abs=LOGLIK_ABS)


# --------------------------------------------------------------------------------------------
# Survival curves
# --------------------------------------------------------------------------------------------

CURVES = {
    "a_random_intercept_efron": ("a_random_intercept", "efron"),
    "b_random_slope_strata_efron": ("b_random_slope_strata", "efron"),
    "a_random_intercept_breslow": ("a_random_intercept", "breslow"),
}


@pytest.mark.parametrize("key", list(CURVES))
def test_centre_survival_matches_survfit(key, heterogeneous, breslow_reference):
    ref = breslow_reference["survival_curves"][key]
    model, ties = CURVES[key]
    res = fit_mixed_cox(
        heterogeneous, spec_for(model, ties=ties, fixed_variance=fixed_variance(ref["theta"]))
    )
    curve = predict_survival(res, ref["newdata"], kind="centre", centre="C01", times=ref["times"])
    np.testing.assert_allclose(curve["survival"], ref["survival"], atol=SURVIVAL_ABS)
    assert np.all(curve["ci_lower"] <= curve["survival"])
    assert np.all(curve["survival"] <= curve["ci_upper"])


def test_marginal_survival(heterogeneous):
    res = fit_mixed_cox(heterogeneous, spec_for("a_random_intercept"))
    patient = {"ctc_positive": 1, "age": 60, "node_positive": 0, "grade3": 1}
    times = [6.0, 12.0, 24.0, 60.0, 120.0]
    marg = predict_survival(res, patient, kind="marginal", times=times)
    # Gauss-Hermite has converged
    more = predict_survival(res, patient, kind="marginal", times=times, n_nodes=40)
    np.testing.assert_allclose(marg["survival"], more["survival"], atol=1e-10)
    # against a brute-force average over the random effect (Monte Carlo with 4e5 draws)
    rng = np.random.default_rng(7)
    u = rng.normal(0.0, np.sqrt(res.variances[0]), 400_000)
    j0 = predict_survival(
        res, patient, kind="centre", centre=res.centres[0], times=times
    )  # any centre: the baseline is common
    b0 = res.random_effects[0, 0]
    cumhaz0 = -np.log(j0["survival"].to_numpy()) / np.exp(b0)
    mc = np.exp(-np.outer(cumhaz0, np.exp(u))).mean(axis=1)
    np.testing.assert_allclose(marg["survival"], mc, atol=2e-3)
    # exp(-H e^u) is concave in u while H e^u < 1 and convex after: the marginal curve
    # starts below the typical (u = 0) centre's curve and ends above it
    typical = np.exp(-cumhaz0)
    assert marg["survival"].iloc[0] < typical[0] and marg["survival"].iloc[-1] > typical[-1]
    assert np.all(np.diff(marg["survival"]) <= 0)
    assert np.all((marg["ci_lower"] < marg["survival"]) & (marg["survival"] < marg["ci_upper"]))


def test_marginal_survival_correlated_and_stratified(heterogeneous):
    patient = {"ctc_positive": 1, "age": 55, "node_positive": 1, "grade3": 0}
    c = fit_mixed_cox(heterogeneous, spec_for("c_random_intercept_slope"))
    curve = predict_survival(c, patient, kind="marginal", times=[12, 36, 60])
    assert curve["survival"].between(0, 1).all()
    b = fit_mixed_cox(heterogeneous, spec_for("b_random_slope_strata"))
    with pytest.raises(ConfigError, match="stratified"):
        predict_survival(b, patient, kind="marginal")
    curve_b = predict_survival(b, patient, kind="marginal", centre="C07", times=[12, 36, 60])
    own = predict_survival(b, patient, kind="centre", centre="C07", times=[12, 36, 60])
    assert np.all(np.abs(curve_b["survival"] - own["survival"]) < 0.05)
    with pytest.raises(ConfigError, match="needs a centre"):
        predict_survival(b, patient, kind="centre")
    with pytest.raises(ConfigError, match="expected"):
        predict_survival(b, {"ctc_positive": 1}, kind="centre", centre="C07")


# --------------------------------------------------------------------------------------------
# Properties and edge cases
# --------------------------------------------------------------------------------------------


def test_tidy_frame(heterogeneous):
    res = fit_mixed_cox(
        heterogeneous, spec_for("c_random_intercept_slope", analysis="het", endpoint="os")
    )
    frame = res.to_frame()
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert list(frame.row_type.value_counts().sort_index()) == [20, 4, 3]
    assert set(frame.model) == {"mixed_cox_intercept_marker"}
    assert (frame.analysis == "het").all()
    centre_rows = frame[frame.row_type == "centre"]
    assert centre_rows.term.iloc[0] == "ctc_positive | centre=C01"
    np.testing.assert_allclose(centre_rows.estimate, res.per_centre.marker_log_hr)
    var_rows = frame[frame.row_type == "variance"]
    assert list(var_rows.term) == [
        "var(intercept)",
        "var(ctc_positive)",
        "cor(intercept, ctc_positive)",
    ]
    assert var_rows.p_value.notna().sum() == 1


def test_row_order_and_centre_labels_do_not_matter(heterogeneous):
    spec = spec_for("c_random_intercept_slope")
    base = fit_mixed_cox(heterogeneous, spec)
    shuffled = heterogeneous.sample(frac=1.0, random_state=3).reset_index(drop=True)
    shuffled["centre"] = shuffled["centre"].str.replace("C", "site_")
    other = fit_mixed_cox(shuffled, spec)
    np.testing.assert_allclose(other.coefficients, base.coefficients, rtol=1e-7)
    np.testing.assert_allclose(other.variances, base.variances, rtol=1e-6)
    np.testing.assert_allclose(other.random_effects, base.random_effects, atol=1e-7)
    assert other.centres[0] == "site_01"


def test_centre_labels_read_as_text_and_missing_centres(heterogeneous):
    """Centres are their labels as text (1 and "1" are one centre); a patient without a
    centre is dropped and counted; a centre all of whose patients are dropped is not a
    centre of the fit."""
    spec = spec_for("a_random_intercept")
    clean = heterogeneous.copy()
    clean["centre"] = clean["centre"].str.slice(1).astype(int)  # C01 -> 1
    base = fit_mixed_cox(clean, spec)
    messy = clean.astype({"centre": object})
    messy.loc[messy.index[::2], "centre"] = messy.loc[messy.index[::2], "centre"].astype(str)
    extra = messy.iloc[:3].copy()
    extra["centre"] = [None, np.nan, "99"]  # two without a centre, one centre of its own
    extra.loc[extra.index[2], "age"] = np.nan  # ... whose only patient is dropped
    messy = pd.concat([messy, extra], ignore_index=True)
    res = fit_mixed_cox(messy, spec)
    assert res.centres == base.centres and res.n == base.n
    assert int(res.dropped.n_dropped.sum()) == 3
    np.testing.assert_allclose(res.coefficients, base.coefficients, rtol=1e-9)
    np.testing.assert_allclose(res.random_effects, base.random_effects, atol=1e-9)


def _collinear_centres(seed: int, n_centres: int = 12, size: int = 250) -> pd.DataFrame:
    """Centre intercepts u and marker slopes 0.5 - u: a correlation of -1 across centres."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 0.5, n_centres)
    frames = []
    for c in range(n_centres):
        x = rng.binomial(1, 0.4, size)
        age = rng.normal(0.0, 1.0, size)
        t = rng.exponential(np.exp(-(u[c] + (0.5 - u[c]) * x + 0.2 * age)))
        cens = rng.exponential(1.5, size)
        frames.append(
            pd.DataFrame(
                {
                    "centre": f"c{c:02d}",
                    "x": x,
                    "age": age,
                    "time": np.minimum(t, cens),
                    "event": (t <= cens).astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_correlation_at_the_boundary_has_no_correlation_se():
    """At |correlation| -> 1 the correlation has no curvature: its SE is missing (not the
    square root of a negative number), the variances' SEs come with it held there."""
    spec = MixedCoxSpec(
        duration="time",
        event="event",
        covariates=("x", "age"),
        random=("intercept", "marker"),
        marker="x",
        strata=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = fit_mixed_cox(_collinear_centres(0), spec)
        table = res.variance_components()
    assert res.boundary and res.correlation < -0.999
    assert any("correlation at the boundary" in n for n in res.notes)
    se = res.variance_parameter_se
    assert np.isnan(se[2]) and np.all(se[:2] > 0)
    assert table.std_error.iloc[:2].notna().all() and np.isnan(table.std_error.iloc[2])


def test_flat_variance_likelihood_gives_an_infinite_upper_limit(heterogeneous):
    """A log-variance SE so large that exp overflows: the upper limit is inf, silently."""
    import dataclasses

    res = fit_mixed_cox(heterogeneous, spec_for("a_random_intercept"))
    flat = dataclasses.replace(res, variance_parameters_covariance=np.array([[1e6]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        table = flat.variance_components()
    assert np.isinf(table.ci_upper.iloc[0]) and table.ci_lower.iloc[0] >= 0.0


def test_centres_their_data_cannot_identify_are_named(heterogeneous):
    """A centre without events (random intercept) or with events on one side of the marker
    only (random slope): the fit warns and notes it, naming the centre."""
    silent = heterogeneous.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PooledWarning)
        assert fit_mixed_cox(silent, spec_for("a_random_intercept")).notes == ()
    no_events = heterogeneous.assign(
        os_event=np.where(heterogeneous.centre == "C03", 0, heterogeneous.os_event)
    )
    with pytest.warns(PooledWarning, match="C03 have no events"):
        res = fit_mixed_cox(no_events, spec_for("a_random_intercept"))
    assert any("C03 have no events" in n for n in res.notes)
    one_sided = heterogeneous.assign(
        os_event=np.where(
            (heterogeneous.centre == "C05") & (heterogeneous.ctc_positive == 1),
            0,
            heterogeneous.os_event,
        )
    )
    with pytest.warns(PooledWarning, match="C05 have events only among 'ctc_positive'"):
        res = fit_mixed_cox(one_sided, spec_for("b_random_slope_strata"))
    assert any("random slopes are not identified" in n for n in res.notes)


def test_breslow_equals_efron_without_ties(heterogeneous):
    data = heterogeneous.copy()
    rng = np.random.default_rng(11)
    data["os_months"] = data["os_months"] - rng.uniform(0, 1, len(data))  # break the ties
    e = fit_mixed_cox(data, spec_for("b_random_slope_strata", ties="efron"))
    b = fit_mixed_cox(data, spec_for("b_random_slope_strata", ties="breslow"))
    np.testing.assert_allclose(e.coefficients, b.coefficients, rtol=1e-9)
    assert e.loglik_integrated == pytest.approx(b.loglik_integrated, abs=1e-8)


def test_without_strata_random_slope_alone(heterogeneous):
    """(ctc_positive | centre) on a common baseline: a slope without an intercept."""
    spec = MixedCoxSpec(
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        random=("marker",),
        strata=False,
    )
    res = fit_mixed_cox(heterogeneous, spec)
    assert res.random_terms == ("ctc_positive",) and res.variances[0] > 0
    assert res.baseline.strata == ("all",)


def test_variance_zero_limit_is_the_cox_model(heterogeneous):
    tiny = fit_mixed_cox(heterogeneous, spec_for("b_random_slope_strata", fixed_variance=(1e-12,)))
    cox = fit_cox(
        heterogeneous,
        CoxSpec(
            duration="os_months",
            event="os_event",
            covariates=COVARIATES,
            tol=1e-12,
            term_lr_tests=False,
        ),
    )
    np.testing.assert_allclose(tiny.coefficients, cox.coefficients, rtol=1e-7)
    assert tiny.loglik_integrated == pytest.approx(cox.loglik, abs=1e-6)


def test_complete_cases_are_counted(cohort):
    res = fit_mixed_cox(cohort, spec_for("a_random_intercept"))
    assert res.n == 2899 and int(res.dropped.n_dropped.sum()) == 101
    assert int(res.per_centre.n.sum()) == 2899


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"random": ("intercept",), "strata": True}, "stratified"),
        ({"random": ("slope",)}, "random must be one of"),
        ({"random": "marker"}, "tuples"),
        ({"marker": "her2"}, "expected among the covariates"),
        ({"fixed_variance": (0.1, 0.2)}, "expected 1 value"),
        ({"fixed_variance": (-0.1,)}, "positive"),
        (
            {"random": ("intercept", "marker"), "strata": False, "fixed_variance": (0.1, 0.1, 1.2)},
            "correlation",
        ),
        ({"ties": "exact"}, "efron"),
        ({"level": 1.5}, "level"),
    ],
)
def test_spec_errors(kw, match):
    base = {"duration": "t", "event": "e", "covariates": ("ctc_positive", "age")}
    base.update(kw)
    with pytest.raises(ConfigError, match=match):
        MixedCoxSpec(**base)


def test_data_errors(heterogeneous):
    one = heterogeneous[heterogeneous.centre == "C07"]
    with pytest.raises(DataError, match="at least two centres"):
        fit_mixed_cox(one, spec_for("b_random_slope_strata"))
    none = heterogeneous.assign(os_event=0)
    with pytest.raises(DataError, match="No events"):
        fit_mixed_cox(none, spec_for("b_random_slope_strata"))
    with pytest.raises(ConfigError, match="Columns"):
        fit_mixed_cox(heterogeneous.drop(columns="centre"), spec_for("a_random_intercept"))
    # a marker that only marks one centre: with centre strata it has no effect to estimate
    one = heterogeneous.assign(ctc_positive=(heterogeneous.centre == "C01").astype(int))
    with pytest.raises(DataError, match="'ctc_positive' \\(constant within every stratum\\)"):
        fit_mixed_cox(one, spec_for("b_random_slope_strata"))
    cat = heterogeneous.assign(marker=np.where(heterogeneous.ctc_positive == 1, "pos", "neg"))
    spec = MixedCoxSpec(
        duration="os_months",
        event="os_event",
        covariates=("marker", "age"),
        categorical=(("marker", "neg"),),
        marker="marker",
    )
    with pytest.raises(ConfigError, match="numeric"):
        fit_mixed_cox(cat, spec)


def test_coxph_frailty_quantities_needs_a_frailty_fit(heterogeneous):
    res = fit_mixed_cox(heterogeneous, spec_for("b_random_slope_strata"))
    with pytest.raises(ConfigError, match="random-intercept"):
        coxph_frailty_quantities(res, sparse=True)


# --------------------------------------------------------------------------------------------
# Recovery on simulated consortia (the big run: bench/bench_mixed_cox.py)
# --------------------------------------------------------------------------------------------


def simulate_consortium_frame(
    seed: int, *, n_centres: int = 15, n: int = 3000, beta: float = 0.4, tau: float = 0.3
) -> pd.DataFrame:
    """Centres with their own baseline and marker log HR ~ N(beta, tau^2); Weibull times."""
    rng = np.random.default_rng(seed)
    size = rng.multinomial(n - 40 * n_centres, np.full(n_centres, 1 / n_centres)) + 40
    centre = np.repeat(np.arange(n_centres), size)
    base = rng.normal(0.0, 0.3, n_centres)[centre]
    slope = rng.normal(beta, tau, n_centres)[centre]
    marker = rng.binomial(1, 0.3, n)
    age = rng.normal(0.0, 1.0, n)
    t = 60.0 * (rng.exponential(size=n) / np.exp(base + slope * marker + 0.2 * age)) ** (1 / 1.2)
    c = rng.uniform(12, 120, n)
    return pd.DataFrame(
        {
            "centre": [f"S{k:02d}" for k in centre],
            "ctc_positive": marker,
            "age": age,
            "os_months": np.ceil(np.minimum(t, c)),
            "os_event": (t <= c).astype(int),
        }
    )


@pytest.mark.slow
def test_recovery_of_marker_effect_and_tau():
    """30 replicates: the one-stage estimate of the mean marker log HR is unbiased within
    Monte Carlo error and its 95 % CI covers the truth in at least 80 % of replicates
    (a loose bound for 30 replicates; the 500-replicate run is bench/bench_mixed_cox.py)."""
    beta, tau = 0.4, 0.3
    est, cover, taus = [], [], []
    spec = MixedCoxSpec(
        duration="os_months",
        event="os_event",
        covariates=("ctc_positive", "age"),
        random=("marker",),
        strata=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(30):
            res = fit_mixed_cox(simulate_consortium_frame(seed, beta=beta, tau=tau), spec)
            j = res.term_names.index("ctc_positive")
            b, se = res.coefficients[j], res.std_errors[j]
            est.append(b)
            cover.append(abs(b - beta) <= 1.96 * se)
            taus.append(np.sqrt(res.tau2))
    est = np.array(est)
    bias = est.mean() - beta
    assert abs(bias) < 3 * est.std(ddof=1) / np.sqrt(len(est)) + 0.02
    assert np.mean(cover) >= 0.8
    assert 0.15 < np.median(taus) < 0.45
