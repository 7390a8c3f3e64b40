"""Centre-effects forest plot of a mixed Cox fit, drawn from real fits (Agg backend)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from pooled.models.cox import CoxSpec
from pooled.models.mixed_cox import MixedCoxSpec, fit_mixed_cox
from pooled.models.two_stage import TwoStageSpec, fit_two_stage
from pooled.plots.mixed_cox import (
    CENTRE_ESTIMATE_GID,
    MEAN_DIAMOND_GID,
    PREDICTION_GID,
    SHRUNKEN_GID,
    centre_effects_plot,
    centre_effects_rows,
)
from tests.conftest import REFERENCE

COVARIATES = ("ctc_positive", "age", "node_positive", "grade3")


@lru_cache(maxsize=1)
def heterogeneous() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cohort_heterogeneous.csv")


@lru_cache(maxsize=2)
def mixed(random: tuple[str, ...] = ("marker",)):
    spec = MixedCoxSpec(
        duration="os_months",
        event="os_event",
        covariates=COVARIATES,
        random=random,  # type: ignore[arg-type]
        strata=random == ("marker",),
    )
    return fit_mixed_cox(heterogeneous(), spec)


@lru_cache(maxsize=1)
def two_stage():
    spec = TwoStageSpec(
        cox=CoxSpec(duration="os_months", event="os_event", covariates=COVARIATES),
        marker="ctc_positive",
    )
    return fit_two_stage(heterogeneous(), spec)


def _by_gid(ax, gid):
    artists = list(ax.collections) + list(ax.patches) + list(ax.lines)
    return [a for a in artists if a.get_gid() == gid]


def test_rows_are_the_centres_then_the_mean():
    res = mixed()
    ax = centre_effects_plot(res, two_stage().per_centre, title="OS: marker HR by centre")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [*res.centres, "Mean (one-stage)"]
    assert ax.get_xscale() == "log" and ax.yaxis_inverted()
    dots = _by_gid(ax, SHRUNKEN_GID)[0].get_offsets()
    np.testing.assert_allclose(dots[:, 0], res.per_centre["marker_hr"])
    squares = _by_gid(ax, CENTRE_ESTIMATE_GID)[0].get_offsets()
    own = two_stage().per_centre.set_index("centre").loc[list(res.centres), "hr"]
    np.testing.assert_allclose(squares[:, 0], own.to_numpy())
    assert len(_by_gid(ax, MEAN_DIAMOND_GID)) == 1
    (pi,) = _by_gid(ax, PREDICTION_GID)
    lo, hi = res.prediction_interval
    np.testing.assert_allclose(pi.get_xdata(), np.exp([lo, hi]))


def test_shrinkage_is_visible():
    """The shrunken estimates spread less around the mean than the centres' own."""
    rows = centre_effects_rows(mixed(), two_stage().per_centre)
    assert np.std(np.log(rows["hr"])) < np.std(np.log(rows["own_hr"]))


def test_without_per_centre_table_and_frailty_model():
    ax = centre_effects_plot(mixed(("intercept",)))
    assert not _by_gid(ax, CENTRE_ESTIMATE_GID)
    assert not _by_gid(ax, MEAN_DIAMOND_GID)
    assert ax.get_yticklabels()[-1].get_text() == "Average centre"
    assert "relative to the average centre" in ax.get_xlabel()


def test_bad_table_is_refused():
    with pytest.raises(ValueError, match="expected columns"):
        centre_effects_plot(mixed(), pd.DataFrame({"centre": ["C01"], "log_hr": [0.1]}))


def test_draws_on_given_axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert centre_effects_plot(mixed(), ax=ax) is ax
