"""Every scenario's demo runs end to end through the command line (small consortia)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pooled.cli import app


@pytest.mark.parametrize(
    ("scenario", "patients"),
    [("paddy", 1200), ("epac", 900), ("early-ctc", 900), ("trajectory", 300),
     ("ctc-clearance", 600)],
)
def test_demo_runs_end_to_end(tmp_path: Path, scenario: str, patients: int) -> None:
    out = tmp_path / scenario
    result = CliRunner().invoke(
        app, ["demo", "--scenario", scenario, "--out", str(out), "--patients", str(patients)]
    )
    assert result.exit_code == 0, result.output
    assert "Report:" in result.output
    run = out / "run"
    for name in ("results.csv", "tables.xlsx", "report.html", "run.json", "run.pkl"):
        assert (run / name).exists(), name
    results = pd.read_csv(run / "results.csv")
    assert {"analysis", "endpoint", "model", "term", "hr", "ci_lower", "ci_upper"} <= set(
        results.columns
    )
    assert (out / "pooled.db").exists()
    assert list((out / "validation").glob("*/validation.xlsx"))
    outputs = set(results["output"])
    expected = {
        "paddy": {"cox_os_adjusted", "two_stage_os", "bayes_os", "interaction_os_subtype"},
        "epac": {"cox_os_adjusted", "two_stage_pfs", "sensitivity_os"},
        "early-ctc": {"cox_dfs_adjusted", "two_stage_dfs", "zph_dfs"},
        "trajectory": {"trajectory_selection", "exposure_comparison", "ctc_clearance"},
        "ctc-clearance": {"time_dependent_os", "landmark_os_3", "exposure_timing_os",
                          "competing_bcss"},
    }[scenario]
    assert expected <= outputs, expected - outputs
    if scenario == "paddy":  # the posterior is saved for the statistician to reopen
        import arviz as az

        assert "posterior" in az.from_netcdf(run / "bayes_os.nc").groups()
    flow = pd.read_csv(run / "exclusion_flow.csv").set_index("centre")
    excluded = flow[[c for c in flow.columns if c.startswith("excluded")]].sum(axis=1)
    assert (flow["received"] - excluded == flow["analysed"]).all()
