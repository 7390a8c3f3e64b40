"""PH diagnostics (scaled Schoenfeld residuals) and the funnel plot, on real fits."""

from __future__ import annotations

import numpy as np
import pytest

from pooled.plots.diagnostics import (
    RESIDUALS_GID,
    SMOOTH_GID,
    funnel_plot,
    ph_terms,
    schoenfeld_plot,
    schoenfeld_plots,
)
from pooled.plots.forest import format_p_value
from tests.plots import fitted


def test_schoenfeld_points_smooth_and_p():
    zph = fitted.zph()
    fit = fitted.cox_adjusted()
    term = "ctc_positive"
    ax = schoenfeld_plot(zph, term, coefficient=fit.coefficient(term))
    (points,) = [c for c in ax.collections if c.get_gid() == RESIDUALS_GID]
    expected = zph.residuals[["time", term]].dropna()
    assert len(points.get_offsets()) == len(expected) == zph.events
    np.testing.assert_array_equal(points.get_offsets()[:, 1], expected[term].to_numpy())
    assert [ln for ln in ax.lines if ln.get_gid() == SMOOTH_GID]
    p = zph.table.set_index("term").loc[term, "p_value"]
    assert f"p = {format_p_value(p)}" in ax.get_title(loc="left")
    assert any(
        np.allclose(ln.get_ydata(), fit.coefficient(term))
        for ln in ax.lines
        if ln.get_gid() is None
    )


def test_one_panel_per_term():
    zph = fitted.zph()
    axes = schoenfeld_plots(zph)
    assert len(axes) == len(ph_terms(zph)) == len(zph.table) - 1
    assert [ax.get_title(loc="left").split("\n")[0] for ax in axes] == ph_terms(zph)


def test_unknown_term_is_named():
    with pytest.raises(KeyError, match="not_a_term"):
        schoenfeld_plot(fitted.zph(), "not_a_term")


def test_funnel_plot_points():
    meta = fitted.two_stage().meta
    ax = funnel_plot(meta)
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets()[:, 0], np.exp(meta.per_study["estimate"]))
    np.testing.assert_allclose(points.get_offsets()[:, 1], meta.per_study["se"])
    assert ax.get_xscale() == "log"
    assert ax.yaxis_inverted()
