"""Trajectory plot: one fitted curve per group, observed means coloured by group."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pooled.plots.trajectories import FITTED_GID, OBSERVED_GID, trajectory_plot
from tests.plots import fitted


def test_fitted_curves_and_observed_means_by_group():
    selection = fitted.trajectories()
    observed = fitted.observed_means(selection)
    ax = trajectory_plot(selection, observed=observed)
    best = selection.best
    assert best.n_groups == 4
    curves = {ln.get_gid().split(":", 1)[1]: ln for ln in ax.lines if ln.get_gid()}
    assert list(curves) == list(best.labels)
    grid = curves[best.labels[0]].get_xdata()
    expected = best.predict_counts(grid)
    for label, line in curves.items():
        want = expected.loc[expected["label"] == label, "expected_count"].to_numpy()
        np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-12)
        (points,) = [c for c in ax.collections if c.get_gid() == f"{OBSERVED_GID}:{label}"]
        rows = observed[observed["label"] == label]
        np.testing.assert_array_equal(points.get_offsets()[:, 1], rows["mean_count"].to_numpy())
        # points and curve share the group's colour
        assert np.allclose(points.get_facecolor()[0][:3], to_rgba(line.get_color())[:3])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.split(" (")[0] for t in legend] == list(best.labels)
    assert ax.get_yscale() == "log"
    assert FITTED_GID in curves[best.labels[0]].get_gid()


def test_observed_columns_are_checked():
    import pandas as pd

    with pytest.raises(KeyError, match="mean_count"):
        trajectory_plot(fitted.trajectories(), observed=pd.DataFrame({"label": [], "time": []}))
