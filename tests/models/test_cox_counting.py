"""Counting-process (start, stop] Cox fits: time-split and time-dependent models against R
survival 3.5-3 (``make_timesplit.R``, ``make_timedep.R``, ``make_counting.R``), R's survSplit
and tmerge conventions, and what splitting follow-up must leave unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxSpec, cox_fit_arrays, cox_score_residuals, fit_cox
from pooled.models.timesplit import (
    TimeSplitSpec,
    add_time_dependent,
    fit_time_split,
    period_labels,
    time_split,
)
from pooled.models.zph import proportional_hazards_test

from .conftest import REFERENCE

REL = 1e-6  # coefficients, SEs, covariances, log-likelihoods, test statistics (observed ~1e-12)
P_ABS = 1e-6  # p-values
COVARIATES = ("ctc_positive", "age", "node_positive", "grade3")
PERIOD_TERMS = tuple(f"ctc_positive:strata(tgroup)tgroup={k}" for k in (1, 2, 3))


@pytest.fixture(scope="module")
def timesplit_reference() -> dict:
    return json.loads((REFERENCE / "expected_timesplit.json").read_text())


@pytest.fixture(scope="module")
def timedep_reference() -> dict:
    return json.loads((REFERENCE / "expected_timedep.json").read_text())


@pytest.fixture(scope="module")
def counting_reference() -> dict:
    return json.loads((REFERENCE / "expected_counting.json").read_text())


@pytest.fixture(scope="module")
def split_rows(cohort: pd.DataFrame) -> pd.DataFrame:
    """survSplit of the complete cases at 24 and 60 months, with R's period columns."""
    split = time_split(
        cohort.dropna(subset=["age"]), [24, 60], duration="os_months", event="os_event"
    )
    for k, term in enumerate(PERIOD_TERMS, start=1):
        split[term] = split["ctc_positive"] * (split["tgroup"] == k)
    return split


@pytest.fixture(scope="module")
def serial_td() -> pd.DataFrame:
    """tmerge of cohort_serial_td.csv and samples_serial_td.csv, as make_timedep.R."""
    patients = pd.read_csv(REFERENCE / "cohort_serial_td.csv")
    samples = pd.read_csv(REFERENCE / "samples_serial_td.csv")
    samples["ctc_pos"] = (samples["ctc_count"] * 7.5 / samples["blood_volume_ml"] >= 5).astype(int)
    return add_time_dependent(
        patients[["centre", "patient_id", "age", "os_months", "os_event"]],
        samples,
        id="patient_id",
        duration="os_months",
        event="os_event",
        sample_time="months",
        value="ctc_pos",
        name="ctc_pos_td",
    )


def split_spec(**kw) -> TimeSplitSpec:
    cox = CoxSpec(duration="os_months", event="os_event", covariates=COVARIATES, tol=1e-12, **kw)
    return TimeSplitSpec(cox=cox, exposure="ctc_positive", cuts=(24, 60))


def assert_fit_matches(res, ref) -> None:
    assert list(res.term_names) == list(ref["coef"])
    assert res.n == ref["n"] and res.events == ref["events"]
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    if "vcov" in ref:
        np.testing.assert_allclose(res.vcov, ref["vcov"]["matrix"], rtol=REL, atol=1e-14)
    assert res.loglik_null == pytest.approx(ref["loglik"][0], rel=REL)
    assert res.loglik == pytest.approx(ref["loglik"][1], rel=REL)
    assert res.iterations == ref["iter"]


# --- time-split model: expected_timesplit.json ------------------------------------------------


