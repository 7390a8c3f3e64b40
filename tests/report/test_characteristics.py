"""Tables that do not hide missing data: missing counts per variable and centre, "not collected"
per centre apart from missing values, every model covariate (derived ones too), group labels
the same in tables and plots, and one definition of the median follow-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.steps.descriptives import (
    NOT_COLLECTED,
    Variable,
    characteristics,
    exposure_level_label,
    missing_by_centre,
)
from tests.report.page import Page


@pytest.fixture(scope="module")
def small():
    return pd.DataFrame(
        {
            "centre": ["A"] * 4 + ["B"] * 3,
            "pr_positive": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0],
            "size": [10.0, np.nan, 30.0, 20.0, np.nan, np.nan, np.nan],
            "grade": ["1", "2", None, "2", "3", "3", "3"],
            "dfs_months": [5.0, 6.0, np.nan, 7.0, 8.0, 9.0, 10.0],
            "dfs_event": [1.0, 0.0, np.nan, 1.0, 0.0, 1.0, 0.0],
        }
    )


def _rows(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    return {r["characteristic"]: r for r in table.to_dict("records")}


def test_missing_and_not_collected_are_counted_apart(small):
    table = characteristics(
        small,
        "centre",
        ("dfs",),
        variables=[Variable("size", False, "covariate"), Variable("grade", True)],
        group_label=str,
    )
    rows = _rows(table)
    size = rows["size, median (IQR) [covariate]"]
    assert size["A"] == "20.0 (15.0-25.0)" and size["B"] == NOT_COLLECTED
    assert rows["size: missing, n (%)"] == {
        "characteristic": "size: missing, n (%)",
        "all": "1 (14.3)",  # the one missing at A, which collects it
        "A": "1 (25.0)",
        "B": "0 (0.0)",
    }
    assert rows["size: not collected, n (%)"]["all"] == "3 (42.9)"
    assert rows["size: not collected, n (%)"]["B"] == "3 (100.0)"
    # categories: percentages among known values, the missing value counted apart
    assert rows["grade = 2, n (%)"]["A"] == "2 (66.7)"
    assert rows["grade: missing, n (%)"]["A"] == "1 (25.0)"
    assert "grade: not collected, n (%)" not in rows
    assert rows["dfs events, n (%)"]["all"] == "3 (42.9)"
    assert rows["dfs: missing, n (%)"]["A"] == "1 (25.0)"


def test_missing_by_centre(small):
    table = missing_by_centre(small, [Variable("size", False), Variable("grade", True)])
    records = {r["variable"]: r for r in table.to_dict("records")}
    assert records["size"]["B"] == NOT_COLLECTED and records["size"]["A"] == "1 (25.0)"
    assert records["size"]["all centres"] == "4 (57.1)"
    assert records["grade"]["B"] == "0 (0.0)"


def test_exposure_levels_are_named_as_in_the_plots():
    assert exposure_level_label("pr_positive", 1.0) == "pr_positive: yes"
    assert exposure_level_label("pr_positive", 0) == "pr_positive: no"
    assert exposure_level_label("subtype", "luminal_a") == "subtype = luminal_a"


def test_run_characteristics_hold_every_covariate_and_the_missing_data(two_centre):
    by_exposure = _rows(two_centre.characteristics["by_exposure"])
    by_centre = _rows(two_centre.characteristics["by_centre"])
    assert "node_positive: yes, n (%) [derived: positive_nodes > 0]" in by_exposure
    assert "age, median (IQR) [covariate]" in by_exposure
    assert "grade = 1, n (%) [covariate]" in by_exposure
    assert "pr_percent, median (IQR) [exposure marker]" in by_exposure
    assert by_centre["tumour_size_mm, median (IQR)"]["B"] == NOT_COLLECTED
    assert by_centre["tumour_size_mm: not collected, n (%)"]["all"] == "260 (38.2)"
    patients = two_centre_patients()
    missing_age = int(patients["age"].isna().sum())
    assert by_centre["age: missing, n (%)"]["all"].startswith(f"{missing_age} (")
    missing = {
        r["variable"]: r for r in two_centre.characteristics["missing_by_centre"].to_dict("records")
    }
    assert missing["tumour_size_mm"]["B"] == NOT_COLLECTED
    assert missing["node_positive"]["kind"] == "derived: positive_nodes > 0"


def two_centre_patients() -> pd.DataFrame:
    from tests.report.cohorts import two_centre_cohort

    return two_centre_cohort()


def test_group_labels_are_the_same_in_tables_and_plots(two_centre, two_centre_rendered):
    km = next(o for o in two_centre.outputs if o.name == "km_dfs")
    names = set(km.extra["group_names"].values())
    columns = set(two_centre.characteristics["by_exposure"].columns) - {"characteristic", "all"}
    assert names == columns == {"pr_positive: yes", "pr_positive: no"}
    page = Page(two_centre_rendered.html)
    survival = page.text("survival")
    assert "pr_positive=0.0" not in survival and "pr_positive=1.0" not in survival
    assert "pr_positive: yes" in survival
    svg = (two_centre_rendered.folder / "figures" / "km_dfs.svg").read_text(encoding="utf-8")
    assert "pr_positive: yes" in svg and "pr_positive: no" in svg


def test_report_shows_missing_rows_and_the_note(two_centre_rendered):
    page = Page(two_centre_rendered.html)
    text = page.text("characteristics")
    assert "tumour_size_mm: not collected, n (%)" in text
    assert "'not collected': patients of centres whose data has no value" in text
    assert "Missing values by centre" in text
    table = page.tables("missing", "characteristics")[0]
    assert table.records()[-1]["variable"]


def test_median_follow_up_names_its_endpoint_and_method(two_centre, two_centre_rendered):
    from harmonization.validate import reverse_km_followup

    out = two_centre.outputs[0]
    assert out.kind == "followup" and out.endpoint == "os"  # OS, though DFS is primary
    patients = two_centre_patients()
    q1, median, q3 = reverse_km_followup(
        patients["os_months"].to_numpy(), patients["os_event"].to_numpy()
    )
    assert out.result.median == pytest.approx(median)
    assert out.extra["q1"] == pytest.approx(q1) and out.extra["q3"] == pytest.approx(q3)
    text = Page(two_centre_rendered.html).text("survival")
    assert f"Median follow-up: {median:.1f} months, IQR {q1:.1f}-{q3:.1f}" in text
    assert "by the reverse Kaplan-Meier method on overall survival" in text
    assert "definition of the validation reports" in text


def test_km_says_what_is_pooled_and_what_is_stratified(two_centre_rendered):
    text = Page(two_centre_rendered.html).text("survival")
    assert "The curves pool the patients of all 2 centres (Kaplan-Meier, not stratified" in text
    assert "the log-rank test is stratified by centre (2 strata)" in text
    svg = (two_centre_rendered.folder / "figures" / "km_dfs.svg").read_text(encoding="utf-8")
    assert "Disease-free survival" in svg and "Survival probability" not in svg


def test_at_risk_labels_of_the_report_figures_do_not_intersect(two_centre_rendered, rendered):
    from pooled.plots.km import intersecting

    for files in (two_centre_rendered, rendered):
        assert files.at_risk_labels
        for name, boxes in files.at_risk_labels.items():
            assert len(boxes) > 4, name
            assert intersecting(boxes) == [], name
