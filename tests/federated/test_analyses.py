"""Log-rank, two-stage, binned Kaplan-Meier, descriptive tables and validation summaries
over vantage6's MockAlgorithmClient equal the same analyses of the pooled patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonization.store import Store
from pooled.federated.centre import binned_counts, km_edges
from pooled.federated.coordinator import life_table
from pooled.federated.request import request_from_config
from pooled.models.km import logrank_test
from pooled.models.meta import MetaSpec
from pooled.models.two_stage import TwoStageSpec, fit_two_stage
from pooled.steps.base import AnalysisContext
from pooled.steps.cox import cox_spec
from tests.federated.conftest import run


@pytest.mark.parametrize("endpoint", ["os", "dfs"])
def test_stratified_logrank_equals_the_pooled_test(paddy, endpoint) -> None:
    request = request_from_config(paddy.config, endpoint)
    fed = run(paddy.centres, "central_logrank", {"request": request.to_dict()})
    assert fed.get("error") is None, fed.get("error")
    pooled = logrank_test(
        paddy.endpoint_frame(endpoint), f"{endpoint}_months", f"{endpoint}_event",
        "dtc_positive", strata=("centre",),
    )  # fmt: skip
    assert fed["chisq"] == pytest.approx(pooled.chisq, rel=1e-10)
    assert fed["df"] == pooled.df
    np.testing.assert_allclose(np.array(fed["variance"]), pooled.variance, rtol=1e-10)
    rows = pd.DataFrame(fed["rows"])
    expected = pooled.to_frame()
    for column in ("observed", "expected", "n", "p_value"):
        np.testing.assert_allclose(
            rows[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-10
        )


@pytest.mark.parametrize(("method", "knha"), [("REML", True), ("DL", False)])
def test_two_stage_equals_the_pooled_two_stage_analysis(paddy, method, knha) -> None:
    request = request_from_config(paddy.config, "os")
    fed = run(
        paddy.centres,
        "central_two_stage",
        {"request": request.to_dict(), "method": method, "knha": knha},
    )
    assert fed.get("error") is None, fed.get("error")
    ctx = AnalysisContext(paddy.config)
    spec = TwoStageSpec(
        cox=cox_spec(ctx, "os", interactions=False, strata=()),
        marker="dtc_positive",
        meta=MetaSpec(method=method, knha=knha),
    )
    pooled = fit_two_stage(paddy.endpoint_frame("os"), spec)
    centres = pd.DataFrame(fed["centres"])
    expected = pooled.per_centre
    assert centres["centre"].tolist() == expected["centre"].tolist()
    assert centres["included"].tolist() == expected["included"].tolist()
    inc = expected["included"].to_numpy(bool)
    for column in ("log_hr", "se", "weight_percent"):
        np.testing.assert_allclose(
            centres.loc[inc, column].to_numpy(float),
            expected.loc[inc, column].to_numpy(float),
            rtol=1e-8,
        )
    assert centres.loc[inc, "n"].tolist() == expected.loc[inc, "n"].tolist()
    rows = pd.DataFrame(fed["rows"])
    pooled_row = rows[rows["row_type"] == "pooled"].iloc[0]
    reference = pooled.to_frame()
    reference = reference[reference["row_type"] == "pooled"].iloc[0]
    for column in (
        "estimate",
        "std_error",
        "ci_lower",
        "ci_upper",
        "p_value",
        "tau2",
        "i2",
        "q",
        "pi_lower",
        "pi_upper",
    ):
        assert pooled_row[column] == pytest.approx(reference[column], rel=1e-8, abs=1e-12), column


def test_binned_kaplan_meier_counts_equal_the_pooled_counts(paddy, monkeypatch) -> None:
    # the centres' administrators allow cells of any size here (a configured policy)
    monkeypatch.setenv("POOLED_MIN_CELL", "1")
    request = request_from_config(paddy.config, "os")
    fed = run(
        paddy.centres, "central_km", {"request": request.to_dict(), "width": 12, "max_time": 96}
    )
    assert fed.get("error") is None, fed.get("error")
    table = pd.DataFrame(fed["table"])
    frame = paddy.endpoint_frame("os")
    edges = km_edges(12, 96)
    for group, part in frame.groupby("dtc_positive"):
        at_risk, events, censored = binned_counts(
            part["os_months"].to_numpy(), part["os_event"].to_numpy(), edges
        )
        mine = table[table["group"] == int(group)]
        assert mine["at_risk"].tolist() == at_risk[:-1].tolist()
        assert mine["events"].tolist() == events.tolist()
        assert mine["censored"].tolist() == censored.tolist()
        np.testing.assert_allclose(
            mine["survival"], life_table(at_risk, events, censored)["survival"]
        )
        # the life table is close to the Kaplan-Meier curve at the bin ends
        from pooled.models.km import KMSpec, fit_kaplan_meier

        km = fit_kaplan_meier(
            part, KMSpec(duration="os_months", event="os_event", times=tuple(edges[1:]))
        )
        np.testing.assert_allclose(mine["survival"], km.at_times["survival"], atol=0.01)


def test_kaplan_meier_refusals_stop_or_leave_the_centre_out(paddy) -> None:
    request = request_from_config(paddy.config, "os")
    stopped = run(
        paddy.centres, "central_km", {"request": request.to_dict(), "width": 6, "max_time": 120}
    )
    assert stopped["error"]["kind"] == "DisclosureRefused"
    assert "min_cell" in stopped["error"]["message"]
    left_out = run(
        paddy.centres, "central_km",
        {"request": request.to_dict(), "width": 60, "max_time": 120, "exclude_refusing": True},
    )  # fmt: skip
    assert left_out.get("error") is None, left_out.get("error")
    assert left_out["excluded"] and all("min_cell" in why for _, why in left_out["excluded"])
    assert len(left_out["centres"]) + len(left_out["excluded"]) == len(paddy.centres)


def test_characteristics_table_pools_exactly_where_nothing_was_suppressed(paddy) -> None:
    request = request_from_config(paddy.config, "os")
    fed = run(paddy.centres, "central_describe", {"request": request.to_dict()})
    assert fed.get("error") is None, fed.get("error")
    table = pd.DataFrame(fed["table"])
    frame = paddy.endpoint_frame("os")
    for group, part in frame.groupby("dtc_positive"):
        row = table[(table["variable"] == "age") & (table["group"] == str(int(group)))].iloc[0]
        assert row["suppressed_centres"] == 0
        assert row["mean"] == pytest.approx(part["age"].mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(part["age"].std(), rel=1e-9)
        counts = part["subtype"].value_counts()
        for level, n in counts.items():
            cell = table[
                (table["variable"] == "subtype")
                & (table["level"] == level)
                & (table["group"] == str(int(group)))
            ].iloc[0]
            if cell["suppressed_centres"] == 0:
                assert cell["n"] == n
            else:  # the pooled count leaves the suppressed centres' cells out
                assert cell["n"] < n


def test_validation_summary_counts_findings_by_rule(paddy) -> None:
    fed = run(paddy.centres, "central_validation", {"request_id": "v1"}, database="findings")
    assert fed.get("error") is None, fed.get("error")
    table = pd.DataFrame(fed["table"])
    with Store(paddy.store, read_only=True) as store:
        findings = store.findings()
    expected = findings.groupby(["centre", "rule", "severity"]).size()
    assert len(table) == len(expected)
    for rec in table.itertuples(index=False):
        n = int(expected[(rec.centre, rec.rule, rec.severity)])
        if rec.findings is None or pd.isna(rec.findings):
            assert 0 < n < 5
        else:
            assert rec.findings == n and n >= 5
    assert set(table.columns) == {"centre", "rule", "severity", "findings"}
