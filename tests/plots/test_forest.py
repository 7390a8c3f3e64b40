"""Forest plots drawn from real fits: rows, order, scale, squares, diamond, texts."""

from __future__ import annotations

import numpy as np
import pytest

from pooled.plots.forest import (
    DIAMOND_GID,
    HETEROGENEITY_GID,
    INTERACTION_GID,
    PREDICTION_GID,
    SQUARE_GID,
    estimate_forest_plot,
    forest_plot,
    forest_rows,
    format_p_value,
    format_ratio_ci,
    subgroup_forest_plot,
)
from tests.plots import fitted


def _ticks(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def _by_gid(ax, gid):
    artists = list(ax.collections) + list(ax.patches) + list(ax.lines) + list(ax.texts)
    return [a for a in artists if a.get_gid() == gid]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_rows_follow_the_given_centre_order_with_pooled_last():
    meta = fitted.meta_in_given_order()
    ax = forest_plot(meta)
    assert _ticks(ax) == [*fitted.CENTRE_ORDER, "Pooled (DL)"]
    # y positions run top to bottom in that order (the axis is inverted)
    positions = ax.get_yticks()
    assert np.all(np.diff(positions) > 0)
    assert ax.yaxis_inverted()


def test_two_stage_rows_match_its_tidy_table():
    result = fitted.two_stage()
    ax = forest_plot(result)
    table = result.to_frame()
    centres = table.loc[table["row_type"] == "centre", "centre"].tolist()
    assert _ticks(ax) == [*centres, "Pooled (REML)"]
    rows = forest_rows(result)
    np.testing.assert_array_equal(rows["hr"].to_numpy(), table["hr"].to_numpy())
    np.testing.assert_array_equal(rows["ci_lower"].to_numpy(), table["ci_lower"].to_numpy())


def test_log_axis_reference_line_and_labels():
    ax = forest_plot(fitted.two_stage(), title="OS by centre")
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "Hazard ratio"
    assert ax.get_title(loc="left") == "OS by centre"
    vertical = [
        line for line in ax.lines if list(line.get_xdata()) == [1.0, 1.0] and line.get_gid() is None
    ]
    assert vertical, "no vertical line at HR = 1"
    lo, hi = ax.get_xlim()
    assert lo < 1.0 < hi
    assert "HR (95% CI)" in _texts(ax)
    assert "Weight" in _texts(ax)


def test_one_square_per_centre_sized_by_weight():
    meta = fitted.meta_in_given_order()
    ax = forest_plot(meta)
    (squares,) = _by_gid(ax, SQUARE_GID)
    offsets = squares.get_offsets()
    assert len(offsets) == meta.k == len(fitted.CENTRE_ORDER)
    np.testing.assert_allclose(offsets[:, 0], np.exp(meta.per_study["estimate"]), rtol=1e-12)
    sizes = squares.get_sizes()
    weights = meta.per_study["weight_percent"].to_numpy()
    # area ordering follows weight ordering, and the heaviest centre has the largest square
    assert np.argmax(sizes) == np.argmax(weights)
    np.testing.assert_allclose(sizes / sizes.max(), weights / weights.max(), rtol=1e-12)


def test_pooled_diamond_spans_the_pooled_interval():
    meta = fitted.meta_in_given_order()
    ax = forest_plot(meta)
    (diamond,) = _by_gid(ax, DIAMOND_GID)
    xy = diamond.get_xy()
    np.testing.assert_allclose(xy[:, 0].min(), np.exp(meta.ci_lower), rtol=1e-12)
    np.testing.assert_allclose(xy[:, 0].max(), np.exp(meta.ci_upper), rtol=1e-12)
    assert np.isclose(xy[:, 0], np.exp(meta.estimate), rtol=1e-12).any()


def test_prediction_interval_and_heterogeneity_line():
    meta = fitted.meta_in_given_order()
    ax = forest_plot(meta)
    (pi_line,) = _by_gid(ax, PREDICTION_GID)
    np.testing.assert_allclose(
        pi_line.get_xdata(), [np.exp(meta.pi_lower), np.exp(meta.pi_upper)], rtol=1e-12
    )
    (het,) = _by_gid(ax, HETEROGENEITY_GID)
    text = het.get_text()
    assert f"{meta.tau2:.4f}" in text
    assert f"{meta.i2:.1f}%" in text
    assert f"Q = {meta.q:.2f}" in text
    assert f"p = {format_p_value(meta.q_p_value)}" in text


def test_hr_text_column_matches_each_row():
    meta = fitted.meta_in_given_order()
    ax = forest_plot(meta)
    frame = meta.to_frame()
    for hr, lo, hi in zip(frame["hr"], frame["ci_lower"], frame["ci_upper"], strict=True):
        assert format_ratio_ci(hr, lo, hi) in _texts(ax)


def test_prediction_interval_omitted_for_fixed_effect():
    from pooled.models.meta import MetaSpec, fit_meta

    base = fitted.meta_in_given_order()
    table = base.per_study
    fe = fit_meta(
        table["estimate"], table["variance"], MetaSpec(method="FE"), labels=table["label"]
    )
    ax = forest_plot(fe)
    assert not _by_gid(ax, PREDICTION_GID)
    assert _ticks(ax)[-1] == "Pooled (fixed effect)"


def test_subgroup_plot_rows_and_interaction_p():
    within = fitted.within_levels()
    test = fitted.interaction_test()
    ax = subgroup_forest_plot(within, interaction=test)
    assert _ticks(ax) == within["level"].tolist()
    assert ax.get_xscale() == "log"
    (squares,) = _by_gid(ax, SQUARE_GID)
    np.testing.assert_allclose(squares.get_offsets()[:, 0], within["hr"], rtol=1e-12)
    (p_text,) = _by_gid(ax, INTERACTION_GID)
    assert f"p = {format_p_value(test.p_value)}" in p_text.get_text()
    assert not _by_gid(ax, DIAMOND_GID)


def test_estimate_forest_plot_diamonds_for_pooled_rows():
    frame = fitted.two_stage().to_frame().dropna(subset=["hr"]).copy()
    frame["label"] = frame["centre"].fillna("Pooled").astype(str)
    ax = estimate_forest_plot(frame, label_column="label", pooled=("Pooled",))
    assert len(_by_gid(ax, DIAMOND_GID)) == 1
    (squares,) = _by_gid(ax, SQUARE_GID)
    assert len(squares.get_offsets()) == len(frame) - 1


def test_draws_into_a_given_axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    out = forest_plot(fitted.two_stage(), ax=ax)
    assert out is ax


@pytest.mark.parametrize(
    ("p", "text"), [(0.0004, "<0.001"), (0.04449, "0.044"), (float("nan"), ""), (0.5, "0.500")]
)
def test_p_value_text(p, text):
    assert format_p_value(p) == text


def test_sensitivity_forest_shows_the_main_estimate_as_row_and_line():
    from pooled.plots.forest import REFERENCE_GID

    frame = fitted.cox_adjusted().to_frame()
    main = frame.loc[frame["term"] == fitted.MARKER].iloc[0]
    rows = frame.loc[frame["term"].isin(["age", "subtypeluminal_b"])]
    reference = {
        "label": "Main: adjusted Cox",
        "hr": main["hr"],
        "ci_lower": main["ci_lower"],
        "ci_upper": main["ci_upper"],
    }
    ax = estimate_forest_plot(rows, reference=reference)
    assert _ticks(ax) == ["Main: adjusted Cox", *rows["term"]]
    (line,) = _by_gid(ax, REFERENCE_GID)
    assert line.get_xdata()[0] == pytest.approx(main["hr"])
    (diamond,) = _by_gid(ax, DIAMOND_GID)
    xs = diamond.get_xy()[:, 0]
    assert xs.min() == pytest.approx(main["ci_lower"]) and xs.max() == pytest.approx(
        main["ci_upper"]
    )
    assert format_ratio_ci(main["hr"], main["ci_lower"], main["ci_upper"]) in _texts(ax)
    assert not _by_gid(estimate_forest_plot(rows), REFERENCE_GID)  # only when asked


def test_prediction_interval_left_out_when_asked():
    ax = forest_plot(fitted.two_stage(), show_prediction=False)
    assert not _by_gid(ax, PREDICTION_GID)
    assert not any(t.startswith("PI ") for t in _texts(ax))
