"""Tests of the Bayesian piecewise-exponential model and the Bayesian two-stage meta-analysis.

Recovery tests on a simulated consortium with known truth (fixed seeds), a comparison with
R's stratified Cox model on the reference cohort, an exact check of the collapsed-cell
likelihood against a patient-level computation, and forced diagnostics warnings. Models are
small and chains short so the module stays fast; the two sampled fits share fixtures.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError, SamplingWarning
from pooled.models._backend import az  # ArviZ imported as the package imports it
from pooled.models.bayes import (
    BayesMetaSpec,
    BayesSpec,
    PriorSpec,
    SamplerSpec,
    build_meta_model,
    build_piecewise_model,
    compile_model,
    fit_bayes_meta,
    fit_bayes_survival,
    piecewise_cells,
)
from pooled.models.bayes_cells import interval_exposure
from pooled.results import TIDY_COLUMNS

SUBTYPES = ("luminal_a", "luminal_b", "her2_positive", "triple_negative")
TRUE_LOG_HR = math.log(1.25)  # marker log HR in luminal A (pooled mean mu)
TRUE_INTERACTION = (math.log(1.9), 0.0, 0.2)  # luminal B, HER2+, triple negative
TRUE_TAU = 0.1


def simulate_consortium(n: int = 3000, n_centres: int = 6, seed: int = 11) -> pd.DataFrame:
    """Weibull survival with centre-specific baselines, marker effects and subtype interaction."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, n_centres, n)
    subtype = rng.choice(4, size=n, p=[0.4, 0.3, 0.15, 0.15])
    marker = rng.binomial(1, 0.3, n)
    node = rng.binomial(1, 0.4, n)
    age = rng.normal(55, 10, n).round(1)
    beta = TRUE_LOG_HR + TRUE_TAU * rng.normal(size=n_centres)
    interaction = np.array([0.0, *TRUE_INTERACTION])
    lp = (
        marker * (beta[centre] + interaction[subtype])
        + np.array([0.0, 0.3, 0.5, 0.8])[subtype]
        + 0.5 * node
        + 0.02 * (age - 55)
    )
    shape = 1.0 + 0.3 * rng.random(n_centres)
    scale = 0.01 * np.exp(rng.normal(0, 0.3, n_centres))
    t = (rng.exponential(size=n) / (scale[centre] * np.exp(lp))) ** (1 / shape[centre])
    c = rng.uniform(24, 96, n)
    return pd.DataFrame(
        {
            "centre": [f"C{j + 1}" for j in centre],
            "subtype": np.array(SUBTYPES)[subtype],
            "dtc_positive": marker,
            "node_positive": node,
            "age": age,
            "os_months": np.minimum(t, c),
            "os_event": (t <= c).astype(int),
        }
    )


FAST = SamplerSpec(draws=500, tune=500, chains=2, cores=2, ess_min=200)


@pytest.fixture(scope="module")
def consortium() -> pd.DataFrame:
    return simulate_consortium()


