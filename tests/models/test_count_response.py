"""The count as a continuous marker: R's ``coxph(... + ns(x, df = 3) + strata(centre))``, the
category model and the linear model (``make_splines.R``), and the bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError
from pooled.models.count_response import (
    CountResponseSpec,
    count_categories,
    count_category_labels,
    fit_count_response,
)
from pooled.results import TIDY_COLUMNS

from .conftest import REFERENCE

REL = 1e-6  # coefficients, covariances, curve, AIC (observed ~4e-14)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "expected_splines.json").read_text())


@pytest.fixture(scope="module")
def counts_cohort() -> pd.DataFrame:
    data = pd.read_csv(REFERENCE / "cohort_counts.csv")
    return data.assign(ctc_per_7_5ml=data["ctc_count"] * 7.5 / data["blood_volume_ml"])


@pytest.fixture(scope="module")
def result(counts_cohort, reference):
    spec = CountResponseSpec(
        duration="os_months", event="os_event", covariates=("age",), knots_at="all", tol=1e-12,
        grid=tuple(reference["spline"]["grid"]["ctc_per_7_5ml"]), name="ctc_cat",
    )  # fmt: skip
    return fit_count_response(counts_cohort, spec)


def _matrix(block: dict) -> np.ndarray:
    return np.array(block["vcov"]["matrix"])


def test_spline_model_matches_r(result, reference):
    ref = reference["spline"]
    assert result.n == ref["n"] and result.events == ref["events"]
    np.testing.assert_allclose(result.spline.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(result.spline.covariance, _matrix(ref), rtol=REL)
    np.testing.assert_allclose(result.spline.loglik, ref["loglik"][1], rtol=REL)
    np.testing.assert_allclose(result.basis.knots, ref["knots"], rtol=1e-12)
    assert result.spline.term_names == ("ctc_cat_ns1", "ctc_cat_ns2", "ctc_cat_ns3", "age")


def test_curve_matches_r(result, reference):
    grid = reference["spline"]["grid"]
    np.testing.assert_allclose(result.grid["count"], grid["ctc_per_7_5ml"])
    for ours, theirs in (("log_hr", "log_hr_vs_0"), ("std_error", "se"), ("hr", "hr"),
                         ("ci_lower", "lower95"), ("ci_upper", "upper95")):  # fmt: skip
        np.testing.assert_allclose(result.grid[ours], grid[theirs], rtol=REL, atol=1e-12)
    assert result.grid["beyond_data"].tolist() == grid["beyond_boundary_knot"]


def test_category_and_linear_models_match_r(result, reference):
    cat = reference["categorical"]
    assert result.categorical.term_names == tuple(cat["coef"])  # ctc_cat1 ... ctc_cat>=5, age
    np.testing.assert_allclose(result.categorical.coefficients, list(cat["coef"].values()),
                               rtol=REL)  # fmt: skip
    np.testing.assert_allclose(result.categorical.covariance, _matrix(cat), rtol=REL)
    levels = result.categories["level"].tolist()
    assert levels == cat["levels"]
    assert result.categories["n"].tolist() == list(
        reference["data_summary"]["n_by_category"].values()
    )
    lin = reference["linear"]
    np.testing.assert_allclose(result.linear.coefficients, list(lin["coef"].values()), rtol=REL)
    np.testing.assert_allclose(result.linear.covariance, _matrix(lin), rtol=REL)


def test_aic_and_nonlinearity(result, reference):
    aic = result.aic.set_index("form")["aic"]
    for form, value in reference["aic"].items():
        assert aic[form] == pytest.approx(value, rel=REL)
    lr = 2 * (reference["spline"]["loglik"][1] - reference["linear"]["loglik"][1])
    assert result.nonlinearity["chisq"] == pytest.approx(lr, rel=REL)
    assert result.nonlinearity["df"] == 2
    assert result.aic["delta_aic"].min() == 0.0


def test_tidy_table(result):
    frame = result.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert set(frame["model"]) == {"count_spline", "count_categories", "count_linear",
                                   "count_nonlinearity", "count_aic"}  # fmt: skip
    curve = frame.loc[frame["model"] == "count_spline"]
    assert curve["term"].iloc[4] == "count 5 vs 0"
    assert np.all(np.diff(result.curve["count"]) > 0) and result.curve["count"].iloc[0] == 0
    assert result.distribution["n"].sum() == result.n


def test_reference_count_and_missing_counts(counts_cohort):
    data = counts_cohort.copy()
    data.loc[data.index[:10], "ctc_per_7_5ml"] = np.nan
    spec = CountResponseSpec(duration="os_months", event="os_event", covariates=("age",),
                             reference=5.0, grid=(0.0, 5.0, 20.0))  # fmt: skip
    res = fit_count_response(data, spec)
    assert res.n == len(data) - 10
    assert res.dropped["n_dropped"].sum() == 10
    row = res.grid.set_index("count").loc[5.0]
    assert row["log_hr"] == 0.0 and row["std_error"] == 0.0
    assert res.grid.set_index("count").loc[0.0, "hr"] < 1.0  # fewer CTC, lower hazard
    assert all(0 < k for k in res.knots_count)


def test_category_labels():
    assert count_category_labels([0, 1, 2, 4]) == ("0", "1", "2", "3-4", ">=5")
    assert count_category_labels([0, 4]) == ("0", "1-4", ">=5")
    assert count_category_labels([0.5, 3]) == ("<=0.5", "(0.5, 3]", ">3")
    cats = count_categories(pd.Series([0, 0.5, 1, 1.5, 2, 4, 4.5, 700.0]))
    assert cats.tolist() == ["0", "1", "1", "2", "2", "3-4", ">=5", ">=5"]  # R's cut, right-closed
    with pytest.raises(ConfigError, match="ascending"):
        count_category_labels([1, 1])
    with pytest.raises(ConfigError, match="labels"):
        count_categories(pd.Series([1.0]), [0, 1], ["a", "b"])


def test_errors(counts_cohort):
    with pytest.raises(ConfigError, match="df must be >= 2"):
        CountResponseSpec(duration="os_months", event="os_event", df=1)
    with pytest.raises(ConfigError, match="expected in the data"):
        fit_count_response(counts_cohort, CountResponseSpec(duration="os_months",
                                                            event="os_event", count="nope"))  # fmt: skip
    negative = counts_cohort.assign(ctc_per_7_5ml=-counts_cohort["ctc_per_7_5ml"] - 1)
    with pytest.raises(DataError, match=">= 0"):
        fit_count_response(negative, CountResponseSpec(duration="os_months", event="os_event"))
