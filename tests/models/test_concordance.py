"""Concordance: R survival 3.5-3's ``concordance()`` (``make_concordance.R``,
``make_counting.R``), a direct pair-by-pair computation on small data, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pooled.errors import ConfigError, DataError
from pooled.models.concordance import (
    COUNT_COLUMNS,
    compare_concordance,
    concordance_arrays,
)
from pooled.models.cox import (
    CoxSpec,
    compare_cox_concordance,
    cox_concordance,
    fit_cox,
    likelihood_ratio_test,
)
from pooled.models.timesplit import add_time_dependent, time_split
from pooled.results import TIDY_COLUMNS

from .conftest import REFERENCE

REL = 1e-6  # C, variances, weighted counts (observed ~1e-14)
P_ABS = 1e-6
R_COUNTS = dict(zip(COUNT_COLUMNS, ("concordant", "discordant", "tied.x", "tied.y", "tied.xy"),
                    strict=True))  # fmt: skip
CLINICAL = ("age", "node_positive", "grade3")


@pytest.fixture(scope="module")
def concordance_reference() -> dict:
    return json.loads((REFERENCE / "expected_concordance.json").read_text())


@pytest.fixture(scope="module")
def counting_reference() -> dict:
    return json.loads((REFERENCE / "expected_counting.json").read_text())


@pytest.fixture(scope="module")
def fits(cohort: pd.DataFrame):
    def fit(covariates):
        spec = CoxSpec(duration="os_months", event="os_event", covariates=covariates, tol=1e-12,
                       term_lr_tests=False)  # fmt: skip
        return fit_cox(cohort, spec)

    return {"clinical": fit(CLINICAL), "clinical_plus_ctc": fit((*CLINICAL, "ctc_positive"))}


@pytest.mark.parametrize("timewt, key", [("n", "concordance_harrell"), ("n/G2", "concordance_uno")])
@pytest.mark.parametrize("model", ["clinical", "clinical_plus_ctc"])
def test_concordance_matches_r(timewt, key, model, cohort, fits, concordance_reference):
    ref = concordance_reference[key][model]
    res = cox_concordance(fits[model], cohort, timewt=timewt)
    assert res.n == ref["n"] == 2899
    assert res.concordance == pytest.approx(ref["concordance"], rel=REL)
    assert res.variance == pytest.approx(ref["var"], rel=REL)
    assert res.std_error == pytest.approx(ref["se"], rel=REL)
    assert res.cox_variance == pytest.approx(ref["cvar"], rel=REL)
    for ours, theirs in R_COUNTS.items():
        assert res.counts[ours] == pytest.approx(ref["count_total"][theirs], rel=REL)
    by = ref["count_by_stratum"]
    assert list(res.by_stratum["stratum"]) == by["stratum"]
    for ours, theirs in R_COUNTS.items():
        np.testing.assert_allclose(res.by_stratum[ours], by[theirs], rtol=REL, atol=1e-9)


@pytest.mark.parametrize("timewt, key", [("n", "comparison_harrell"), ("n/G2", "comparison_uno")])
def test_comparison_matches_r(timewt, key, cohort, fits, concordance_reference):
    ref = concordance_reference[key]
    res = compare_cox_concordance(
        fits["clinical"],
        fits["clinical_plus_ctc"],
        cohort,
        timewt=timewt,
        labels=("clinical", "clinical_plus_ctc"),
    )
    np.testing.assert_allclose(res.concordance, list(ref["concordance"].values()), rtol=REL)
    np.testing.assert_allclose(res.covariance, ref["var"]["matrix"], rtol=REL)
    assert res.difference == pytest.approx(ref["difference_full_minus_clinical"], rel=REL)
    assert res.se_difference == pytest.approx(ref["se_difference"], rel=REL)
    assert res.z == pytest.approx(ref["z"], rel=REL)
    assert res.p_value == pytest.approx(ref["p_two_sided"], abs=P_ABS)
    cvar = [r.cox_variance for r in res.results]
    np.testing.assert_allclose(cvar, list(ref["cvar"].values()), rtol=REL)
    frame = res.to_frame()
    assert list(frame["term"]) == ["clinical", "clinical_plus_ctc",
                                   "clinical_plus_ctc - clinical"]  # fmt: skip
    assert frame["p_value"].iloc[-1] == res.p_value


def test_lr_test_of_the_marker_matches_r(fits, concordance_reference):
    ref = concordance_reference["lr_test_ctc_added"]
    for name, fit in fits.items():
        assert fit.loglik == pytest.approx(ref["loglik"][name], rel=REL)
        r_fit = concordance_reference["fits"][name]
        np.testing.assert_allclose(fit.coefficients, list(r_fit["coef"].values()), rtol=REL)
        np.testing.assert_allclose(fit.std_errors, list(r_fit["se"].values()), rtol=REL)
    test = likelihood_ratio_test(fits["clinical"], fits["clinical_plus_ctc"])
    assert test.chisq == pytest.approx(ref["chisq"], rel=REL)
    assert test.df == ref["df"] and test.terms == ("ctc_positive",)
    assert test.p_value == pytest.approx(ref["p"], abs=P_ABS)
    assert test.to_frame()["model"].item() == "cox_lr_test"
    with pytest.raises(ConfigError, match="contain"):
        likelihood_ratio_test(fits["clinical_plus_ctc"], fits["clinical"])


def test_per_centre_concordance_and_its_pooling_match_r(cohort, concordance_reference):
    """Harrell's C of the full model fitted in each centre alone, pooled by REML (and
    Knapp-Hartung) on the raw C scale, as make_concordance.R."""
    ref = concordance_reference["per_centre_harrell"]
    rows = []
    for centre in ref["centre"]:
        data = cohort.loc[cohort["centre"] == centre]
        spec = CoxSpec(duration="os_months", event="os_event", covariates=(*CLINICAL, "ctc_positive"),
                       strata=(), tol=1e-12, term_lr_tests=False)  # fmt: skip
        res = cox_concordance(fit_cox(data, spec), data)
        rows.append((res.n, res.events, res.concordance, res.std_error))
    n, events, c, se = map(np.array, zip(*rows, strict=True))
    assert list(n) == ref["n"] and list(events) == ref["events"]
    np.testing.assert_allclose(c, ref["C"], rtol=REL)
    np.testing.assert_allclose(se, ref["se"], rtol=REL)
    from pooled.models.meta import MetaSpec, fit_meta

    for key, knha in (("REML", False), ("REML_knha", True)):
        r = concordance_reference["per_centre_meta_analysis"][key]
        meta = fit_meta(c, se**2, MetaSpec(method="REML", knha=knha), labels=ref["centre"])
        assert meta.estimate == pytest.approx(r["estimate"], rel=REL)
        assert meta.se == pytest.approx(r["se"], rel=REL)
        assert meta.ci_lower == pytest.approx(r["ci_lower"], rel=REL)
        assert meta.tau2 == pytest.approx(r["tau2"], abs=1e-10)
        assert meta.q == pytest.approx(r["Q"], rel=REL)
        assert meta.pi_upper == pytest.approx(r["pi_upper"], rel=REL)


def test_concordance_frame(cohort, fits):
    res = cox_concordance(fits["clinical_plus_ctc"], cohort, timewt="n/G2")
    frame = res.to_frame(analysis="paddy", endpoint="os")
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert len(frame) == 1 + 8
    assert (frame["term"] == "concordance_uno").all()
    top = frame.iloc[0]
    assert top["stratum"] == "" and top["estimate"] == res.concordance
    assert top["std_error"] == pytest.approx(res.std_error)
    assert frame["concordant"].iloc[1:].sum() == pytest.approx(res.counts["concordant"])
    assert res.somers_d == pytest.approx(2 * res.concordance - 1)


# --- counting-process fits: expected_counting.json ---------------------------------------------


def _matches(res, ref):
    assert res.n == ref["n"]
    assert res.concordance == pytest.approx(ref["concordance"], rel=REL)
    assert res.variance == pytest.approx(ref["var"], rel=REL)
    assert res.cox_variance == pytest.approx(ref["cvar"], rel=REL)
    for ours, theirs in R_COUNTS.items():
        assert res.counts[ours] == pytest.approx(ref["count_total"][theirs], rel=REL)


def test_concordance_of_counting_process_fits_matches_r(cohort, counting_reference):
    split = time_split(cohort.dropna(subset=["age"]), [24, 60], duration="os_months",
                       event="os_event")  # fmt: skip
    periods = []
    for k in (1, 2, 3):
        periods.append(f"ctc_positive:strata(tgroup)tgroup={k}")
        split[periods[-1]] = split["ctc_positive"] * (split["tgroup"] == k)
    spec = CoxSpec(start="tstart", duration="os_months", event="os_event", tol=1e-12,
                   covariates=(*CLINICAL, *periods), term_lr_tests=False)  # fmt: skip
    ref = counting_reference["time_split"]
    _matches(cox_concordance(fit_cox(split, spec), split), ref["concordance"])
    unsplit = CoxSpec(start="tstart", duration="os_months", event="os_event", tol=1e-12,
                      covariates=("ctc_positive", *CLINICAL), term_lr_tests=False)  # fmt: skip
    _matches(cox_concordance(fit_cox(split, unsplit), split),
             ref["unsplit_model_on_split_rows"]["concordance"])  # fmt: skip
    with pytest.raises(ConfigError, match="not defined for counting-process"):
        cox_concordance(fit_cox(split, spec), split, timewt="n/G2")


def test_concordance_of_time_dependent_fit_matches_r(counting_reference):
    patients = pd.read_csv(REFERENCE / "cohort_serial_td.csv")
    samples = pd.read_csv(REFERENCE / "samples_serial_td.csv")
    samples["ctc_pos"] = (samples["ctc_count"] * 7.5 / samples["blood_volume_ml"] >= 5).astype(int)
    td = add_time_dependent(patients, samples, id="patient_id", duration="os_months",
                            event="os_event", sample_time="months", value="ctc_pos",
                            name="ctc_pos_td")  # fmt: skip
    spec = CoxSpec(start="tstart", duration="tstop", event="event", covariates=("ctc_pos_td", "age"),
                   tol=1e-12, term_lr_tests=False)  # fmt: skip
    res = cox_concordance(fit_cox(td, spec), td)
    _matches(res, counting_reference["time_dependent"]["concordance"]["efron"])


# --- a direct pair-by-pair computation ---------------------------------------------------------


def brute_force(time, event, risk, strata, start=None, timewt="n"):
    """Counts, C, IJ variance and cvar by looking at every pair (R's definitions)."""
    n = time.size
    counts = np.zeros(5)
    infl = np.zeros((n, 3))
    cvar_sum = 0.0
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        weight = {}
        event_times = np.unique(time[rows][event[rows] == 1])
        g = 1.0
        for t in np.unique(time[rows]):  # censoring KM, events before censorings at a time
            at = rows[time[rows] == t]
            if t in event_times:
                weight[t] = 1.0 / g**2 if (timewt == "n/G2" and event[rows].sum() >= 2) else 1.0
            c = np.sum(event[at] == 0)
            if c:
                later = np.sum(time[rows] > t)
                g *= later / (later + c)
        for t in event_times:
            w = weight[t]
            dead = rows[(time[rows] == t) & (event[rows] == 1)]
            at_risk = rows[(time[rows] > t) | ((time[rows] == t) & (event[rows] == 0))]
            if start is not None:
                at_risk = at_risk[start[at_risk] < t]
            for i in dead:
                for j in at_risk:
                    k = 0 if risk[i] > risk[j] else 1 if risk[i] < risk[j] else 2
                    counts[k] += w
                    infl[i, k] += w
                    infl[j, k] += w
            for a, i in enumerate(dead):
                for j in dead[a + 1 :]:
                    counts[4 if risk[i] == risk[j] else 3] += w
            members = rows[time[rows] >= t]
            if start is not None:
                members = members[start[members] < t]
            z = np.array([np.sum(risk[members] < risk[m]) - np.sum(risk[members] > risk[m])
                          for m in members])  # fmt: skip
            cvar_sum += dead.size * w * np.sum(z**2) / members.size
    pairs = counts[:3].sum()
    somers = (counts[0] - counts[1]) / pairs
    dfbeta = ((infl[:, 0] - infl[:, 1]) - somers * infl.sum(axis=1)) / (2 * pairs)
    return counts, (somers + 1) / 2, np.sum(dfbeta**2), cvar_sum / (4 * pairs**2)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(8, 40),
    timewt=st.sampled_from(["n", "n/G2"]),
    counting=st.booleans(),
)
def test_sweep_equals_pair_by_pair(seed, n, timewt, counting):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 8, n).astype(float)  # many tied times
    event = rng.binomial(1, 0.6, n)
    event[:2] = 1
    risk = rng.integers(0, 5, n).astype(float)  # many tied scores
    strata = rng.integers(0, 2, n)
    start = None
    if counting:
        timewt = "n"
        start = np.where(rng.uniform(size=n) < 0.4, time - rng.integers(1, 4, n), 0.0)
        start = np.minimum(start, time - 0.5)
    if np.sum(event) < 1:
        return
    try:
        res = concordance_arrays(time, event, risk, strata, start=start, timewt=timewt)
    except DataError:
        return
    counts, c, var, cvar = brute_force(time, event, risk, strata, start, timewt)
    np.testing.assert_allclose([res.counts[k] for k in COUNT_COLUMNS], counts, rtol=1e-12)
    assert res.concordance == pytest.approx(c, rel=1e-12)
    assert res.variance == pytest.approx(var, rel=1e-10)
    assert res.cox_variance == pytest.approx(cvar, rel=1e-10)