def test_survsplit_rows_match_r(split_rows, timesplit_reference):
    ref = timesplit_reference["survsplit"]
    assert len(split_rows) == ref["n_rows"] == 5979
    by = split_rows.groupby("tgroup")
    assert by.size().to_dict() == {int(k): v for k, v in ref["rows_by_tgroup"].items()}
    assert by["os_event"].sum().astype(int).to_dict() == {
        int(k): v for k, v in ref["events_by_tgroup"].items()
    }
    exposed = (split_rows["os_event"] * split_rows["ctc_positive"]).groupby(split_rows["tgroup"])
    assert exposed.sum().astype(int).to_dict() == {
        int(k): v for k, v in ref["ctc_positive_events_by_tgroup"].items()
    }


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_time_split_model_matches_r(ties, cohort, timesplit_reference):
    ref = timesplit_reference["time_split"][ties]
    res = fit_time_split(cohort, split_spec(ties=ties))
    assert_fit_matches(res.fit, ref)
    assert res.n_patients == 2899 and res.fit.n == 5979
    periods = ref["period_ctc"]
    table = res.periods
    assert list(table["term"]) == periods["coef_names"]
    assert list(table["label"]) == periods["period"]
    for ours, theirs in (
        ("estimate", "log_hr"),
        ("std_error", "se"),
        ("hr", "hr"),
        ("ci_lower", "lower95"),
        ("ci_upper", "upper95"),
    ):
        np.testing.assert_allclose(table[ours], periods[theirs], rtol=REL)
    wald = periods["wald_equal_periods"]
    assert res.wald_chisq == pytest.approx(wald["chisq"], rel=REL)
    assert res.wald_df == wald["df"]
    assert res.wald_p_value == pytest.approx(wald["p"], abs=P_ABS)
    assert list(table["events"]) == [441, 538, 221]
    assert list(table["exposed_events"]) == [163, 181, 66]


def test_explicit_period_indicators_match_r(split_rows, timesplit_reference):
    ref = timesplit_reference["time_split"]["explicit_indicators_efron"]
    data = split_rows.assign(**{f"ctc_p{k}": split_rows[t] for k, t in enumerate(PERIOD_TERMS, 1)})
    spec = CoxSpec(
        start="tstart",
        duration="os_months",
        event="os_event",
        tol=1e-12,
        covariates=("ctc_p1", "ctc_p2", "ctc_p3", "age", "node_positive", "grade3"),
    )
    assert_fit_matches(fit_cox(data, spec), ref)


def test_time_split_tidy_frame(cohort):
    res = fit_time_split(cohort, split_spec(analysis="paddy", endpoint="os"))
    frame = res.to_frame()
    assert list(frame["row_type"]) == ["period"] * 3 + ["covariate"] * 3 + ["test"]
    assert (frame["model"] == "cox_time_split").all() and (frame["n"] == 2899).all()
    assert list(frame["term"][:3]) == list(PERIOD_TERMS)
    test = frame.iloc[-1]
    assert test["term"] == "equal periods (Wald)" and test["df"] == 2
    assert test["p_value"] == res.wald_p_value and test["rows"] == 5979
    assert frame["lr_p_value"][:6].notna().all()  # per-term LR tests on the split rows


def test_time_split_counts_dropped_patients(cohort):
    res = fit_time_split(cohort, split_spec(term_lr_tests=False))
    dropped = res.fit.dropped
    assert dropped["n_dropped"].sum() == 101 == len(cohort) - res.n_patients
    assert set(dropped["reason"]) == {"missing: age"}


def test_period_without_events_is_refused(cohort):
    spec = TimeSplitSpec(cox=split_spec().cox, exposure="ctc_positive", cuts=(24, 500))
    with pytest.raises(DataError, match=r"period \(24,500\] has no events|choose cuts|Choose"):
        fit_time_split(cohort.assign(os_event=np.where(cohort.os_months > 24, 0, 1)), spec)


def test_time_split_spec_errors():
    cox = split_spec().cox
    with pytest.raises(ConfigError, match="exposure 'x'"):
        TimeSplitSpec(cox=cox, exposure="x", cuts=(24,))
    with pytest.raises(ConfigError, match="distinct"):
        TimeSplitSpec(cox=cox, exposure="ctc_positive", cuts=(24, 24))
    with pytest.raises(ConfigError, match="at least one"):
        TimeSplitSpec(cox=cox, exposure="ctc_positive", cuts=())
    assert period_labels((60, 24)) == ("(0,24]", "(24,60]", "(60,Inf)")


# --- R's conventions: survSplit and tmerge -----------------------------------------------------


def test_time_split_follows_survsplit(counting_reference):
    conv = counting_reference["conventions"]
    edge = pd.DataFrame(conv["survsplit_with_start"]["input"])
    out = time_split(edge, [-5, 24, 60], duration="t", event="e", start="s0")
    expected = pd.DataFrame(conv["survsplit_with_start"]["output"])
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=False)
    out = time_split(edge[["id", "t", "e"]], [24, 60], duration="t", event="e")
    expected = pd.DataFrame(conv["survsplit_from_zero"]["output"])
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=False)


