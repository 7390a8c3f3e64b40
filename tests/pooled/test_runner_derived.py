"""A published-style config end to end: an exposure on a non-count field of an extended schema
(``pgr_fmol >= 10``), derived covariates, two-stage and ties sensitivities, and the model flow.

Every number is checked against a direct fit on columns derived by hand (numpy), so the test
fails if the config, the evaluator, the runner or the flow changes what is fitted.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonization.schema import Reason
from pooled.config import load_analysis_config
from pooled.errors import PooledWarning
from pooled.model_flow import REASON_CENTRE_NOT_ESTIMABLE, REASON_LEFT_OUT
from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.meta import MetaSpec, fit_meta
from pooled.runner import run_analysis
from pooled.steps.cohort import select_cohort
from tests.pooled.helpers import dataset, schema_with_pgr, small_cohort

CONFIG = """\
name: pgr
schema: pgr_schema.yaml
cohort: {setting: early}
endpoints: [os, dfs]
exposure: {name: pgr_positive, marker: pgr_fmol, threshold: 10}
covariates:
  - age
  - {name: node_positive, expr: "positive_nodes > 0", categorical: true, reference: "0"}
  - {name: grade3, expr: "grade == 3"}
interactions: [[pgr_positive, node_positive]]
subgroups: [node_positive]
models:
  km: {times: [12, 36]}
  cox: {ties: [efron, breslow]}
  two_stage: {method: [REML, DL], knha: false}