@pytest.fixture(scope="module")
def recovery_fit(consortium):
    spec = BayesSpec(covariates=("node_positive",), sampling=FAST, thresholds=(1.5,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return fit_bayes_survival(consortium, spec, seed=20240611)


# ---------------------------------------------------------------------------------------------
# Exact likelihood check (no sampling)


def _patient_level_loglik(data, spec, point, values):
    """Piecewise-exponential log-likelihood summed over patients x intervals, from scratch."""
    cells = piecewise_cells(data, spec)
    frame = data.dropna(subset=[spec.duration, spec.event, spec.marker, *spec.covariates])
    exposure, last = interval_exposure(
        frame[spec.duration].to_numpy(float), np.asarray(cells.cut_points)
    )
    centre = pd.Categorical(frame["centre"], categories=cells.centres).codes
    sub = pd.Categorical(frame["subtype"], categories=cells.subtypes).codes
    marker = frame[spec.marker].to_numpy(float)
    inter = np.concatenate([[0.0], point["interaction_log_hr"]])
    main = np.concatenate([[0.0], point["subtype_log_hr"]])
    lp = marker * (values["centre_log_hr"][centre] + inter[sub]) + main[sub]
    scales = dict(zip(cells.continuous_terms, cells.continuous_scales, strict=True))
    for j, name in enumerate(spec.covariates):
        x = frame[name].to_numpy(float)
        # continuous covariates enter the model per standard deviation (scale 1 otherwise)
        lp = lp + point["covariate_log_hr"][j] * (x - x.mean()) / scales.get(name, 1.0)
    eta = values["log_baseline"][centre] + lp[:, None]  # patients x intervals
    d = np.zeros_like(exposure)
    d[np.arange(len(frame)), last] = frame[spec.event].to_numpy(float)
    return float(np.sum(d * eta - exposure * np.exp(eta)))


@pytest.mark.parametrize("zero_times", [False, True])
@pytest.mark.parametrize("covariates", [("node_positive",), ("node_positive", "age")])
def test_collapsed_likelihood_equals_patient_level(consortium, covariates, zero_times):
    data = consortium.copy()
    data.loc[::50, "age"] = np.nan  # complete-case handling must match
    spec = BayesSpec(covariates=covariates, n_intervals=7)
    if zero_times:  # zero follow-up (events and censorings at 0) is used, as coxph uses it
        data.loc[::37, spec.duration] = 0.0
        assert data.loc[::37, spec.event].sum() > 0
    model = build_piecewise_model(data, spec)
    cells = piecewise_cells(data, spec)
    if "age" in covariates:
        assert cells.continuous_terms == ("age",) and cells.row_exposure.size > cells.n
    else:
        assert cells.n_cells < cells.n  # genuinely collapsed
    rng = np.random.default_rng(3)
    point = {
        k: v + rng.normal(0, 0.3, np.shape(v))
        for k, v in model.initial_point(random_seed=1).items()
    }
    # the sampler moves z with beta = transform @ z: pick beta (a strong age effect), solve for z
    names = list(model.coords["fixed_effect"])
    beta = rng.normal(0, 0.3, len(names))
    beta[-len(covariates) :] = np.array([0.4, 0.03])[: len(covariates)]
    transform = model["fixed_effects_transform"].get_value()
    point["fixed_effects_z"] = np.linalg.solve(transform, beta)
    outputs = model.replace_rvs_by_values(
        [
            model["loglik"],
            model["log_baseline"],
            model["centre_log_hr"],
            model["interaction_log_hr"],
            model["subtype_log_hr"],
            model["covariate_log_hr"],
        ]
    )
    fn = model.compile_fn(
        outputs,
        inputs=model.value_vars,
        on_unused_input="ignore",
        mode="FAST_COMPILE",
        point_fn=True,
    )
    loglik, log_baseline, centre_log_hr, interaction, subtype, covariate = fn(point)
    np.testing.assert_allclose(covariate, beta[-len(covariates) :])
    untransformed = {
        "interaction_log_hr": interaction,
        "subtype_log_hr": subtype,
        "covariate_log_hr": covariate,
    }
    expected = _patient_level_loglik(
        data, spec, untransformed, {"log_baseline": log_baseline, "centre_log_hr": centre_log_hr}
    )
    assert float(loglik) == pytest.approx(expected, rel=1e-10)
    complete = data.dropna(subset=list(covariates))
    assert (
        cells.n_zero_time == int((complete[spec.duration] == 0).sum()) > (0 if zero_times else -1)
    )
    assert cells.n == len(data.dropna(subset=list(covariates)))
    assert cells.events.sum() == data.dropna(subset=list(covariates))[spec.event].sum()


@pytest.mark.parametrize("axes", [(-1,), (-2, -1)])
def test_zero_sum_draws_transformed_as_pymc_does(axes):
    """nutpie stores unconstrained draws; they are mapped back in numpy as PyMC would."""
    import pytensor.tensor as pt
    from pymc.distributions.transforms import ZeroSumTransform

    from pooled.models.bayes import _extend_zero_sum

    values = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    expected = ZeroSumTransform(axes).backward(pt.as_tensor(values)).eval()
    got = values
    for axis in axes:
        got = _extend_zero_sum(got, axis)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.allclose(got.sum(axis=-1), 0.0)


def test_model_coords_and_no_sampling(consortium):
    model = build_piecewise_model(consortium, BayesSpec(n_intervals=5))
    assert list(model.coords["subtype"]) == list(SUBTYPES)
    assert len(model.coords["interval"]) == 5
    assert len(model.coords["centre"]) == 6
    for name in ("mu", "tau", "centre_z", "interaction_log_hr", "baseline_deviation_sd"):
        assert name in model.named_vars


def test_quantile_cut_points_split_events_evenly(consortium):
    cells = piecewise_cells(consortium, BayesSpec(n_intervals=4))
    times = consortium.loc[consortium.os_event == 1, "os_months"].to_numpy()
    per_interval = np.histogram(times, bins=[0, *cells.cut_points, np.inf])[0]
    assert per_interval.sum() == len(times)
    assert np.abs(per_interval - len(times) / 4).max() <= 1


def test_bad_input_raises(consortium):
    with pytest.raises(DataError, match="not in the data"):
        piecewise_cells(consortium, BayesSpec(marker="ctc_positive"))
    bad = consortium.assign(subtype="basal")
    with pytest.raises(DataError, match="subtype_levels"):
        piecewise_cells(bad, BayesSpec())
    with pytest.raises(ConfigError, match="sampler"):
        SamplerSpec(sampler="stan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PriorSpec(tau_sd=-1.0)


# ---------------------------------------------------------------------------------------------
# Recovery on a simulated consortium with known truth


@pytest.mark.slow
def test_pooled_hr_covers_truth(recovery_fit):
    pooled = recovery_fit.row("pooled")
    assert pooled["ci_lower"] < math.exp(TRUE_LOG_HR) < pooled["ci_upper"]
    assert pooled["r_hat"] < 1.02 and pooled["ess_bulk"] > 200


@pytest.mark.slow
def test_luminal_b_interaction_recovered(recovery_fit):
    lum_b = recovery_fit.row("interaction", "luminal_b")
    assert lum_b["ci_lower"] > 1.0  # detected
    assert lum_b["ci_lower"] < math.exp(TRUE_INTERACTION[0]) < lum_b["ci_upper"]  # recovered
    her2 = recovery_fit.row("interaction", "her2_positive")
    assert her2["ci_lower"] < 1.0 < her2["ci_upper"]  # no interaction planted
    sub_b = recovery_fit.row("subtype", "luminal_b")
    true_b = math.exp(TRUE_LOG_HR + TRUE_INTERACTION[0])
    assert sub_b["ci_lower"] < true_b < sub_b["ci_upper"]


@pytest.mark.slow
def test_tidy_table_and_probabilities(recovery_fit):
    table = recovery_fit.to_frame()
    assert list(table.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    for column in (
        "r_hat",
        "ess_bulk",
        "ess_tail",
        "divergences",
        "prob_hr_gt_1",
        "prob_hr_gt_1_5",
    ):
        assert column in table.columns
    assert set(table["quantity"]) >= {
        "pooled",
        "heterogeneity",
        "predictive",
        "centre",
        "subtype",
        "interaction",
        "covariate",
    }
    assert (table["quantity"] == "centre").sum() == 6
    mu = recovery_fit.idata.posterior["mu"].values.ravel()
    pooled = recovery_fit.row("pooled")
    assert pooled["prob_hr_gt_1"] == pytest.approx((mu > 0).mean())
    assert pooled["prob_hr_gt_1_5"] == pytest.approx((mu > math.log(1.5)).mean())
    assert pooled["hr"] == pytest.approx(math.exp(np.median(mu)))
    # the predictive interval for a new centre is wider than the pooled interval
    new = recovery_fit.row("predictive", "new_centre")
    assert new["ci_upper"] / new["ci_lower"] > pooled["ci_upper"] / pooled["ci_lower"]
    assert math.isnan(recovery_fit.row("heterogeneity")["hr"])  # tau is not a hazard ratio
    assert recovery_fit.sampler == "nutpie" and recovery_fit.n_cells < 3000
    # the priors and the zero times are stated in the table, every parameter is diagnosed
    assert table.loc[table["quantity"] == "heterogeneity", "prior"].item() == "HalfNormal(0.5)"
    assert recovery_fit.tau_prior == "HalfNormal(0.5)"
    assert table.loc[table["term"] == "node_positive", "prior"].item() == "Normal(0, 1)"
    assert (table["n_zero_time"] == 0).all() and recovery_fit.n_zero_time == 0
    assert set(recovery_fit.parameters["parameter"]) >= {"tau", "baseline_deviation_sd", "centre_z"}
    assert "tau" in set(recovery_fit.prior_frame()["parameter"])
    assert int(table["n"].iloc[0]) == 3000


@pytest.mark.slow
def test_netcdf_roundtrip(recovery_fit, tmp_path):
    path = recovery_fit.save_netcdf(tmp_path / "bayes.nc")
    reopened = az.from_netcdf(path)
    np.testing.assert_array_equal(
        reopened.posterior["mu"].values, recovery_fit.idata.posterior["mu"].values
    )


@pytest.mark.slow
def test_plots(recovery_fit):
    import matplotlib.pyplot as plt

    from pooled.plots.bayes import posterior_plot, trace_plot

    ax = posterior_plot(recovery_fit)
    assert ax.get_title()
    axes = trace_plot(recovery_fit, var_names=("mu", "tau"))
    assert np.asarray(axes).shape == (2, 2)
    plt.close("all")


# ---------------------------------------------------------------------------------------------
# Agreement with R's stratified Cox model (vague priors)


@pytest.mark.slow
def test_vague_priors_agree_with_stratified_cox(cohort, survival_reference):
    """Vague priors, one common marker effect: the posterior median of the marker log HR
    should match R's coxph(strata(centre), Efron) estimate 0.21005 (se 0.0618).

    Tolerance: 3 Monte Carlo SEs of the median plus 0.1 x the Cox SE. The second term
    covers the piecewise-exponential approximation of the centre baselines (20 intervals,
    a difference of a few hundredths of an SE in published comparisons) and the gap between
    a posterior median and a maximum partial-likelihood estimate (O(1/n)); it is a tenth
    of the statistical uncertainty, so a wrong likelihood or design would fail it.
    """
    reference = survival_reference["cox_strat_efron"]
    spec = BayesSpec(
        marker="ctc_positive",
        covariates=("age", "node_positive", "grade3"),
        interaction=False,
        centre_effects="common",
        n_intervals=20,
        priors=PriorSpec.vague(),
        sampling=SamplerSpec(cores=2),  # the defaults: 4 chains x (500 + 1,000)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)  # converges at the default settings
        res = fit_bayes_survival(cohort, spec, seed=7)
    assert res.converged and res.divergences == 0
    assert res.n == reference["n"] and res.events == reference["nevent"]
    pooled = res.row("pooled")
    tolerance = 3 * pooled["mcse_median"] + 0.1 * reference["se"]["ctc_positive"]
    assert abs(pooled["estimate"] - reference["coef"]["ctc_positive"]) < tolerance
    # posterior sd close to the Cox SE (vague priors, large sample)
    assert pooled["std_error"] == pytest.approx(reference["se"]["ctc_positive"], rel=0.1)
    age = res.row("covariate", "age")
    assert (
        abs(age["estimate"] - reference["coef"]["age"])
        < 0.2 * reference["se"]["age"] + 3 * (age["mcse_median"])
    )


# ---------------------------------------------------------------------------------------------
# Bayesian two-stage meta-analysis, diagnostics warning, reproducibility


def test_bayes_meta_on_bcg_agrees_with_reml(dat_bcg, survival_reference):
    """dat.bcg with vague priors: the posterior median of mu is near metafor's REML estimate
    (-0.7145); the posterior sd is larger, as it propagates the uncertainty in tau."""
    reml = survival_reference["dat_bcg_meta_analysis"]["REML"]
    spec = BayesMetaSpec(
        priors=PriorSpec(marker_sd=10.0, tau_sd=2.0),
        sampling=SamplerSpec(draws=1000, tune=1000, chains=2, cores=2, target_accept=0.95),
    )
    res = fit_bayes_meta(
        dat_bcg["yi"], np.sqrt(dat_bcg["vi"]), dat_bcg["trial"].astype(str), spec, seed=5
    )
    pooled = res.row("pooled")
    assert abs(pooled["estimate"] - reml["estimate"]) < 0.1
    assert pooled["std_error"] > reml["se"]
    tau = res.row("heterogeneity")
    assert tau["ci_lower"] < math.sqrt(reml["tau2"]) < tau["ci_upper"]
    assert pooled["prob_hr_gt_1"] < 0.01
    assert (res.to_frame()["quantity"] == "centre").sum() == len(dat_bcg)


def test_sampling_warning_on_badly_mixing_run():
    """Almost no tuning and a handful of draws: the diagnostics must flag the run."""
    spec = BayesMetaSpec(sampling=SamplerSpec(draws=10, tune=20, chains=2, cores=1))
    with pytest.warns(SamplingWarning, match="R-hat|ESS"):
        res = fit_bayes_meta([0.1, 0.5, 0.3], [0.2, 0.2, 0.3], ["A", "B", "C"], spec, seed=1)
    assert not res.converged


@pytest.mark.filterwarnings("ignore::pooled.errors.SamplingWarning")
def test_reproducible_for_a_seed_and_compiled_model_reused():
    spec = BayesMetaSpec(sampling=SamplerSpec(draws=200, tune=200, chains=2, cores=2, ess_min=1))
    args = ([0.1, 0.5, 0.3, 0.2], [0.2, 0.25, 0.3, 0.15], ["A", "B", "C", "D"])
    compiled = compile_model(build_meta_model(*args, spec))
    first = fit_bayes_meta(*args, spec, seed=42)
    second = fit_bayes_meta(*args, spec, seed=42, compiled=compiled)
    other = fit_bayes_meta(*args, spec, seed=43, compiled=compiled)
    shifted = fit_bayes_meta(
        [2.1, 2.5, 2.3, 2.2], args[1], args[2], spec, seed=42, compiled=compiled
    )
    assert shifted.row("pooled")["estimate"] > first.row("pooled")["estimate"] + 1.0
    a = first.idata.posterior["mu"].values
    np.testing.assert_array_equal(a, second.idata.posterior["mu"].values)
    assert not np.array_equal(a, other.idata.posterior["mu"].values)


def test_meta_input_errors():
    with pytest.raises(DataError):
        build_meta_model([0.1, 0.2], [0.1, -0.1], ["A", "B"])
    with pytest.raises(DataError):
        build_meta_model([0.1], [0.1], ["A"])


def test_unobserved_subtype_levels_are_dropped(consortium):
    data = consortium[consortium.subtype != "her2_positive"]
    cells = piecewise_cells(data, BayesSpec())
    assert cells.subtypes == ("luminal_a", "luminal_b", "triple_negative")
    assert sum(cells.subtype_n) == len(data)
    with pytest.raises(DataError, match="reference subtype"):
        piecewise_cells(consortium[consortium.subtype != "luminal_a"], BayesSpec())