def test_influence_is_the_derivative_of_c():
    """The infinitesimal jackknife: one more copy of row i (its weight 1 -> 2) moves C by about
    its influence (to first order in 1 / n)."""
    rng = np.random.default_rng(4)
    n = 400
    time = np.ceil(rng.exponential(10, n))
    event = rng.binomial(1, 0.7, n)
    risk = rng.normal(size=n)
    res = concordance_arrays(time, event, risk)
    for i in range(0, n, 37):
        twice = concordance_arrays(np.append(time, time[i]), np.append(event, event[i]),
                                   np.append(risk, risk[i]))  # fmt: skip
        assert twice.concordance - res.concordance == pytest.approx(res.influence[i], rel=0.02)
    assert res.variance == pytest.approx(np.sum(res.influence**2))


def test_cluster_summed_se_matches_r(cohort):
    ref = json.loads((REFERENCE / "expected_fit_statistics.json").read_text())
    r = ref["fits"]["strat_efron_cluster_centre"]
    spec = CoxSpec(duration="os_months", event="os_event", tol=1e-12, term_lr_tests=False,
                   covariates=("ctc_positive", *CLINICAL), cluster="centre")  # fmt: skip
    fit = fit_cox(cohort, spec)
    res = cox_concordance(fit, cohort)
    assert res.std_error == pytest.approx(r["concordance_se"], rel=REL)
    assert fit.concordance_se == pytest.approx(r["concordance_se"], rel=REL)


# --- errors --------------------------------------------------------------------------------------


def test_errors(cohort, fits):
    t, e, x = np.array([1.0, 2, 3]), np.array([1, 0, 1]), np.array([0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="timewt"):
        concordance_arrays(t, e, x, timewt="S")
    with pytest.raises(DataError, match="0 \\(censored\\) or 1"):
        concordance_arrays(t, np.array([2, 0, 1]), x)
    with pytest.raises(DataError, match="finite"):
        concordance_arrays(t, e, np.array([0.1, np.nan, 0.3]))
    with pytest.raises(DataError, match="No comparable pairs"):
        concordance_arrays(t, np.zeros(3), x)
    a = concordance_arrays(t, e, x)
    b = concordance_arrays(t + 1, e, x)
    with pytest.raises(DataError, match="same patients"):
        compare_concordance(a, b)
    with pytest.raises(DataError, match="same timewt"):
        compare_concordance(a, concordance_arrays(t, e, x, timewt="n/G2"))
    with pytest.raises(DataError, match="identical clustering"):
        compare_concordance(a, concordance_arrays(t, e, x, cluster=np.array([1, 1, 2])))
    with pytest.raises(DataError, match="fitted to"):
        cox_concordance(fits["clinical"], cohort.iloc[:500])
