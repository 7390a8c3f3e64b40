"""Kaplan-Meier plot: curves from the result, numbers at risk over the whole follow-up that
never overprint (the drawn text boxes are measured), the endpoint's name on the y axis."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from pooled.plots.km import (
    CURVE_GID,
    RISK_LABEL_GID,
    intersecting,
    km_plot,
    n_at_risk,
    overlapping_risk_labels,
    risk_table_axes,
    risk_table_boxes,
    risk_ticks,
)
from tests.plots import fitted


def _risk_texts(ax):
    table_ax = risk_table_axes(ax)
    assert table_ax is not None
    return [t for t in table_ax.texts if t.get_gid() == RISK_LABEL_GID]


@lru_cache(maxsize=1)
def long_follow_up():
    """12,000 patients followed up to 230 months (four-digit numbers at risk), the KM result
    asked for its numbers at 0, 12 and 24 months only (as the statistician's run)."""
    from pooled.models.km import KMSpec, fit_kaplan_meier

    rng = np.random.default_rng(5)
    n = 12000
    group = (rng.random(n) < 0.5).astype(float)
    time = rng.exponential(120.0 / np.where(group == 1, 1.6, 1.0))
    censor = rng.uniform(1.0, 230.0, n)
    data = pd.DataFrame(
        {
            "dfs_months": np.minimum(time, censor),
            "dfs_event": (time <= censor).astype(float),
            "pr_positive": group,
        }
    )
    spec = KMSpec(
        duration="dfs_months", event="dfs_event", group="pr_positive", times=(0.0, 12.0, 24.0)
    )
    return data, fit_kaplan_meier(data, spec)


def test_numbers_at_risk_are_the_patients_still_followed_at_each_tick():
    result = fitted.km()
    data = fitted.cohort().dropna(subset=[fitted.DURATION, fitted.EVENT, fitted.MARKER])
    ax = km_plot(result)
    labels = [str(v) for v in result.summary["label"]]
    levels = dict(zip(labels, result.summary["group"], strict=True))
    ticks = [float(t) for t in ax.get_xticks()]
    texts = _risk_texts(ax)
    assert {float(t.get_position()[0]) for t in texts} == set(ticks)
    for text in texts:
        t, row = text.get_position()
        label = labels[int(round(row))]
        mine = data[data[fitted.MARKER] == levels[label]]
        assert text.get_text() == str(int((mine[fitted.DURATION] >= t).sum()))
        in_result = result.risk_table[
            (result.risk_table["label"] == label) & np.isclose(result.risk_table["time"], t)
        ]
        if len(in_result):  # where the result has the time, it is the result's number
            assert text.get_text() == str(int(in_result["n_risk"].iloc[0]))
    table_ax = risk_table_axes(ax)
    assert [t.get_text() for t in table_ax.get_yticklabels()] == labels
    assert table_ax.get_xlim() == ax.get_xlim()


def test_ticks_cover_the_whole_follow_up_and_labels_do_not_overprint():
    data, result = long_follow_up()
    ax = km_plot(result, ylabel="Disease-free survival")
    ticks = [float(t) for t in ax.get_xticks()]
    assert ticks[0] == 0.0 and ticks[-1] >= data["dfs_months"].max()
    assert len(ticks) >= 5  # not just the configured 0, 12, 24
    assert np.allclose(np.diff(ticks), ticks[1] - ticks[0])  # evenly spaced
    assert overlapping_risk_labels(ax) == []
    assert ax.get_ylabel() == "Disease-free survival"


def test_given_times_are_thinned_until_they_fit():
    _data, result = long_follow_up()
    wanted = [0.0, 3.0, 6.0, 12.0, 24.0, 200.0]
    ax = km_plot(result, risk_times=wanted)
    shown = sorted({float(t.get_position()[0]) for t in _risk_texts(ax)})
    assert shown[0] == 0.0 and set(shown) < set(wanted)  # some dropped, none invented
    assert 200.0 in shown
    assert overlapping_risk_labels(ax) == []
    assert [float(t) for t in ax.get_xticks()] == shown


def test_the_overlap_measure_sees_overprinted_labels():
    _data, result = long_follow_up()
    ax = km_plot(result)
    table_ax = risk_table_axes(ax)
    first = _risk_texts(ax)[0]
    x, y = first.get_position()
    clash = table_ax.text(x, y, "99999", ha="center", va="center", fontsize=9)
    clash.set_gid(RISK_LABEL_GID)
    assert overlapping_risk_labels(ax)
    assert intersecting([(0, 0, 10, 10), (20, 0, 30, 10)]) == []
    assert intersecting([(0, 0, 10, 10), (9, 0, 30, 10)]) == [(0, 1)]


def test_group_names_do_not_touch_the_first_numbers():
    _data, result = long_follow_up()
    names = {"pr_positive=0.0": "pr_positive: no", "pr_positive=1.0": "pr_positive: yes"}
    ax = km_plot(result, group_names=names)
    boxes = risk_table_boxes(ax)
    assert len(boxes) == len(_risk_texts(ax)) + 2
    assert intersecting(boxes, pad=4.0) == []
    table_ax = risk_table_axes(ax)
    assert [t.get_text() for t in table_ax.get_yticklabels()] == list(names.values())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(names.values())


def test_n_at_risk_reads_the_curve_between_the_result_times():
    data, result = long_follow_up()
    label = str(result.summary["label"].iloc[1])
    level = result.summary["group"].iloc[1]
    for t in (0.0, 12.0, 50.0, 229.0, 400.0):
        expected = int(((data["pr_positive"] == level) & (data["dfs_months"] >= t)).sum())
        assert n_at_risk(result, label, t) == expected


@pytest.mark.parametrize(
    ("end", "step", "ticks"),
    [(230.0, 60.0, [0.0, 60.0, 120.0, 180.0, 240.0]), (24.0, 12.0, [0.0, 12.0, 24.0])],
)
def test_risk_ticks(end, step, ticks):
    assert risk_ticks(end, step) == ticks


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
