"""The ``ctc-clearance`` generative model: a CTC status that changes over time. A naive
"ever cleared" exposure analysed from time zero is biased by immortal time; the
time-dependent Cox model and landmark analyses recover the generating log hazard ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError
from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.landmark import LandmarkSpec, fit_landmark, fit_time_dependent
from pooled.simulate.clearance_model import simulate_clearance_cohort

REPS = 20
N = 1500


def _cox(**kw) -> CoxSpec:
    return CoxSpec(duration="os_months", event="os_event", term_lr_tests=False,
                   concordance=False, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def estimates() -> pd.DataFrame:
    """Estimate and SE of each analysis over REPS simulated cohorts (seeds 0..REPS-1)."""
    rows = []
    spec = LandmarkSpec(cox=_cox(covariates=("positive", "age")), exposure="positive",
                        value="positive", times=(3.0, 6.0))  # fmt: skip
    for seed in range(REPS):
        patients, samples, _ = simulate_clearance_cohort(N, seed=seed)
        td = fit_time_dependent(patients, samples, spec, ph_test=False).fit
        lm = fit_landmark(patients, samples, spec)
        base = fit_cox(patients, _cox(covariates=("baseline_positive", "age")))
        positives = patients[patients["baseline_positive"] == 1]
        naive = fit_cox(positives, _cox(covariates=("ever_cleared", "age")))
        for name, fit in (("time_dependent", td), ("landmark_3", lm.fit_at(3)),
                          ("landmark_6", lm.fit_at(6)), ("baseline", base),
                          ("naive_ever_cleared", naive)):  # fmt: skip
            rows.append({"seed": seed, "analysis": name, "estimate": fit.coefficients[0],
                         "std_error": fit.std_errors[0]})  # fmt: skip
    return pd.DataFrame(rows)


def _summary(estimates: pd.DataFrame, analysis: str, truth: float) -> tuple[float, float, float]:
    part = estimates[estimates["analysis"] == analysis]
    est, se = part["estimate"].to_numpy(), part["std_error"].to_numpy()
    mcse = est.std(ddof=1) / np.sqrt(est.size)
    coverage = float(np.mean(np.abs(est - truth) <= 1.96 * se))
    return float(est.mean() - truth), float(mcse), coverage


@pytest.mark.parametrize("analysis", ["time_dependent", "landmark_3", "landmark_6"])
def test_time_dependent_and_landmark_estimates_cover_the_truth(estimates, analysis):
    truth = simulate_clearance_cohort(N, seed=0)[2]["log_hr_status"]
    bias, mcse, coverage = _summary(estimates, analysis, truth)
    assert abs(bias) < 3 * mcse + 0.02
    assert coverage >= 0.8


def test_naive_ever_cleared_exposure_is_biased_by_immortal_time(estimates):
    truth = simulate_clearance_cohort(N, seed=0)[2]["log_hr_cleared"]
    bias, mcse, coverage = _summary(estimates, "naive_ever_cleared", truth)
    # clearing looks far more protective than it is: the cleared had to survive to be sampled
    assert bias < -0.3 and bias < -5 * mcse
    assert coverage <= 0.2


def test_baseline_status_alone_is_diluted(estimates):
    truth = simulate_clearance_cohort(N, seed=0)[2]["log_hr_status"]
    bias, mcse, _ = _summary(estimates, "baseline", truth)
    assert bias < -0.3


def test_cohort_is_deterministic_and_consistent():
    a = simulate_clearance_cohort(300, seed=4)
    b = simulate_clearance_cohort(300, seed=4)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    patients, samples, truth = a
    end = patients.set_index("patient_id")["os_days"]
    assert np.all(samples["days_from_baseline"].to_numpy() < end.loc[samples["patient_id"]])
    assert (samples["timepoint"] == 0).sum() == len(patients)
    per_75 = samples["ctc_count"] * 7.5 / samples["ctc_blood_volume_ml"]
    assert np.array_equal(samples["positive"].to_numpy(), (per_75 >= 5).astype(int).to_numpy())
    assert truth["n_samples"] == len(samples) and samples["months"].max() < 3.0
    with pytest.raises(ConfigError):
        simulate_clearance_cohort(10)


def test_the_consortium_carries_the_generating_truth(tmp_path):
    from pooled.simulate.consortium import simulate_consortium

    res = simulate_consortium("ctc-clearance", seed=3, out_dir=tmp_path, n_patients=300)
    assert len(res.centres) == 6 and res.centres["n_patients"].sum() == 300
    assert res.truth["time_dependent_log_hazard_ratio"] == {"os": 0.9}
    assert res.truth_samples_path is not None and res.truth_samples_path.exists()
    patients = pd.read_parquet(res.truth_patients_path)
    dead = patients["os_event"].astype(bool)
    assert set(patients.loc[dead, "death_cause"]) == {"breast_cancer", "other"}
    assert (patients["bcss_event"].astype(bool) <= dead).all()
