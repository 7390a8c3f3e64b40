"""The steps of time in the analysis: exposure kind ``time_dependent`` (baseline status in the
cohort, the time-dependent Cox model with its PH test), ``models.landmark``, the exposure-timing
comparison, and the competing risks of an endpoint declared with ``competing: other_death``;
parsed with their keys, equal to the models fitted directly, with their flows, in results.csv."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pooled.config import parse_analysis_config
from pooled.dataset import AnalysisDataset, ExclusionFlow
from pooled.errors import ConfigError, PooledWarning
from pooled.models.competing import CompetingRisksSpec, fit_competing_risks
from pooled.models.cox import CoxSpec
from pooled.models.landmark import LandmarkSpec, fit_landmark, fit_time_dependent
from pooled.runner import run_analysis
from pooled.simulate.clearance_model import simulate_clearance_cohort
from pooled.steps.competing import competing_status
from pooled.steps.time_dependent import timed_samples

CONFIG: dict[str, Any] = {
    "name": "clearance",
    "endpoints": {"os": None, "bcss": {"competing": "other_death"}},
    "exposure": {"name": "ctc_status", "kind": "time_dependent", "threshold": 5},
    "covariates": ["age"],
    "models": {"cox": {}, "landmark": {"times": [3, 6]}, "competing": {"times": [12, 24]}},
}


def _text(**changes: Any) -> str:
    return yaml.safe_dump({**CONFIG, **changes}, sort_keys=False)


def clearance_dataset(n: int = 900, seed: int = 3) -> tuple[AnalysisDataset, pd.DataFrame]:
    patients, samples, _ = simulate_clearance_cohort(n, seed=seed)
    rng = np.random.default_rng(seed)
    breast_cancer = rng.random(n) < 0.8
    frame = pd.DataFrame(
        {
            "centre": patients["centre"],
            "patient_id": patients["patient_id"],
            "setting": "metastatic",
            "age": patients["age"],
            "os_months": patients["os_months"],
            "os_event": patients["os_event"].astype(float),
            "bcss_months": patients["os_months"],
            "bcss_event": (patients["os_event"].astype(bool) & breast_cancer).astype(float),
            "time_origin": "sample",
        }
    )
    delivered = samples[["centre", "patient_id", "timepoint", "days_from_baseline", "ctc_count",
                         "ctc_blood_volume_ml"]]  # fmt: skip
    ds = AnalysisDataset(
        patients=frame,
        samples=delivered.reset_index(drop=True),
        flow=ExclusionFlow.start(frame["centre"]),
        versions={},
        provenance={"store": "<test>"},
    )
    return ds, samples


@pytest.fixture(scope="module")
def clearance_run() -> Any:
    cfg = parse_analysis_config(_text(), path="clearance.yaml")
    ds, samples = clearance_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PooledWarning)
        return cfg, ds, samples, run_analysis(cfg, ds)


def _output(run, name):
    return next(o for o in run.outputs if o.name == name)


def test_the_keys_are_parsed() -> None:
    cfg = parse_analysis_config(_text(), path="clearance.yaml")
    assert cfg.endpoints == ("os", "bcss")
    assert cfg.competing == (("bcss", "other_death"),)
    assert cfg.competing_event("bcss") == "other_death" and cfg.competing_event("os") is None
    assert cfg.exposure.kind == "time_dependent" and cfg.exposure.threshold == 5
    assert cfg.section("landmark").times == (3.0, 6.0)
    assert cfg.section("competing").times == (12.0, 24.0)
    listed = parse_analysis_config(_text(endpoints=["os", "bcss"]), path="c.yaml")
    assert listed.endpoints == ("os", "bcss") and listed.competing == ()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"endpoints": {"os": {"competing": "other_death"}}},
         r"c.yaml line \d+: competing: other_death applies to an endpoint that counts the deaths"),
        ({"endpoints": {"bcss": {"competing": "relapse"}}}, r"must be one of other_death"),
        ({"endpoints": {"bcss": {"compete": "other_death"}}}, r"unknown key 'compete'"),
        ({"endpoints": {"overall": None}}, r"'overall'"),
        ({"exposure": {"name": "ctc_positive", "marker": "ctc_count", "threshold": 1}},
         r"landmark analyses need an exposure of kind time_dependent"),
        ({"models": {"landmark": {"times": [0, 3]}}}, r"landmark times must be > 0"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_with_the_line(changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_analysis_config(_text(**changes), path="c.yaml")


def test_the_steps_run_in_report_order(clearance_run) -> None:
    _, _, _, run = clearance_run
    names = [o.name for o in run.outputs]
    for name in ("time_dependent_os", "landmark_os_3", "landmark_os_6",
                 "exposure_timing_os", "competing_bcss", "time_dependent_bcss"):  # fmt: skip
        assert name in names, name
    assert "competing_os" not in names
    assert names.index("cox_os_adjusted") < names.index("time_dependent_os")
    assert names.index("landmark_os_6") < names.index("exposure_timing_os")
    assert names.index("exposure_timing_os") < names.index("cox_bcss_univariable")
    assert names.index("time_dependent_bcss") < names.index("competing_bcss")


def test_the_cohort_exposure_is_the_baseline_status(clearance_run) -> None:
    _, ds, samples, run = clearance_run
    cox = _output(run, "cox_os_adjusted").result
    assert cox.term_names[0] == "ctc_status"
    baseline = samples[samples["timepoint"] == 0].set_index("patient_id")["positive"]
    assert cox.n == len(ds.patients)  # every patient has a baseline sample
    assert int(baseline.sum()) > 0


def test_the_time_dependent_and_landmark_models_equal_the_direct_fits(clearance_run) -> None:
    cfg, ds, samples, run = clearance_run
    patients = ds.patients.assign(
        patient_key=ds.patients["centre"] + "/" + ds.patients["patient_id"]
    )
    timed = samples.assign(patient_key=samples["centre"] + "/" + samples["patient_id"],
                           status=samples["positive"].astype(float))  # fmt: skip
    spec = LandmarkSpec(
        cox=CoxSpec(duration="os_months", event="os_event", covariates=("ctc_status", "age"),
                    term_lr_tests=False, endpoint="os"),
        exposure="ctc_status", id="patient_key", sample_time="months", value="status",
        times=(3.0, 6.0),
    )  # fmt: skip
    direct = fit_time_dependent(patients, timed, spec)
    td = _output(run, "time_dependent_os").result
    np.testing.assert_allclose(td.fit.coefficients, direct.fit.coefficients, rtol=1e-10)
    assert td.n_patients == direct.n_patients == len(ds.patients)
    landmarks = fit_landmark(patients, timed, spec)
    for t in (3, 6):
        ours = _output(run, f"landmark_os_{t}").result.fit_at(t)
        np.testing.assert_allclose(ours.coefficients, landmarks.fit_at(t).coefficients, rtol=1e-10)
    timing = _output(run, "exposure_timing_os").result.table
    assert timing["analysis"].tolist() == ["baseline", "time_dependent", "landmark_3", "landmark_6"]
    # the simulated truth is log HR 0.9 for the current status; baseline status is diluted
    assert timing.loc[1, "estimate"] > timing.loc[0, "estimate"]


def test_the_competing_risks_equal_the_direct_fit(clearance_run) -> None:
    _, ds, _, run = clearance_run
    out = _output(run, "competing_bcss")
    assert out.kind == "competing" and out.endpoint == "bcss"
    result = out.result
    data = competing_status(ds.patients, "bcss", "other_death")
    assert (data["_competing_status"] == 2).sum() == result.incidence.competing_events > 0
    cox_cohort = _output(run, "cox_bcss_adjusted")
    assert result.cause_specific_fit(1).n == cox_cohort.result.n
    baseline = _output(run, "cox_os_adjusted")  # the cohort's baseline status
    assert baseline.result.n == len(ds.patients)
    assert {c for c, _ in result.cause_specific} == {1, 2}
    assert result.fine_gray is not None and result.fine_gray.n_patients == len(ds.patients)
    assert result.incidence.gray["cause"].tolist() == [1, 2]
    frame = out.to_frame()
    assert {"cumulative_incidence", "gray_test", "cause_specific_bcss",
            "cause_specific_other_death", "fine_gray_stratified"} <= set(frame["model"])  # fmt: skip


def test_the_flows_reconcile(clearance_run) -> None:
    _, _, _, run = clearance_run
    run.model_flow.check()
    summary = run.model_flow.summary().set_index("model")
    lm = _output(run, "landmark_os_3").result
    assert summary.loc["landmark_os_3", "analysed"] == lm.fit_at(3).n
    assert (
        summary.loc["time_dependent_os", "analysed"]
        == _output(run, "time_dependent_os").result.n_patients
    )
    results = run.results()
    assert {"cox_time_dependent", "cox_landmark", "exposure_timing", "fine_gray_stratified"} <= set(
        results["model"]
    )


def test_sample_times_count_from_the_endpoints_origin() -> None:
    patients = pd.DataFrame(
        {"centre": ["A", "A"], "patient_id": ["1", "2"], "time_origin": ["diagnosis", "sample"],
         "diagnosis_date": pd.to_datetime(["2020-01-01", "2020-01-01"]),
         "sample_date": pd.to_datetime(["2020-03-01", "2020-02-01"])}
    )  # fmt: skip
    samples = pd.DataFrame(
        {"centre": ["A"] * 4, "patient_id": ["1", "1", "2", "2"], "timepoint": [0, 1, 0, 1],
         "sample_date": pd.to_datetime(["2020-03-01", "2020-04-01", "2020-02-01", "2020-03-01"]),
         "ctc_count": [10, 0, 0, 7], "ctc_blood_volume_ml": [7.5, 7.5, 15.0, 7.5]}
    )  # fmt: skip
    from pooled.config import ExposureSpec

    out = timed_samples(patients, samples, ExposureSpec("s", kind="time_dependent", threshold=5))
    np.testing.assert_allclose(
        out["months"], [60 / 30.4375, 91 / 30.4375, 0.0, 29 / 30.4375], rtol=1e-12
    )
    assert out["status"].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_competing_status_follows_the_deaths() -> None:
    df = pd.DataFrame({"bcss_months": [10.0, 8.0, 5.0, 4.0], "bcss_event": [1, 0, 0, 0],
                       "os_months": [10.0, 8.0, 9.0, np.nan], "os_event": [1, 1, 1, np.nan]})  # fmt: skip
    out = competing_status(df, "bcss", "other_death")
    assert out["_competing_status"].tolist() == [1, 2, 0, 0]
    assert out["_competing_months"].tolist() == [10.0, 8.0, 5.0, 4.0]


def test_competing_can_be_switched_off() -> None:
    cfg = parse_analysis_config(_text(models={"cox": {}, "competing": False}), path="c.yaml")
    ds, _ = clearance_dataset(300, seed=5)
    run = run_analysis(cfg, ds)
    assert not [o for o in run.outputs if o.kind == "competing"]
    assert "time_dependent_os" in {o.name for o in run.outputs}
    direct = fit_competing_risks(
        competing_status(ds.patients, "bcss", "other_death"),
        CompetingRisksSpec(duration="_competing_months", status="_competing_status",
                           covariates=("age",), id="patient_id"),
    )  # fmt: skip
    assert direct.incidence.n == 300


def test_it_reaches_the_report(clearance_run, tmp_path) -> None:
    from pooled.report.render import IMMORTAL_TIME_SENTENCE, render_report

    _, _, _, run = clearance_run
    files = render_report(run, tmp_path)
    html = files.html.read_text(encoding="utf-8")
    assert "Competing risks" in html and "Status measured over time" in html
    assert "immortal-time bias" in html and IMMORTAL_TIME_SENTENCE[:60] in html
    assert 'class="exposure-timing"' in html and 'class="cumulative-incidence"' in html
    assert 'class="time-dependent"' in html and 'class="landmark"' in html
    assert "Fine-Gray (subdistribution HR): bcss" in html
    names = {p.stem for p in files.figures}
    assert "cif_competing_bcss" in names and "exposure_timing_exposure_timing_os" in names


def test_the_time_dependent_hr_table_holds_the_coefficients_only(clearance_run, tmp_path) -> None:
    """The PH test has a table of its own; its rows (GLOBAL, terms without an HR) are not
    appended to the hazard-ratio table."""
    import re

    from pooled.report.render import render_report

    _, _, _, run = clearance_run
    html = render_report(run, tmp_path).html.read_text(encoding="utf-8")
    tables = re.findall(r'<table[^>]*class="time-dependent"[^>]*>(.*?)</table>', html, re.S)
    assert tables
    for table in tables:
        assert "GLOBAL" not in table
        body = table.split("<tbody>")[-1]
        rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
        assert rows and all("(" in row for row in rows)  # every row has its HR (95% CI)
