"""The study itself: replicates in memory that match the scenario, the estimators recovering
the truth.json estimand, the files and report of a study, and the ``pooled study`` command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pooled.cli import app
from pooled.errors import ConfigError
from pooled.study.design import StudySpec, simulate_replicate, study_targets
from pooled.study.report import write_study
from pooled.study.run import run_study
from tests.study.conftest import SMALL

runner = CliRunner()


def test_a_replicate_is_the_scenario_drawn_in_memory() -> None:
    spec = StudySpec(scenario="paddy", n_patients=2000)
    frame = simulate_replicate(spec, 0)
    assert len(frame) == 2000 and frame["centre"].nunique() == 11
    # the exposure derived from the count as the config derives it is the generating marker
    assert (frame["dtc_positive"] == frame["marker_positive"].astype(float)).all()
    assert set(frame["grade"].dropna()) == {"1", "2", "3"}
    assert frame["tumour_size_mm"].isna().any()  # recorded values missing at random
    pd.testing.assert_frame_equal(frame, simulate_replicate(replace(spec, replicates=3), 0))
    assert not frame.equals(simulate_replicate(spec, 1))


def test_the_target_is_the_adjusted_estimand_of_truth_json() -> None:
    targets = study_targets(StudySpec(scenario="paddy"))
    cached = json.loads(
        (Path(__file__).parents[2] / "pooled" / "simulate" / "estimands.json").read_text()
    )
    for endpoint in ("os", "bcss", "dfs", "ddfs"):
        assert (
            targets[endpoint].log_hr == cached["paddy"]["endpoints"][endpoint]["adjusted"]["log_hr"]
        )
        assert targets[endpoint].se > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scenario": "trajectory"}, "latent trajectory group, with no single marker"),
        ({"scenario": "ctc-clearance"}, "status changes over time"),
        ({"scenario": "padddy"}, "must be one of"),
        ({"endpoints": ("pfs",)}, "not an endpoint of scenario paddy"),
        ({"methods": ("cox",)}, "distinct methods"),
        ({"n_patients": 50}, "at least 10 per centre"),
        ({"replicates": 0}, "replicates must be >= 1"),
    ],
)
def test_a_bad_study_says_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StudySpec(**changes)


def test_the_stratified_cox_model_recovers_its_estimand() -> None:
    """40 EPAC-sized consortia: the one-stage estimate of the OS HR lies within 3 Monte Carlo
    SEs (with the target's own) of the truth.json estimand, and its intervals cover it."""
    result = run_study(StudySpec(scenario="epac", replicates=40, seed=5, endpoints=("os",),
                                 methods=("cox_stratified", "two_stage_reml")))  # fmt: skip
    wide = result.wide().set_index("method")
    cox = wide.loc["cox_stratified"]
    assert abs(cox["bias_z"]) < 3, cox
    assert abs(cox["relative_error_model_se"]) < 3 * cox["relative_error_model_se_mcse"] + 5
    assert cox["coverage"] >= 0.85 and cox["n_failed"] == 0
    assert wide.loc["two_stage_reml", "n_replicates"] == 40


def test_a_study_writes_its_table_workbook_and_page(tmp_path: Path) -> None:
    result = run_study(replace(SMALL, replicates=4))
    files = write_study(result, tmp_path)
    table = pd.read_csv(files.performance)
    assert list(table.columns) == list(result.performance.columns)
    assert len(table) == 2 * 4 * 8  # endpoints x methods x measures
    sheets = pd.read_excel(files.xlsx, sheet_name=None)
    assert set(sheets) == {"performance", "measures", "estimates", "targets", "settings"}
    assert len(pd.read_parquet(files.estimates)) == 4 * 2 * 4
    page = files.html.read_text(encoding="utf-8")
    assert 'class="performance"' in page and "data:image/png;base64," in page
    assert (
        "Coverage" in page
        and "Morris" in page
        and "http" not in page.split("<body>")[1].split("Morris")[0]
    )
    for name in ("estimates_os", "estimates_pfs", "coverage"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
    record = json.loads(files.json.read_text())
    assert record["settings"]["scenario"] == "epac" and record["replicates"] == 4


def test_the_command_runs_resumes_and_refuses_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ["study", "--scenario", "epac", "--reps", "3", "--patients", "600", "--seed", "11",
            "--workers", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "3 replicates computed, 0 reused" in first.output
    assert (out / "report.html").is_file() and len(list((out / "tasks").glob("*.parquet"))) == 3
    more = runner.invoke(app, [*args[:4], "5", *args[5:]], catch_exceptions=False)
    assert more.exit_code == 0 and "2 replicates computed, 3 reused" in more.output
    other_seed = runner.invoke(app, [*args[:8], "12", *args[9:]], catch_exceptions=False)
    assert other_seed.exit_code == 2 and "another run" in other_seed.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("x")
    refused = runner.invoke(
        app, [*args[:-2], str(foreign), "--no-progress"], catch_exceptions=False
    )
    assert refused.exit_code == 2 and "does not write" in refused.output
    both = runner.invoke(app, [*args, "--scheduler", "tcp://h:1"], catch_exceptions=False)
    assert both.exit_code == 2


def test_estimates_plot_draws_the_target(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from pooled.plots.study import TARGET_GID, study_coverage_plot, study_estimates_plot

    result = run_study(replace(SMALL, replicates=3))
    ax = study_estimates_plot(result, "os")
    lines = [line for line in ax.get_lines() if line.get_gid() == TARGET_GID]
    assert len(lines) == 1 and np.isclose(lines[0].get_ydata()[0], result.targets["os"].log_hr)
    ax2 = study_coverage_plot(result)
    assert ax2.get_xticklabels()[0].get_text() == "OS"
    plt.close("all")
