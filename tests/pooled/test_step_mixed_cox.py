"""The random-effects Cox step: `models.mixed_cox` parsed, run as a step, equal to a direct
`fit_mixed_cox` on hand-derived columns, with its patient flow reconciled."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from pooled.config import parse_analysis_config
from pooled.errors import ConfigError, PooledWarning
from pooled.models.mixed_cox import MixedCoxSpec, fit_mixed_cox
from pooled.runner import run_analysis
from tests.pooled.helpers import dataset, schema_with_pgr, small_cohort

CONFIG = """\
name: mixed
schema: pgr_schema.yaml
cohort: {{setting: early}}
endpoints: [os]
exposure: {{name: pgr_positive, marker: pgr_fmol, threshold: 10}}
covariates: [{{name: node_positive, expr: "positive_nodes > 0"}}]
models:
  cox: {{ties: efron}}
  mixed_cox: {section}
"""


def _config(folder: Path, section: str):
    schema_with_pgr(folder)
    return parse_analysis_config(CONFIG.format(section=section), path=str(folder / "mixed.yaml"))


def test_random_slope_step_equals_a_direct_fit(tmp_path):
    cfg = _config(tmp_path, "{random: [marker], strata: true}")
    cohort = small_cohort(1500, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        run = run_analysis(cfg, dataset(cohort))
    (output,) = [o for o in run.outputs if o.kind == "mixed_cox"]
    data = cohort.loc[cohort["setting"] == "early"].copy()
    pgr = data["pgr_fmol"].to_numpy()
    data["pgr_positive"] = np.where(np.isnan(pgr), np.nan, (pgr >= 10).astype(float))
    nodes = data["positive_nodes"].to_numpy()
    data["node_positive"] = np.where(np.isnan(nodes), np.nan, (nodes > 0).astype(float))
    data = data.loc[data["pgr_positive"].notna()]
    direct = fit_mixed_cox(
        data,
        MixedCoxSpec(
            duration="os_months", event="os_event",
            covariates=("pgr_positive", "node_positive"), random=("marker",),
            marker="pgr_positive", strata=True, ties="efron",
        ),
    )  # fmt: skip
    np.testing.assert_allclose(output.result.coefficients, direct.coefficients, rtol=1e-10)
    np.testing.assert_allclose(output.result.variances, direct.variances, rtol=1e-8)
    assert output.result.n == direct.n
    flow = output.flow.to_frame()
    analysed = flow.loc[flow["step"] == "analysed", "n"].sum()
    assert analysed == direct.n
    results = run.results()
    assert (results["model"] == output.result.model).any()


def test_the_config_interactions_can_enter_the_mixed_model(tmp_path):
    """`interactions: true` adds the config's interactions as fixed effects (as the
    interactions step does); without it the model has the main effects only."""
    schema_with_pgr(tmp_path)
    text = CONFIG.format(section="{random: [marker], strata: true, interactions: true}")
    text = text.replace(
        'covariates: [{name: node_positive, expr: "positive_nodes > 0"}]',
        'covariates: [{name: node_positive, expr: "positive_nodes > 0", categorical: true, '
        'reference: "0"}]\ninteractions: [[pgr_positive, node_positive]]',
    )
    cfg = parse_analysis_config(text, path=str(tmp_path / "mixed.yaml"))
    cohort = small_cohort(1500, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        run = run_analysis(cfg, dataset(cohort))
    (output,) = [o for o in run.outputs if o.kind == "mixed_cox"]
    assert "pgr_positive:node_positive1" in output.result.term_names
    assert "pgr_positive x node_positive" in output.label
    assert "reference level" in output.label
    data = cohort.loc[cohort["setting"] == "early"].copy()
    pgr = data["pgr_fmol"].to_numpy()
    data["pgr_positive"] = np.where(np.isnan(pgr), np.nan, (pgr >= 10).astype(float))
    nodes = data["positive_nodes"].to_numpy()
    data["node_positive"] = np.where(np.isnan(nodes), None, np.where(nodes > 0, "1", "0"))
    data = data.loc[data["pgr_positive"].notna()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        direct = fit_mixed_cox(
            data,
            MixedCoxSpec(
                duration="os_months", event="os_event",
                covariates=("pgr_positive", "node_positive"),
                categorical=(("node_positive", "0"),),
                interactions=(("pgr_positive", "node_positive"),), random=("marker",),
                marker="pgr_positive", strata=True, ties="efron",
            ),
        )  # fmt: skip
    np.testing.assert_allclose(output.result.coefficients, direct.coefficients, rtol=1e-10)
    # the default leaves them out
    cfg = parse_analysis_config(
        text.replace(", interactions: true", ""), path=str(tmp_path / "mixed.yaml")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        run = run_analysis(cfg, dataset(cohort))
    (output,) = [o for o in run.outputs if o.kind == "mixed_cox"]
    assert output.result.term_names == ("pgr_positive", "node_positive1")


def test_a_random_intercept_with_stratified_baselines_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="strata: false"):
        _config(tmp_path, "{random: [intercept], strata: true}")
    cfg = _config(tmp_path, "{random: [intercept, marker], strata: false}")
    assert cfg.section("mixed_cox").random == ("intercept", "marker")


def test_the_report_shows_the_random_effects_model(tmp_path):
    from pooled.report import render_report

    section = "{random: [marker], strata: true}"
    cfg = _config(tmp_path, section)
    cfg = parse_analysis_config(
        CONFIG.format(section=section).replace(
            "cox: {ties: efron}", "cox: {ties: efron}\n  two_stage: {method: REML}"
        ),
        path=str(tmp_path / "mixed.yaml"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        run = run_analysis(cfg, dataset(small_cohort(1500, seed=3)))
    files = render_report(run, tmp_path / "report", formats=("png",))
    html = files.html.read_text(encoding="utf-8")
    assert "Random-effects Cox models (one stage)" in html
    assert 'class="mixed-fixed"' in html and 'class="mixed-variance"' in html
    assert any(p.name.startswith("centre_effects_mixed_cox_os") for p in files.figures)
