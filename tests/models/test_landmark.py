"""Time-dependent and landmark Cox models against R survival 3.5-3 (``make_timedep.R``:
tmerge + coxph(Surv(tstart, tstop, event)), baseline-only, landmark at 3 months), their
properties, and the side-by-side comparison."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.landmark import (
    LandmarkSpec,
    compare_exposure_timing,
    fit_landmark,
    fit_time_dependent,
    landmark_data,
)

from .conftest import REFERENCE

REL = 1e-6  # coefficients, SEs, covariances, log-likelihoods (observed ~1e-13)


@pytest.fixture(scope="module")
def timedep_reference() -> dict:
    return json.loads((REFERENCE / "expected_timedep.json").read_text())


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cohort_serial_td.csv")


@pytest.fixture(scope="module")
def samples() -> pd.DataFrame:
    smp = pd.read_csv(REFERENCE / "samples_serial_td.csv")
    smp["ctc_pos"] = (smp["ctc_count"] * 7.5 / smp["blood_volume_ml"] >= 5).astype(int)
    return smp


def spec(ties: str = "efron", times=(3.0,), **kw) -> LandmarkSpec:
    cox = CoxSpec(
        duration="os_months", event="os_event", covariates=("ctc_pos", "age"), ties=ties,
        tol=1e-12, max_iter=100, **kw,
    )  # fmt: skip
    return LandmarkSpec(cox=cox, exposure="ctc_pos", sample_time="months", value="ctc_pos",
                        times=times)  # fmt: skip


def assert_fit_matches(res, ref) -> None:
    # R names the status ctc_pos_td / ctc_pos_lm / ctc_pos_baseline; the order is the same
    assert list(res.term_names)[1:] == list(ref["coef"])[1:] == ["age"]
    assert res.n == ref["n"] and res.events == ref["events"]
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["se"].values()), rtol=REL)
    np.testing.assert_allclose(res.vcov, ref["vcov"]["matrix"], rtol=REL)
    np.testing.assert_allclose([res.loglik_null, res.loglik], ref["loglik"], rtol=REL)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_time_dependent_model_matches_r(ties, patients, samples, timedep_reference):
    ref = timedep_reference["time_dependent"][ties]
    res = fit_time_dependent(patients, samples, spec(ties))
    assert_fit_matches(res.fit, ref)
    assert res.n_rows == timedep_reference["tmerge"]["n_rows"] == 4135
    assert res.n_patients == 1500
    assert res.n_changing == timedep_reference["data_summary"]["n_patients_changing_status"]
    assert res.ph_test is not None and "GLOBAL" in set(res.ph_test.table["term"])
    frame = res.to_frame()
    assert frame.loc[0, "model"] == "cox_time_dependent" and frame.loc[0, "n"] == 1500


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_landmark_at_3_months_matches_r(ties, patients, samples, timedep_reference):
    ref = timedep_reference["landmark_3_months"]
    res = fit_landmark(patients, samples, spec(ties))
    fit = res.fit_at(3)
    assert_fit_matches(fit, ref[ties])
    cohort = res.cohorts.iloc[0]
    assert cohort["n"] == ref["n"] and cohort["events"] == ref["events"]
    assert cohort["exposed"] == ref["n_exposed"]
    assert cohort["at_risk"] == ref["n"] and cohort["without_sample"] == 0


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_baseline_only_model_matches_r(ties, patients, samples, timedep_reference):
    ref = timedep_reference["baseline_only"][ties]
    baseline = samples.loc[samples["months"] == 0, ["patient_id", "ctc_pos"]]
    data = patients.merge(baseline.rename(columns={"ctc_pos": "ctc_pos_baseline"}),
                          on="patient_id")  # fmt: skip
    res = fit_cox(data, CoxSpec(duration="os_months", event="os_event",
                                covariates=("ctc_pos_baseline", "age"), ties=ties, tol=1e-12,
                                max_iter=100))  # fmt: skip
    assert_fit_matches(res, ref)


def test_comparison_puts_the_estimates_side_by_side(patients, samples):
    baseline = samples.loc[samples["months"] == 0, ["patient_id", "ctc_pos"]]
    data = patients.merge(baseline, on="patient_id")
    base = fit_cox(data, spec().cox)
    td = fit_time_dependent(patients, samples, spec(times=(3.0, 6.0)))
    lm = fit_landmark(patients, samples, spec(times=(3.0, 6.0)))
    res = compare_exposure_timing(
        exposure="ctc_pos", endpoint="os", baseline=base, time_dependent=td, landmark=lm,
        naive={"ever positive": base},
    )  # fmt: skip
    table = res.table
    assert table["analysis"].tolist() == [
        "baseline", "time_dependent", "landmark_3", "landmark_6", "naive"
    ]  # fmt: skip
    assert table.loc[1, "estimate"] == pytest.approx(td.fit.coefficient("ctc_pos"))
    assert table.loc[2, "estimate"] == pytest.approx(lm.fit_at(3).coefficient("ctc_pos"))
    assert table["immortal_time"].tolist() == [False, False, False, False, True]
    assert np.all(table["ci_lower"] < table["hr"]) and np.all(table["hr"] < table["ci_upper"])
    frame = res.to_frame()
    assert set(frame["model"]) == {"exposure_timing"} and set(frame["term"]) == {"ctc_pos"}


def test_landmark_data_selects_the_patients_at_risk_and_the_last_sample():
    pat = pd.DataFrame({"id": [1, 2, 3, 4], "os": [10.0, 3.0, 8.0, 9.0], "ev": [1, 1, 0, 1]})
    smp = pd.DataFrame(
        {"id": [1, 1, 1, 2, 3, 4, 4], "t": [0.0, 3.0, 3.5, 0.0, 4.0, 1.0, 1.0],
         "pos": [1, 0, 1, 1, 1, 1, 0]}
    )  # fmt: skip
    out = landmark_data(pat, smp, 3, id="id", duration="os", sample_time="t", value="pos",
                        name="pos_lm")  # fmt: skip
    # 2 died at 3 (not at risk after it), 3 has no sample by 3; 1's sample at 3 counts (<= 3);
    # of 4's two samples at one time the last counts
    assert out["id"].tolist() == [1, 4]
    assert out["pos_lm"].tolist() == [0.0, 0.0]
    assert out["time_from_landmark"].tolist() == [7.0, 6.0]


def test_landmark_cohort_counts_patients_without_a_sample(patients, samples):
    late = samples.loc[~((samples["patient_id"] == "M00001") & (samples["months"] <= 3))]
    res = fit_landmark(patients, late, spec())
    cohort = res.cohorts.iloc[0]
    assert cohort["without_sample"] == 1
    assert cohort["n"] == cohort["at_risk"] - 1


def test_patients_enter_the_time_dependent_model_at_their_first_sample(patients, samples):
    later = samples.loc[~((samples["patient_id"] == "M00001") & (samples["months"] == 0))]
    full = fit_time_dependent(patients, samples, spec(), ph_test=False)
    part = fit_time_dependent(patients, later, spec(), ph_test=False)
    first_later = later.loc[later["patient_id"] == "M00001", "months"]
    assert part.n_rows == full.n_rows - (1 if len(first_later) else 1)
    assert part.n_patients == 1500 - (0 if len(first_later) else 1)


def test_errors(patients, samples):
    with pytest.raises(ConfigError, match="among the Cox covariates"):
        LandmarkSpec(cox=spec().cox, exposure="other")
    with pytest.raises(ConfigError, match="> 0"):
        spec(times=(0.0,))
    with pytest.raises(ConfigError, match="start=None"):
        LandmarkSpec(cox=CoxSpec(start="a", duration="b", event="c", covariates=("x",)),
                     exposure="x")  # fmt: skip
    with pytest.raises(DataError, match="No landmark"):
        fit_landmark(patients, samples, spec(times=(500.0,)))
    with pytest.raises(DataError, match="no rows"):
        fit_time_dependent(patients, samples.assign(months=1000.0), spec())
    with pytest.raises(ConfigError, match="samples"):
        fit_landmark(patients, samples.drop(columns="months"), spec())
