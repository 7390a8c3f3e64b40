"""Serial CTC exposures, clearance, and the AIC comparison of bCTC, b2CTC and tCTC.

Hand-built tables check every rule of the exposure derivation (thresholds per 7.5 ml, windows,
reasons); clearance limits and tests are checked against textbook formulas computed here
(beta quantiles, hypergeometric sums, Pearson's statistic); the simulated CALGB 40502-like
scenario checks that the trajectory exposure has the lowest AIC for OS.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from pooled.errors import ConfigError, DataError
from pooled.models.serial import (
    SerialSpec,
    compare_exposures,
    ctc_clearance,
    derive_serial_exposures,
)
from pooled.models.trajectories import TrajectorySpec, fit_trajectories
from pooled.results import TIDY_COLUMNS
from pooled.simulate.trajectory_model import HAZARD_RATIOS, simulate_trajectory_cohort


def _samples() -> pd.DataFrame:
    rows = [
        # patient, centre, day, timepoint, count, volume
        ("A", "X", 0, "baseline", 5, 7.5),  # 5 per 7.5 ml: positive
        ("A", "X", 29, "cycle2_day1", 0, 7.5),  # cleared
        ("B", "X", 0, "baseline", 9, 15.0),  # 4.5 per 7.5 ml: negative
        ("B", "X", 23, "cycle2_day1", 12, 15.0),  # 6 per 7.5 ml: positive
        ("B", "X", 30, "extra", 0, 7.5),  # nearer the window middle (29): chosen
        ("C", "Y", -3, "baseline", 40, 7.5),  # positive, baseline before day 0
        ("C", "Y", 60, "cycle3_day1", 30, 7.5),  # outside the window: no follow-up
        ("D", "Y", 14, "cycle1_day15", 2, 7.5),  # no baseline sample
        ("E", "Y", 0, "baseline", 7, 7.5),
        ("E", "Y", 28, "cycle2_day1", np.nan, 7.5),  # follow-up count missing
        ("F", "Z", 0, "baseline", np.nan, 7.5),  # baseline count missing
        ("F", "Z", 28, "cycle2_day1", 3, 7.5),
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "patient_id",
            "centre",
            "days_from_baseline",
            "timepoint",
            "ctc_count",
            "ctc_blood_volume_ml",
        ],
    )


@pytest.fixture()
def exposures():
    roster = pd.DataFrame({"patient_id": list("ABCDEFG"), "centre": list("XXYYYZZ")})
    return derive_serial_exposures(_samples(), SerialSpec(), patients=roster)


def test_baseline_status_uses_counts_per_7_5_ml(exposures):
    p = exposures.patients.set_index("patient_id")
    assert p.loc["A", "bCTC"] == "CTC+"
    assert p.loc["B", "bCTC"] == "CTC-"
    assert p.loc["B", "baseline_ctc_per_ref"] == pytest.approx(4.5)
    assert p.loc["C", "bCTC"] == "CTC+" and p.loc["C", "baseline_day"] == -3
    assert list(exposures.patients["bCTC"].cat.categories) == ["CTC-", "CTC+"]


def test_followup_nearest_the_window_middle_and_change_categories(exposures):
    p = exposures.patients.set_index("patient_id")
    assert p.loc["A", "b2CTC"] == "CTC+/CTC-"
    assert p.loc["B", "followup_day"] == 30 and p.loc["B", "followup_timepoint"] == "extra"
    assert p.loc["B", "b2CTC"] == "CTC-/CTC-"
    assert pd.isna(p.loc["C", "b2CTC"])


def test_every_patient_is_kept_with_a_reason(exposures):
    p = exposures.patients.set_index("patient_id")
    assert len(p) == 7
    assert p.loc["D", "baseline_reason"] == "no sample in the baseline window"
    assert p.loc["F", "baseline_reason"] == "baseline count or volume missing"
    assert p.loc["G", "baseline_reason"] == "no samples" and p.loc["G", "n_samples"] == 0
    assert p.loc["G", "centre"] == "Z"
    assert p.loc["C", "followup_reason"] == "no follow-up sample on days 22-36"
    assert p.loc["E", "followup_reason"] == "follow-up count or volume missing"
    assert p.loc["D", "followup_reason"] == "no baseline"
    missing = exposures.missing.set_index(["exposure", "reason"])["n_patients"]
    for exposure in ("bCTC", "b2CTC", "tCTC"):
        n_absent = int(exposures.patients[exposure].isna().sum())
        assert missing.loc[exposure].sum() == n_absent
    assert missing.loc[("bCTC", "no samples")] == 1
    assert missing.loc[("tCTC", "no trajectory model given")] == 7
    frame = exposures.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS


def test_threshold_label_and_months_are_configurable():
    samples = _samples()
    samples["months"] = samples["days_from_baseline"] / (365.25 / 12)
    spec = SerialSpec(
        time="months",
        time_unit="months",
        threshold=1.0,
        followup_timepoint="cycle2_day1",
        followup_window=None,
    )
    p = derive_serial_exposures(samples, spec).patients.set_index("patient_id")
    assert p.loc["B", "bCTC"] == "CTC+"  # 4.5 >= 1
    assert p.loc["B", "followup_timepoint"] == "cycle2_day1"
    assert p.loc["B", "b2CTC"] == "CTC+/CTC+"
    assert p.loc["C", "followup_reason"] == "no follow-up sample labelled 'cycle2_day1'"
    assert p.loc["C", "baseline_day"] == pytest.approx(-3)


def test_missing_column_and_bad_window_raise():
    with pytest.raises(DataError, match="ctc_blood_volume_ml"):
        derive_serial_exposures(_samples().drop(columns="ctc_blood_volume_ml"))
    with pytest.raises(ConfigError, match="followup_window"):
        SerialSpec(followup_window=(36.0, 22.0))


# --- clearance --------------------------------------------------------------------------------


def _clearance_table(cleared: list[int], not_cleared: list[int], no_followup: int = 0):
    rows = []
    for arm, (c, n) in enumerate(zip(cleared, not_cleared, strict=True)):
        rows += [("CTC+", "CTC-", f"arm{arm}")] * c + [("CTC+", "CTC+", f"arm{arm}")] * n
    rows += [("CTC+", None, "arm0")] * no_followup + [("CTC-", "CTC-", "arm1")] * 5
    return pd.DataFrame(rows, columns=["bCTC", "followup_ctc", "arm"])


def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = 1 - level
    lo = 0.0 if k == 0 else special.betaincinv(k, n - k + 1, a / 2)
    hi = 1.0 if k == n else special.betaincinv(k + 1, n - k, 1 - a / 2)
    return lo, hi


def test_clearance_exact_limits_and_fisher_test():
    data = _clearance_table([7, 2], [3, 8], no_followup=4)
    res = ctc_clearance(data, by="arm")
    table = res.table.set_index("level")
    assert table.loc["arm0", "n_baseline_positive"] == 14
    assert table.loc["arm0", "n_no_followup"] == 4
    assert table.loc["arm0", "share_cleared"] == pytest.approx(0.7)
    for level, (k, n) in {"arm0": (7, 10), "arm1": (2, 10), "all": (9, 20)}.items():
        lo, hi = _clopper_pearson(k, n)
        assert table.loc[level, "ci_lower"] == pytest.approx(lo, rel=1e-8)
        assert table.loc[level, "ci_upper"] == pytest.approx(hi, rel=1e-8)
    # two-sided Fisher: sum of hypergeometric probabilities no larger than the observed one
    support = np.arange(0, 10)
    probs = stats.hypergeom.pmf(support, 20, 9, 10)
    observed = stats.hypergeom.pmf(7, 20, 9, 10)
    expected_p = probs[probs <= observed * (1 + 1e-7)].sum()
    assert res.test == "fisher"
    assert res.p_value == pytest.approx(expected_p, abs=1e-10)
    assert res.n_baseline_negative == 5
    frame = res.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS


def test_clearance_chi_square_for_three_arms():
    cleared, not_cleared = [12, 5, 9], [8, 15, 11]
    res = ctc_clearance(_clearance_table(cleared, not_cleared), by="arm")
    observed = np.array([cleared, not_cleared], dtype=float)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0) / observed.sum()
    statistic = ((observed - expected) ** 2 / expected).sum()
    assert res.test == "chi2" and res.df == 2
    assert res.statistic == pytest.approx(statistic, rel=1e-10)
    assert res.p_value == pytest.approx(stats.chi2.sf(statistic, 2), abs=1e-12)


# --- the simulated scenario: AIC comparison --------------------------------------------------


@pytest.fixture(scope="module")
def scenario():
    patients, samples, truth = simulate_trajectory_cohort(469, seed=2027)
    spec = TrajectorySpec(
        time="months", volume="ctc_blood_volume_ml", n_groups=4, n_starts=8, seed=3
    )
    fit = fit_trajectories(samples, spec)
    exposures = derive_serial_exposures(samples, SerialSpec(), trajectories=fit)
    data = exposures.patients.merge(patients.drop(columns="centre"), on="patient_id")
    return data, truth


def test_tctc_has_the_lowest_aic_for_os(scenario):
    data, _ = scenario
    res = compare_exposures(data, covariates=("age", "er_positive"), strata=("centre",))
    assert res.best("OS") == "tCTC"
    models = res.models.set_index(["endpoint", "exposure"])
    assert models.loc[("OS", "tCTC"), "aic"] < models.loc[("OS", "bCTC"), "aic"]
    assert models.loc[("OS", "tCTC"), "aic"] < models.loc[("OS", "b2CTC"), "aic"]
    assert set(res.models["endpoint"]) == {"OS", "PFS", "TTF"}
    assert (res.models.groupby("endpoint")["lowest_aic"].sum() == 1).all()
    # same patients in every model of an endpoint
    assert res.models.groupby("endpoint")["n"].nunique().eq(1).all()
    frame = res.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS


def test_tctc_hazard_ratios_recover_the_truth(scenario):
    data, truth = scenario
    res = compare_exposures(data, exposures=("tCTC",), endpoints={"OS": ("os_months", "os_event")})
    rows = res.table.set_index("level")
    assert rows["reference"].unique().tolist() == ["undetectable"]
    for level, hr in zip(("low", "intermediate", "high"), HAZARD_RATIOS["os"][1:], strict=True):
        z = (rows.loc[level, "log_hr"] - np.log(hr)) / rows.loc[level, "std_error"]
        assert abs(z) < 3, (level, z)


def test_comparison_uses_complete_cases_across_exposures(scenario):
    data, _ = scenario
    data = data.copy()
    data.loc[data.index[:7], "b2CTC"] = np.nan
    data.loc[data.index[5:12], "age"] = np.nan
    res = compare_exposures(data, covariates=("age",), endpoints={"OS": ("os_months", "os_event")})
    assert res.models["n"].unique().tolist() == [len(data) - 12]
    excluded = res.excluded.set_index("reason")["n_patients"]
    assert excluded["missing b2CTC"] == 7 and excluded["missing age"] == 5
    with pytest.raises(ConfigError, match="expected in the patient table"):
        compare_exposures(data, covariates=("stage",))


def test_exposure_lr_test_against_the_covariates_alone(scenario):
    from pooled.models.cox import CoxSpec, fit_cox

    data, _ = scenario
    res = compare_exposures(data, covariates=("age",), endpoints={"OS": ("os_months", "os_event")})
    complete = data.dropna(subset=["os_months", "os_event", "bCTC", "b2CTC", "tCTC", "age"])
    base = fit_cox(
        complete,
        CoxSpec(duration="os_months", event="os_event", covariates=("age",), term_lr_tests=False),
    )
    models = res.models.set_index("exposure")
    for exposure, fit in ((e, res.fits[("OS", e)]) for e in ("bCTC", "b2CTC", "tCTC")):
        chisq = 2 * (fit.loglik - base.loglik)
        df = len(dict(fit.levels)[exposure]) - 1
        assert models.loc[exposure, "lr_chisq"] == pytest.approx(chisq, rel=1e-9)
        assert models.loc[exposure, "lr_df"] == df
        assert models.loc[exposure, "lr_p_value"] == pytest.approx(
            stats.chi2.sf(chisq, df), abs=1e-12
        )
    frame = res.to_frame()
    assert frame.loc[frame["exposure"] == "tCTC", "exposure_lr_p_value"].nunique() == 1
    # without covariates the reference model is the null model of each fit
    alone = compare_exposures(
        data, exposures=("tCTC",), endpoints={"OS": ("os_months", "os_event")}
    )
    fit = alone.fits[("OS", "tCTC")]
    assert alone.models["lr_chisq"].item() == pytest.approx(2 * (fit.loglik - fit.loglik_null))
