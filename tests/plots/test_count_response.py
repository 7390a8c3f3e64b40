"""The count-response plot and the validity forest plot, drawn from real fits (Agg)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from pooled.models.count_response import CountResponseSpec, fit_count_response
from pooled.models.validity import ValiditySpec, fit_validity
from pooled.plots.count_response import (
    BAND_GID,
    CATEGORY_GID,
    CURVE_GID,
    DISTRIBUTION_GID,
    category_positions,
    count_response_plot,
)
from pooled.plots.validity import DIAMOND_GID, PREDICTION_GID, validity_forest_plot, validity_rows
from tests.conftest import REFERENCE


@lru_cache(maxsize=1)
def curve():
    data = pd.read_csv(REFERENCE / "cohort_counts.csv")
    data["ctc_per_7_5ml"] = data["ctc_count"] * 7.5 / data["blood_volume_ml"]
    spec = CountResponseSpec(duration="os_months", event="os_event", covariates=("age",))
    return fit_count_response(data, spec)


@lru_cache(maxsize=1)
def validity():
    data = pd.read_csv(REFERENCE / "cohort_multicentre.csv")
    spec = ValiditySpec(duration="os_months", event="os_event",
                        covariates=("age", "node_positive", "grade3", "ctc_positive"))  # fmt: skip
    return fit_validity(data, spec)


def _gids(ax) -> set[str]:
    return {a.get_gid() for a in ax.get_children() if a.get_gid()}


def test_curve_draws_the_result():
    result = curve()
    ax = count_response_plot(result, title="OS")
    assert {CURVE_GID, BAND_GID} <= _gids(ax)
    line = next(a for a in ax.get_lines() if a.get_gid() == CURVE_GID)
    np.testing.assert_allclose(line.get_ydata(), result.curve["hr"])
    np.testing.assert_allclose(line.get_xdata(), np.log1p(result.curve["count"]))
    below = [a for a in ax.figure.axes if a is not ax]
    assert len(below) == 1
    bars = [p for p in below[0].patches if p.get_gid() == DISTRIBUTION_GID]
    assert round(sum(p.get_height() for p in bars)) == result.n  # every patient counted once
    squares = next(a for a in ax.get_lines() if a.get_gid() == CATEGORY_GID)
    np.testing.assert_allclose(squares.get_ydata(), result.categories["hr"])


def test_category_positions_are_inside_their_category():
    positions = category_positions(curve()).set_index("level")
    assert positions.loc["0", "count"] == 0
    assert positions.loc["1", "count"] <= 1 and 2 < positions.loc["3-4", "count"] <= 4
    assert positions.loc[">=5", "count"] > 4


def test_validity_forest():
    result = validity()
    axes = validity_forest_plot(result)
    assert [a.get_title() for a in axes] == ["C, internal-external cross-validation",
                                             "Calibration slope (IECV)"]  # fmt: skip
    assert DIAMOND_GID in _gids(axes[0]) and PREDICTION_GID in _gids(axes[1])
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels[:8] == list(result.per_centre["centre"])
    rows = validity_rows(result, "calibration_slope")
    assert rows["row_type"].tolist()[-1] == "pooled" and len(rows) == 9
    single = validity_forest_plot(result, measures=["apparent_c"])
    assert len(single) == 1