sensitivity: {leave_one_centre_out: true}
"""


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("pgr")
    schema_with_pgr(folder)
    (folder / "pgr.yaml").write_text(CONFIG, encoding="utf-8")
    cfg = load_analysis_config(folder / "pgr.yaml")
    ds = dataset(small_cohort())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        run = run_analysis(cfg, ds)
    return cfg, ds, run


def _by_hand(patients: pd.DataFrame) -> pd.DataFrame:
    """The cohort with exposure and derived covariates computed with numpy, not the evaluator."""
    data = patients.loc[patients["setting"] == "early"].copy()
    pgr = data["pgr_fmol"].to_numpy()
    data["pgr_positive"] = np.where(np.isnan(pgr), np.nan, (pgr >= 10).astype(float))
    nodes = data["positive_nodes"].to_numpy()
    data["node_positive"] = np.where(np.isnan(nodes), np.nan, (nodes > 0).astype(float))
    grade = data["grade"].to_numpy()
    data["grade3"] = np.where(np.isnan(grade), np.nan, (grade == 3).astype(float))
    data = data.loc[data["pgr_positive"].notna() & data["os_months"].notna()]
    return data.reset_index(drop=True)


def _hand_spec(ties: str = "efron", endpoint: str = "os") -> CoxSpec:
    return CoxSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        covariates=("pgr_positive", "age", "node_positive", "grade3"),
        strata=("centre",),
        ties=ties,  # type: ignore[arg-type]
        term_lr_tests=False,
    )


def test_the_config_names_its_schema(case) -> None:
    cfg, _, run = case
    assert Path(cfg.schema_path).name == "pgr_schema.yaml"
    assert cfg.schema is not None and "pgr_fmol" in cfg.schema.table("patients").fields
    assert run.provenance["schema"] == cfg.schema.path


def test_exposure_and_derived_covariates_equal_hand_computation(case) -> None:
    cfg, ds, _ = case
    cohort, _ = select_cohort(ds, cfg)
    hand = _by_hand(ds.patients)
    got = cohort.patients.set_index("patient_id").loc[hand["patient_id"]]
    np.testing.assert_array_equal(got["pgr_positive"].to_numpy(), hand["pgr_positive"])
    np.testing.assert_array_equal(got["grade3"].to_numpy(), hand["grade3"])
    # categorical: the 0/1 result becomes the text levels "0"/"1", missing stays missing
    expected = hand["node_positive"].map(lambda v: None if np.isnan(v) else f"{v:g}")
    assert got["node_positive"].tolist() == expected.tolist()
    assert got["node_positive"].isna().sum() > 0 and got["grade3"].isna().sum() > 0
    # patients without the exposure left the cohort with their reason
    steps = cohort.flow.steps
    marker = steps.loc[steps["reason"] == str(Reason.MISSING_MARKER), "n"].sum()
    early = ds.patients.loc[ds.patients["setting"] == "early"]
    assert marker == early["pgr_fmol"].isna().sum()


def test_adjusted_cox_equals_a_direct_fit_on_hand_derived_columns(case) -> None:
    _, ds, run = case
    direct = fit_cox(_by_hand(ds.patients), _hand_spec())
    results = run.results()
    row = results.loc[(results["output"] == "cox_os_adjusted") & (results["term"] == "pgr_positive")]
    assert len(row) == 1
    np.testing.assert_allclose(row["estimate"].item(), direct.coefficient("pgr_positive"), rtol=1e-9)
    assert row["n"].item() == direct.n
    # the derived covariates entered the model
    terms = set(results.loc[results["output"] == "cox_os_adjusted", "term"])
    assert {"node_positive1", "grade3", "age"} <= terms


def test_ties_sensitivity_row_equals_a_direct_breslow_fit(case) -> None:
    _, ds, run = case
    breslow = fit_cox(_by_hand(ds.patients), _hand_spec(ties="breslow"))
    efron = fit_cox(_by_hand(ds.patients), _hand_spec(ties="efron"))
    rows = run.results().query("output == 'sensitivity_os' and model == 'sensitivity: ties breslow'")
    assert len(rows) == 1
    np.testing.assert_allclose(rows["estimate"].item(), breslow.coefficient("pgr_positive"), rtol=1e-9)
    assert abs(breslow.coefficient("pgr_positive") - efron.coefficient("pgr_positive")) > 1e-6


def test_two_stage_dl_row_is_the_meta_analysis_of_the_same_centres(case) -> None:
    _, _, run = case
    two_stage = next(o for o in run.outputs if o.name == "two_stage_os").result
    assert two_stage.meta.spec.method == "REML"
    table = two_stage.per_centre.loc[two_stage.per_centre["included"]]
    expected = fit_meta(table["log_hr"], table["se"] ** 2, MetaSpec(method="DL"))
    rows = run.results().query("output == 'sensitivity_two_stage_os'")
    assert rows["model"].tolist() == ["sensitivity: two-stage DL"]
    np.testing.assert_allclose(rows["estimate"].item(), expected.estimate, rtol=1e-12)
    np.testing.assert_allclose(rows["tau2"].item(), expected.tau2, rtol=1e-9, atol=1e-15)
    assert rows["n"].item() == int(table["n"].sum())


def test_every_model_flow_reconciles_with_the_fitted_n(case) -> None:
    _, _, run = case
    flow = run.model_flow
    flow.check()
    results = run.results()
    assert {"cox_os_adjusted", "cox_dfs_adjusted", "two_stage_os", "km_os"} <= set(flow.models)
    for model in flow.models:
        analysed = int(flow.analysed(model).sum())
        output, _, label = model.partition(": ")
        rows = results.loc[results["output"] == output]
        if label:
            rows = rows.loc[rows["model"] == f"sensitivity: {label}"]
        if output.startswith("two_stage"):
            rows = rows.loc[rows["row_type"] == "pooled"]
        if output.startswith("km"):
            n = next(o for o in run.outputs if o.name == output).result.summary["n"].sum()
        else:
            assert len(rows), model
            n = rows["n"].iloc[0]
        assert analysed == n, model
        cohort = flow.cohort(model)
        np.testing.assert_array_equal(
            cohort.sort_index().to_numpy(), run.flow.analysed().sort_index().to_numpy()
        )


def test_covariate_and_endpoint_losses_are_counted(case) -> None:
    _, ds, run = case
    flow = run.model_flow
    hand = _by_hand(ds.patients)
    excluded = flow.excluded("cox_os_adjusted").groupby("detail")["n"].sum()
    age_missing = hand["age"].isna()
    nodes_first = ~age_missing & hand["node_positive"].isna()
    grade_first = ~age_missing & hand["node_positive"].notna() & hand["grade3"].isna()
    assert excluded["age"] == age_missing.sum()
    assert excluded["node_positive"] == nodes_first.sum()
    assert excluded["grade3"] == grade_first.sum()
    frame = flow.to_frame()
    missing = frame.loc[(frame["model"] == "cox_os_adjusted") & (frame["step"] == "missing")]
    per_covariate = missing.groupby("detail")["n"].sum()
    assert per_covariate["node_positive"] == hand["node_positive"].isna().sum()
    assert per_covariate["grade3"] == hand["grade3"].isna().sum()
    # DFS is a secondary endpoint: patients without it stay in the cohort but not in its models
    dfs = flow.excluded("cox_dfs_adjusted")
    no_dfs = dfs.loc[dfs["reason"] == str(Reason.MISSING_ENDPOINT), "n"].sum()
    assert no_dfs == hand["dfs_months"].isna().sum() > 0
    # centre D (everyone pgr_positive) is not estimable in the two-stage model
    two_stage = flow.excluded("two_stage_os")
    lost = two_stage.loc[two_stage["reason"] == REASON_CENTRE_NOT_ESTIMABLE]
    assert lost["centre"].tolist() == ["D"]
    assert lost["detail"].item().startswith("D: pgr_positive constant")
    d = hand.loc[hand["centre"] == "D"]
    assert lost["n"].item() == len(d.dropna(subset=["age", "node_positive", "grade3"]))
    assert flow.analysed("two_stage_os")["D"] == 0
    # leaving a centre out is a sensitivity fit on other patients: it has its own flow
    without = flow.excluded("sensitivity_os: without A")
    assert without.loc[without["reason"] == REASON_LEFT_OUT, "n"].sum() == (hand["centre"] == "A").sum()
    # a sensitivity analysis on the same patients (other ties) has no flow of its own
    assert "sensitivity_os: ties breslow" not in flow.models


def test_model_flow_is_in_the_report(case, tmp_path: Path) -> None:
    from pooled.cli import write_run

    _, _, run = case
    html = write_run(run, tmp_path / "run")
    text = html.read_text(encoding="utf-8")
    assert "Patients used by each model" in text and "cox_dfs_adjusted" in text
    written = pd.read_csv(tmp_path / "run" / "model_flow.csv")
    assert list(written.columns) == ["model", "endpoint", "centre", "step", "reason", "detail", "n"]
    assert written["n"].sum() == run.model_flow.to_frame()["n"].sum()
