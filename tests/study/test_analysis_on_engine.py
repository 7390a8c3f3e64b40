"""The analysis's repeated fits on the engine: multiple imputation, the sensitivity analyses
and the bootstrap by centre give the same results in this process and on two workers, and
the bootstrap re-estimates exactly the numbers of results.csv."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pooled.config import parse_analysis_config
from pooled.distributed.engine import ExecutionSpec
from pooled.distributed.mice import fit_cox_mice_tasks
from pooled.errors import ConfigError, PooledWarning
from pooled.models.bootstrap import resample_centres
from pooled.models.cox import CoxSpec, fit_cox
from pooled.runner import run_analysis
from tests.pooled.helpers import dataset, small_cohort

BASE: dict[str, Any] = {
    "name": "engine",
    "endpoints": ["os", "dfs"],
    "exposure": {"name": "ctc_positive", "marker": "ctc_count", "threshold": 1},
    "covariates": ["age", "positive_nodes", {"name": "subtype", "reference": "luminal_a"}],
    "interactions": [["ctc_positive", "subtype"]],
    "models": {"cox": {"ties": ["efron", "breslow"]}, "two_stage": {"method": "REML"},
               "mixed_cox": {}},
    "sensitivity": {"leave_one_centre_out": True, "thresholds": [2, 1000], "missing": ["mice"]},
}  # fmt: skip
ESTIMATES = ["cox_os_adjusted", "cox_os_adjusted:age", "two_stage_os", "mixed_cox_dfs",
             "interaction_os_subtype"]  # fmt: skip


def _run(execution: dict[str, Any]) -> Any:
    cfg = parse_analysis_config(yaml.safe_dump({**BASE, "execution": execution}), path="e.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        return run_analysis(cfg, dataset(small_cohort()))


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    boot = {"replicates": 30, "estimates": ESTIMATES}
    return {
        "serial": _run({"bootstrap": boot}),
        "cluster": _run({"workers": 2, "bootstrap": boot}),
    }


def test_multiple_imputation_as_tasks_equals_fit_cox_mice() -> None:
    data = small_cohort()
    spec = CoxSpec(duration="os_months", event="os_event", covariates=("age", "positive_nodes", "grade"),
                   categorical=(("grade", "1.0"),), missing="mice", n_imputations=4, seed=9)  # fmt: skip
    expected = fit_cox(data, spec)
    for execution in (ExecutionSpec(), ExecutionSpec(workers=2)):
        got = fit_cox_mice_tasks(data, spec, execution=execution)
        pd.testing.assert_frame_equal(got.to_frame(), expected.to_frame(), check_exact=True)
        pd.testing.assert_frame_equal(got.per_imputation, expected.per_imputation, check_exact=True)
        assert (got.df == expected.df).all()


def test_the_run_is_the_same_in_this_process_and_on_two_workers(runs: dict[str, Any]) -> None:
    serial, cluster = runs["serial"].results(), runs["cluster"].results()
    pd.testing.assert_frame_equal(serial, cluster, check_exact=True)
    flows = [r.model_flow.to_frame() for r in runs.values()]
    pd.testing.assert_frame_equal(*flows, check_exact=True)


def test_the_sensitivity_table_has_every_analysis(runs: dict[str, Any]) -> None:
    rows = runs["cluster"].results().query("output == 'sensitivity_os'")
    models = list(rows["model"])
    assert models[0] == "sensitivity: ties breslow" and models[-1] == "sensitivity: mice"
    assert sum(m.startswith("sensitivity: without") for m in models) == 4
    assert (
        rows.loc[rows["model"] == "sensitivity: cut-off >= 1000", "note"]
        .item()
        .startswith("not estimable")
    )


def test_the_bootstrap_re_estimates_the_numbers_of_results_csv(runs: dict[str, Any]) -> None:
    results = runs["serial"].results()
    boot = results.loc[results["output"] == "bootstrap"]
    assert len(boot) == 2 + 1 + 1 + 4  # two Cox terms, pooled, mixed, four subtype levels
    run = runs["serial"]
    result = next(o for o in run.outputs if o.kind == "bootstrap").result
    cohort = run_cohort(run)
    for target in result.targets:
        row = boot.loc[
            (boot["bootstrap_of"] == target.source) & (boot["term"] == target.term)
        ].iloc[0]
        source = results.loc[
            (results["output"] == target.source) & (results["term"] == target.term)
        ]
        if "row_type" in source:
            source = source.loc[
                source["row_type"].isin(["pooled", "fixed"]) | source["row_type"].isna()
            ]
        assert row["estimate"] == source["estimate"].iloc[0]
        assert target.estimate(cohort) == pytest.approx(row["estimate"], rel=1e-9, abs=1e-12)
        assert row["replicates"] + row["replicates_failed"] == 30
        assert row["ci_lower"] < row["ci_upper"]


def run_cohort(run: Any) -> pd.DataFrame:
    """The cohort the run analysed (the small cohort with its exposure)."""
    data = small_cohort()
    data["ctc_positive"] = (data["ctc_count"] * 7.5 / data["ctc_blood_volume_ml"] >= 1).astype(
        float
    )
    return data.loc[data["ctc_positive"].notna()]


def test_resampled_centres_are_whole_and_each_draw_is_its_own_centre() -> None:
    data = small_cohort()
    out = resample_centres(data, np.random.default_rng(4))
    draws = out["centre"].str.split("#")
    assert out["centre"].nunique() == data["centre"].nunique() == 4
    for label, group in out.groupby("centre"):
        original = label.split("#")[0]
        assert len(group) == (data["centre"] == original).sum()  # the whole centre
    assert sorted({int(d[1]) for d in draws}) == [1, 2, 3, 4]
    again = resample_centres(data, np.random.default_rng(4))
    pd.testing.assert_frame_equal(out, again)


@pytest.mark.parametrize(
    ("execution", "message"),
    [
        ({"workers": 2, "scheduler": "tcp://h:8786"}, "not both"),
        ({"scheduler": "h:8786"}, "tcp://HOST:8786"),
        ({"bootstrap": {"estimates": ["cox_pfs_adjusted"]}}, "endpoint of this config"),
        ({"bootstrap": {"estimates": []}}, "at least one estimate"),
        ({"bootstrap": {"replicates": 1, "estimates": ["two_stage_os"]}}, "at least 2"),
        ({"bootstrap": {"estimates": ["cox_os_adjusted"], "levle": 0.9}}, "unknown key 'levle'"),
    ],
)
def test_a_bad_execution_section_names_the_line(execution: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_analysis_config(yaml.safe_dump({**BASE, "execution": execution}), path="e.yaml")
    assert "e.yaml line" in str(info.value)


def test_the_report_shows_the_bootstrap_beside_the_model(runs: dict[str, Any], tmp_path) -> None:
    from pooled.report.render import render_report

    html = render_report(runs["serial"], tmp_path).html.read_text(encoding="utf-8")
    assert "Bootstrap by centre" in html and 'class="bootstrap"' in html
    assert (tmp_path / "figures" / "bootstrap_bootstrap.png").is_file()
    centres = small_cohort()["centre"].nunique()
    assert centres < 10  # so the report warns about the few clusters
    assert f"With {centres} centres the replicates draw from only {centres} clusters" in html


def test_the_few_clusters_caveat_stops_at_ten_centres() -> None:
    from pooled.report.render import FEW_BOOTSTRAP_CENTRES, _few_clusters_caveat

    assert "9 clusters" in _few_clusters_caveat(FEW_BOOTSTRAP_CENTRES - 1)
    assert _few_clusters_caveat(FEW_BOOTSTRAP_CENTRES) == ""
    assert _few_clusters_caveat(0) == ""  # not recorded (an older run)
