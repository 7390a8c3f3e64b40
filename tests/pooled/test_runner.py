"""The runner end to end on a simulated consortium: truth recovered, deterministic, nothing lost."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonization.mapping import CentreMapping
from harmonization.store import Store
from harmonization.upload import check_upload
from pooled.config import load_analysis_config, parse_analysis_config
from pooled.dataset import build_analysis_dataset
from pooled.errors import PooledWarning, SamplingWarning
from pooled.runner import run_analysis
from pooled.simulate import simulate_consortium

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paddy(tmp_path_factory: pytest.TempPathFactory):
    """A 3,000-patient PADDY-like consortium, validated and ingested into a store."""
    out = tmp_path_factory.mktemp("paddy")
    sim = simulate_consortium("paddy", seed=11, out_dir=out / "consortium", n_patients=3000)
    received = 0
    with Store(out / "pooled.db") as store:
        for centre, mapping_path in sim.mappings.items():
            checked = check_upload(sim.uploads[centre], CentreMapping.from_yaml(mapping_path))
            store.ingest(
                list(checked.tables),
                checked.report,
                mapping_path=str(mapping_path),
                ingested_at=dt.datetime(2026, 1, 1),
            )
            received += sum(len(t.data) for t in checked.tables if t.table == "patients")
        ds = build_analysis_dataset(store)
    return sim, ds, received


def _config(bayes: bool) -> str:
    text = (ROOT / "configs" / "analyses" / "paddy.yaml").read_text(encoding="utf-8")
    text = text.replace("endpoints: [os, bcss, dfs, ddfs]", "endpoints: [os, dfs]")
    text = text.replace("  thresholds: [2, 3]\n", "")
    bayes_line = next(line for line in text.splitlines() if line.strip().startswith("bayes:"))
    small = "  bayes: {endpoints: [os], interaction: false, draws: 300, tune: 300, chains: 2, intervals: 6}"
    return text.replace(bayes_line, small if bayes else "")


def test_no_patient_is_lost_between_upload_and_analysis(paddy) -> None:
    _, ds, received = paddy
    assert sum(ds.flow.received.values()) == received
    cfg = parse_analysis_config(_config(bayes=False), path="paddy.yaml")
    run = run_analysis(cfg, ds)
    flow = run.flow.to_frame().set_index("centre")
    excluded = flow[[c for c in flow.columns if c.startswith("excluded")]].sum(axis=1)
    assert (flow["received"] - excluded == flow["analysed"]).all()
    assert flow.loc["total", "received"] == received
    assert run.provenance["patients_analysed"] == flow.loc["total", "analysed"]


def test_same_config_and_data_give_identical_results(paddy) -> None:
    _, ds, _ = paddy
    cfg = parse_analysis_config(_config(bayes=False), path="paddy.yaml")
    first = run_analysis(cfg, ds).results().to_csv(index=False)
    second = run_analysis(cfg, ds).results().to_csv(index=False)
    assert first == second


def test_cox_and_bayes_intervals_cover_the_true_hr(paddy) -> None:
    sim, ds, _ = paddy
    truth = sim.truth["estimands"]["endpoints"]["os"]["adjusted"]["hr"]
    cfg = parse_analysis_config(_config(bayes=True), path="paddy.yaml")
    with warnings.catch_warnings():  # small draws may not reach ESS 400: not what is tested
        warnings.simplefilter("ignore", SamplingWarning)
        run = run_analysis(cfg, ds)
    results = run.results()
    cox = results.loc[
        (results["output"] == "cox_os_adjusted") & (results["term"] == "dtc_positive")
    ]
    assert len(cox) == 1
    assert cox["ci_lower"].item() < truth < cox["ci_upper"].item()
    bayes = results.loc[(results["output"] == "bayes_os") & (results["term"] == "dtc_positive")]
    assert len(bayes) == 1
    assert bayes["ci_lower"].item() < truth < bayes["ci_upper"].item()
    # the two estimate the same adjusted HR: close on the log scale
    assert abs(np.log(bayes["hr"].item()) - np.log(cox["hr"].item())) < 0.1


def test_shipped_config_runs_on_its_scenario(paddy) -> None:
    cfg = load_analysis_config(ROOT / "configs" / "analyses" / "paddy.yaml")
    assert cfg.models.bayes and cfg.exposure.name == "dtc_positive"
    results = run_analysis(
        parse_analysis_config(_config(bayes=False), path="p.yaml"), paddy[1]
    ).results()
    within = results.loc[results["output"] == "interaction_os_subtype"]
    assert set(within["term"].dropna()) >= {
        "dtc_positive | subtype=luminal_a",
        "dtc_positive | subtype=luminal_b",
    }
    assert isinstance(results, pd.DataFrame) and len(results) > 50


def test_sensitivity_analysis_the_data_cannot_support_is_a_noted_row(paddy) -> None:
    _, ds, _ = paddy
    text = _config(bayes=False).replace(
        "  leave_one_centre_out: true\n", "  leave_one_centre_out: true\n  thresholds: [100000]\n"
    )
    cfg = parse_analysis_config(text, path="paddy.yaml")
    with pytest.warns(PooledWarning, match="cut-off >= 100000"):
        run = run_analysis(cfg, ds)
    rows = run.results().query("output == 'sensitivity_os'")
    noted = rows.loc[rows["model"] == "sensitivity: cut-off >= 100000"]
    assert len(noted) == 1 and noted["note"].item().startswith("not estimable")
    assert np.isnan(noted["hr"].item())
    assert (rows["model"].str.startswith("sensitivity: without")).sum() == ds.patients[
        "centre"
    ].nunique()


def test_a_model_the_data_cannot_support_is_skipped_with_its_reason(paddy, tmp_path: Path) -> None:
    from pooled.report.render import render_report

    _, ds, _ = paddy
    cfg = parse_analysis_config(_config(bayes=False), path="paddy.yaml")
    patients = ds.patients.assign(dfs_event=False)  # no DFS events: no DFS model can be fitted
    with pytest.warns(PooledWarning, match="skipped"):
        run = run_analysis(cfg, replace(ds, patients=patients))
    skipped = run.provenance["skipped_models"]
    assert {s["step"] for s in skipped} >= {"Cox dfs", "two-stage dfs"}
    assert all("event" in s["reason"].lower() for s in skipped)
    assert "cox_os_adjusted" in set(run.results()["output"])  # the rest of the run stands
    html = render_report(run, tmp_path).html.read_text(encoding="utf-8")
    assert "Models skipped" in html and "Cox dfs" in html