def test_add_time_dependent_follows_tmerge(counting_reference):
    conv = counting_reference["conventions"]["tmerge_tdc"]
    out = add_time_dependent(
        pd.DataFrame(conv["patients"]),
        pd.DataFrame(conv["samples"]),
        id="id",
        duration="os",
        event="ev",
        sample_time="tm",
        value="v",
        name="x",
    )
    expected = pd.DataFrame(conv["output"]).astype(float)
    pd.testing.assert_frame_equal(out[expected.columns].astype(float), expected)


def test_tmerge_rows_match_r(serial_td, timedep_reference):
    ref = timedep_reference["tmerge"]
    assert len(serial_td) == ref["n_rows"] == 4135
    assert serial_td["event"].sum() == ref["n_events"]
    first = pd.DataFrame(ref["first_20_rows"])
    ours = serial_td.head(20)[first.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, first, check_dtype=False)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_time_dependent_cox_matches_r(ties, serial_td, timedep_reference):
    ref = timedep_reference["time_dependent"][ties]
    spec = CoxSpec(
        start="tstart",
        duration="tstop",
        event="event",
        covariates=("ctc_pos_td", "age"),
        ties=ties,
        tol=1e-12,
    )
    assert_fit_matches(fit_cox(serial_td, spec), ref)


def test_add_time_dependent_errors():
    patients = pd.DataFrame({"id": [1, 1], "os": [3.0, 4.0], "ev": [1, 0]})
    samples = pd.DataFrame({"id": [1], "t": [0.0], "v": [1]})
    kw = dict(id="id", duration="os", event="ev", sample_time="t", value="v", name="x")
    with pytest.raises(DataError, match="one row per patient"):
        add_time_dependent(patients, samples, **kw)
    with pytest.raises(DataError, match="positive 'os'"):
        add_time_dependent(patients.assign(id=[1, 2], os=[0.0, 2.0]), samples, **kw)
    with pytest.raises(ConfigError, match="samples"):
        add_time_dependent(patients.assign(id=[1, 2]), samples.drop(columns="v"), **kw)


# --- robust SEs, PH test: expected_counting.json ------------------------------------------------


def test_time_split_robust_cluster_patient_matches_r(cohort, counting_reference):
    ref = counting_reference["time_split"]["robust_cluster_patient"]
    res = fit_time_split(cohort, split_spec(cluster="patient_id", term_lr_tests=False)).fit
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    np.testing.assert_allclose(res.naive_std_errors, ref["naive_se"], rtol=REL)
    np.testing.assert_allclose(
        res.robust_covariance, ref["robust_vcov"]["matrix"], rtol=REL, atol=1e-14
    )
    assert res.wald_test == pytest.approx(ref["wald_test"], rel=REL)
    assert res.robust_score_test == pytest.approx(ref["robust_score_test"], rel=REL)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_time_dependent_robust_matches_r(ties, serial_td, counting_reference):
    ref = counting_reference["time_dependent"]["robust_cluster_patient"][ties]
    spec = CoxSpec(
        start="tstart",
        duration="tstop",
        event="event",
        covariates=("ctc_pos_td", "age"),
        ties=ties,
        tol=1e-12,
        cluster="patient_id",
        term_lr_tests=False,
    )
    res = fit_cox(serial_td, spec)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    np.testing.assert_allclose(res.naive_std_errors, ref["naive_se"], rtol=REL)
    assert res.wald_test == pytest.approx(ref["wald_test"], rel=REL)
    assert res.robust_score_test == pytest.approx(ref["robust_score_test"], rel=REL)
    assert res.score_test == pytest.approx(ref["score_test"], rel=REL)


def _zph_matches(fit, data, ref) -> None:
    for transform in ("km", "rank", "identity"):
        res = proportional_hazards_test(fit, data, transform=transform)
        assert list(res.table["term"]) == ref[transform]["terms"]
        np.testing.assert_allclose(res.table["chisq"], ref[transform]["chisq"], rtol=REL)
        np.testing.assert_allclose(res.table["p_value"], ref[transform]["p"], atol=P_ABS)
        assert res.residuals.shape[0] == fit.events


