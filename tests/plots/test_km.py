"""Kaplan-Meier plot: curves from the result, numbers at risk equal to the KMResult's."""

from __future__ import annotations

import numpy as np

from pooled.plots.km import CURVE_GID, km_plot, risk_table_axes
from tests.plots import fitted


def test_numbers_at_risk_equal_the_result():
    result = fitted.km()
    ax = km_plot(result)
    table_ax = risk_table_axes(ax)
    assert table_ax is not None
    labels = [str(v) for v in result.summary["label"]]
    assert [t.get_text() for t in table_ax.get_yticklabels()] == labels
    # each text sits at (time, group row) and prints n_risk
    shown = {
        (round(t.get_position()[0], 9), int(round(t.get_position()[1]))): t.get_text()
        for t in table_ax.texts
    }
    expected = {
        (round(float(rec.time), 9), labels.index(str(rec.label))): f"{int(rec.n_risk)}"
        for rec in result.risk_table.itertuples()
    }
    assert shown == expected
    # the table shares the x axis with the curves
    assert table_ax.get_xlim() == ax.get_xlim()


def test_curves_are_the_result_step_functions():
    result = fitted.km()
    ax = km_plot(result, logrank=fitted.logrank(), title="OS")
    steps = result.step_frame()
    for label in result.summary["label"]:
        (line,) = [ln for ln in ax.lines if ln.get_gid() == f"{CURVE_GID}:{label}"]
        curve = steps[steps["label"] == label]
        np.testing.assert_array_equal(line.get_xdata(), curve["time"].to_numpy())
        np.testing.assert_array_equal(line.get_ydata(), curve["survival"].to_numpy())
        assert line.get_drawstyle() == "steps-post"
    assert ax.get_ylim() == (0.0, 1.02)
    assert ax.get_ylabel() == "Survival probability"
    assert ax.get_xlabel() == "Months"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(result.summary["label"])
    assert any("log-rank p" in t.get_text() for t in ax.texts)


def test_group_names_and_no_table():
    result = fitted.km()
    names = {"ctc_positive=0": "CTC negative", "ctc_positive=1": "CTC positive"}
    ax = km_plot(result, risk_table=False, group_names=names)
    assert risk_table_axes(ax) is None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CTC negative", "CTC positive"]
