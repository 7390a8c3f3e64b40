"""The time-split Cox step (``models.cox.time_split``): parsed with its key, run per endpoint
after the PH test, equal to the model fitted directly, with its flow, in results.csv and in the
report; a period the data cannot support skips the step with its reason."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pooled.config import parse_analysis_config
from pooled.errors import ConfigError, PooledWarning
from pooled.models.timesplit import TimeSplitSpec, fit_time_split
from pooled.results import MODEL_STATISTIC_COLUMNS
from pooled.runner import run_analysis
from pooled.steps.base import AnalysisContext, endpoint_frame
from pooled.steps.cox import cox_spec
from tests.pooled.helpers import dataset, small_cohort

CONFIG = {
    "name": "split",
    "endpoints": ["os", "dfs"],
    "exposure": {"name": "ctc_positive", "marker": "ctc_count", "threshold": 1},
    "covariates": ["age"],
    "models": {"cox": {"time_split": [60, 24]}},
}


def _text(**changes: Any) -> str:
    return yaml.safe_dump({**CONFIG, **changes}, sort_keys=False)


@pytest.fixture(scope="module")
def split_run() -> Any:
    cfg = parse_analysis_config(_text(), path="split.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PooledWarning)
        return cfg, run_analysis(cfg, dataset(small_cohort()))


def test_the_key_is_parsed_sorted() -> None:
    cfg = parse_analysis_config(_text(), path="split.yaml")
    assert cfg.section("cox").time_split == (24.0, 60.0)
    assert (
        parse_analysis_config(_text(models={"cox": {}}), path="s.yaml").section("cox").time_split
        == ()
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ([0, 24], r"split.yaml line \d+: time_split expected times > 0"),
        ([24, 24], r"split.yaml line \d+: time_split expected distinct times"),
        ("soon", r"split.yaml line \d+: 'time_split' must be a number; got 'soon'"),
    ],
)
def test_bad_cuts_are_refused_with_the_line(value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_analysis_config(_text(models={"cox": {"time_split": value}}), path="split.yaml")


def test_it_runs_after_the_ph_test_per_endpoint(split_run) -> None:
    _, run = split_run
    names = [o.name for o in run.outputs]
    for endpoint in ("os", "dfs"):
        assert names.index(f"time_split_{endpoint}") == names.index(f"zph_{endpoint}") + 1
    out = run.outputs[names.index("time_split_os")]
    assert out.kind == "time_split" and "(0,24], (24,60], (60,Inf)" in out.label
    assert list(out.result.periods["label"]) == ["(0,24]", "(24,60]", "(60,Inf)"]


def test_it_equals_the_model_fitted_directly(split_run) -> None:
    cfg, run = split_run
    out = next(o for o in run.outputs if o.name == "time_split_os")
    cohort = next(o for o in run.outputs if o.name == "cox_os_adjusted")
    ctx = AnalysisContext(config=cfg, endpoint="os")
    spec = TimeSplitSpec(
        cox=cox_spec(ctx, "os", interactions=False, term_lr_tests=False),
        exposure="ctc_positive",
        cuts=(24, 60),
    )
    patients = run_patients(cfg)
    direct = fit_time_split(endpoint_frame(patients, "os"), spec)
    np.testing.assert_allclose(out.result.fit.coefficients, direct.fit.coefficients, rtol=1e-12)
    assert out.result.wald_chisq == pytest.approx(direct.wald_chisq, rel=1e-12)
    # the same patients as the adjusted Cox model
    assert out.result.n_patients == cohort.result.n


def run_patients(cfg):
    """The analysis cohort the steps see (the cohort step's prepared dataset)."""
    step = cfg.registry.get("cohort")
    ctx = AnalysisContext(cfg)
    section = cfg.section("cohort") if step.section else None
    cohort, _ = step.prepare(dataset(small_cohort()), section, ctx)
    return cohort.patients


def test_flow_and_results(split_run) -> None:
    _, run = split_run
    run.model_flow.check()
    summary = run.model_flow.summary().set_index("model")
    assert summary.loc["time_split_os", "analysed"] == summary.loc["cox_os_adjusted", "analysed"]
    results = run.results()
    rows = results.loc[results["output"] == "time_split_os"]
    assert list(rows["row_type"]) == ["period"] * 3 + ["covariate"] + ["test"]
    assert rows["model"].eq("cox_time_split").all()
    # every Cox model's rows carry the model-level statistics
    cox = results.loc[results["output"] == "cox_os_adjusted"]
    assert set(MODEL_STATISTIC_COLUMNS) <= set(results.columns)
    assert cox["model_concordance"].between(0, 1).all()


def test_it_reaches_the_report(split_run, tmp_path: Path) -> None:
    from pooled.report.render import render_report

    _, run = split_run
    html = render_report(run, tmp_path).html.read_text(encoding="utf-8")
    assert "Time-split Cox, OS" in html


def test_a_period_without_events_skips_the_step() -> None:
    cfg = parse_analysis_config(
        _text(endpoints=["os"], models={"cox": {"time_split": [24, 60]}}), path="s.yaml"
    )
    patients = small_cohort()
    patients.loc[patients["os_months"] > 60, "os_event"] = 0.0  # no deaths after 60 months
    with pytest.warns(PooledWarning, match=r"time-split Cox os skipped: .*\(60,Inf\) has no"):
        run = run_analysis(cfg, dataset(patients))
    assert "time_split_os" not in {o.name for o in run.outputs}
    assert "cox_os_adjusted" in {o.name for o in run.outputs}