def test_cox_zph_of_time_split_fit_matches_r(split_rows, counting_reference):
    ref = counting_reference["time_split"]
    spec = CoxSpec(
        start="tstart",
        duration="os_months",
        event="os_event",
        tol=1e-12,
        covariates=("age", "node_positive", "grade3", *PERIOD_TERMS),
        term_lr_tests=False,
    )
    _zph_matches(fit_cox(split_rows, spec), split_rows, ref["cox_zph"])
    # the unsplit model on the split rows: km and identity as unsplit, rank differs
    unsplit = CoxSpec(
        start="tstart",
        duration="os_months",
        event="os_event",
        tol=1e-12,
        covariates=COVARIATES,
        term_lr_tests=False,
    )
    _zph_matches(
        fit_cox(split_rows, unsplit), split_rows, ref["unsplit_model_on_split_rows"]["cox_zph"]
    )


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_zph_of_time_dependent_fit_matches_r(ties, serial_td, counting_reference):
    spec = CoxSpec(
        start="tstart",
        duration="tstop",
        event="event",
        covariates=("ctc_pos_td", "age"),
        ties=ties,
        tol=1e-12,
        term_lr_tests=False,
    )
    _zph_matches(
        fit_cox(serial_td, spec), serial_td, counting_reference["time_dependent"]["cox_zph"][ties]
    )


# --- what splitting must leave unchanged --------------------------------------------------------


def test_split_rows_give_the_unsplit_fit(cohort, split_rows, timesplit_reference):
    ref = timesplit_reference["unsplit"]["efron"]
    spec = CoxSpec(
        start="tstart",
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        tol=1e-12,
        term_lr_tests=False,
    )
    res = fit_cox(split_rows, spec)
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    assert res.loglik == pytest.approx(ref["loglik"][1], rel=REL)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True),
    ties=st.sampled_from(["efron", "breslow"]),
)
def test_splitting_changes_nothing(seed, cuts, ties):
    """Any split of follow-up (cuts at tied event times too) leaves the fit and the patients'
    summed score residuals as they are."""
    rng = np.random.default_rng(seed)
    n = 120
    x = np.column_stack([rng.binomial(1, 0.4, n), rng.normal(size=n)])
    time = np.ceil(rng.exponential(20, n) * np.exp(-0.4 * x[:, 0]))
    event = rng.binomial(1, 0.7, n).astype(float)
    event[0] = 1.0
    centre = rng.integers(0, 3, n)
    base = cox_fit_arrays(x, time, event, centre, ties=ties, tol=1e-12)
    frame = pd.DataFrame(
        {"x0": x[:, 0], "x1": x[:, 1], "t": time, "e": event, "c": centre, "id": np.arange(n)}
    )
    split = time_split(frame, cuts, duration="t", event="e")
    xs = split[["x0", "x1"]].to_numpy()
    fit = cox_fit_arrays(
        xs,
        split["t"].to_numpy(),
        split["e"].to_numpy(),
        split["c"].to_numpy(),
        ties=ties,
        tol=1e-12,
        start=split["tstart"].to_numpy(),
    )
    np.testing.assert_allclose(fit.coefficients, base.coefficients, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.covariance, base.covariance, rtol=1e-9, atol=1e-14)
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-12)
    resid = cox_score_residuals(
        xs,
        split["t"].to_numpy(),
        split["e"].to_numpy(),
        split["c"].to_numpy(),
        base.coefficients,
        ties=ties,
        start=split["tstart"].to_numpy(),
    )
    by_patient = pd.DataFrame(resid).groupby(split["id"].to_numpy()).sum().to_numpy()
    np.testing.assert_allclose(
        by_patient,
        cox_score_residuals(x, time, event, centre, base.coefficients, ties=ties),
        atol=1e-10,
    )


def test_delayed_entry_leaves_the_risk_set():
    """A row entering late (start > an event time) is not in that event's risk set."""
    x = np.array([[1.0], [0.0], [1.0], [0.0]])
    time = np.array([2.0, 3.0, 5.0, 6.0])
    event = np.array([1.0, 1.0, 1.0, 0.0])
    late = cox_fit_arrays(x, time, event, start=np.array([0.0, 0.0, 0.0, 4.0]))
    # by hand: risk sets {0,1,2,3 -> without 3}, {1,2}, {2,3}; log L at beta = 0
    assert late.loglik_null == pytest.approx(-np.log(3) - np.log(2) - np.log(2), rel=1e-12)


def test_counting_process_errors(split_rows):
    spec = CoxSpec(start="tstart", duration="os_months", event="os_event", covariates=COVARIATES)
    bad = split_rows.copy()
    bad.loc[3, "tstart"] = bad.loc[3, "os_months"]
    with pytest.raises(DataError, match="start < stop"):
        fit_cox(bad, spec)
    with pytest.raises(ConfigError, match="multiple imputation"):
        CoxSpec(
            start="tstart",
            duration="os_months",
            event="os_event",
            covariates=COVARIATES,
            missing="mice",
        )
    with pytest.raises(ConfigError, match="tstart"):
        fit_cox(split_rows.drop(columns="tstart"), spec)


# --- recovery on simulated consortia --------------------------------------------------------------


def simulate_changing_hr(n: int, seed: int, log_hr: tuple[float, float], change: float = 24.0):
    """Piecewise-exponential survival: the exposure's log HR is log_hr[0] before ``change``
    months and log_hr[1] after; centre-specific baselines; whole-month times (ties)."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 10, n)
    exposed = rng.binomial(1, 0.4, n)
    age = rng.normal(60, 10, n).round()
    base = 0.015 * np.exp(rng.normal(0, 0.3, 10))[centre] * np.exp(0.01 * (age - 60))
    rate1 = base * np.exp(log_hr[0] * exposed)
    rate2 = base * np.exp(log_hr[1] * exposed)
    target = rng.exponential(size=n)
    first = target / rate1
    t_event = np.where(first <= change, first, change + (target - rate1 * change) / rate2)
    t_cens = rng.uniform(12, 120, n)
    return pd.DataFrame(
        {
            "centre": centre,
            "exposed": exposed,
            "age": age,
            "os_months": np.ceil(np.minimum(t_event, t_cens)),
            "os_event": (t_event <= t_cens).astype(float),
        }
    )


def test_time_split_recovers_a_changing_hazard_ratio():
    truth = (0.8, 0.0)
    data = simulate_changing_hr(5000, seed=3, log_hr=truth)
    spec = TimeSplitSpec(
        cox=CoxSpec(duration="os_months", event="os_event", covariates=("exposed", "age"),
                    term_lr_tests=False),
        exposure="exposed",
        cuts=(24,),
    )  # fmt: skip
    res = fit_time_split(data, spec)
    z = (res.periods["estimate"].to_numpy() - np.array(truth)) / res.periods["std_error"]
    assert np.all(np.abs(z) < 3), z
    assert res.wald_p_value < 1e-4 and res.wald_df == 1
    # the PH test of the unsplit model sees the same departure
    unsplit = fit_cox(data, spec.cox)
    assert proportional_hazards_test(unsplit, data).table["p_value"].iloc[0] < 0.01


def test_time_split_of_a_constant_hazard_ratio_finds_no_change():
    data = simulate_changing_hr(5000, seed=4, log_hr=(0.5, 0.5))
    spec = TimeSplitSpec(
        cox=CoxSpec(duration="os_months", event="os_event", covariates=("exposed", "age"),
                    term_lr_tests=False),
        exposure="exposed",
        cuts=(24, 60),
    )  # fmt: skip
    res = fit_time_split(data, spec)
    assert res.wald_df == 2 and res.wald_p_value > 0.01
    z = (res.periods["estimate"].to_numpy() - 0.5) / res.periods["std_error"]
    assert np.all(np.abs(z) < 3), z


def test_time_split_of_a_categorical_exposure(cohort):
    cox = CoxSpec(duration="os_months", event="os_event", covariates=("subtype", "age"),
                  categorical=(("subtype", "luminal_a"),), term_lr_tests=False)  # fmt: skip
    res = fit_time_split(cohort, TimeSplitSpec(cox=cox, exposure="subtype", cuts=(36,)))
    assert dict(res.fit.levels)["subtype"][0] == "luminal_a"
    terms = list(res.periods["term"])
    assert len(terms) == 3 * 2 and terms[0].startswith("subtype") and "tgroup=1" in terms[0]
    assert terms[3].endswith("tgroup=2")  # the exposure's columns vary fastest, as R
    assert res.wald_df == 3
    assert res.periods["exposed_events"].isna().all()
