"""The cumulative-incidence plot (curves, bands, Gray's test, numbers at risk read from the
result) and the exposure-timing plot, drawn on Agg."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pooled.models.competing import CompetingRisksSpec, fit_cumulative_incidence  # noqa: E402
from pooled.models.cox import CoxSpec, fit_cox  # noqa: E402
from pooled.models.landmark import compare_exposure_timing  # noqa: E402
from pooled.plots.competing import (  # noqa: E402
    CURVE_GID,
    RISK_LABEL_GID,
    RISK_TABLE_LABEL,
    cumulative_incidence_plot,
    exposure_timing_plot,
)
from tests.models.conftest import REFERENCE  # noqa: E402


@pytest.fixture(scope="module")
def incidence():
    data = pd.read_csv(REFERENCE / "cohort_competing.csv")
    spec = CompetingRisksSpec(duration="time_months", status="status", group="ctc_positive",
                              event_label="bcss", competing_label="other_death")  # fmt: skip
    return fit_cumulative_incidence(data, spec)


def test_curves_and_numbers_at_risk_come_from_the_result(incidence) -> None:
    import matplotlib.pyplot as plt

    ax = cumulative_incidence_plot(incidence, risk_times=(0, 24, 48, 96))
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    assert f"{CURVE_GID}:1:event" in lines and f"{CURVE_GID}:0:competing" in lines
    drawn = lines[f"{CURVE_GID}:1:event"].get_ydata()
    curve = incidence.step_frame()
    expected = curve.loc[curve["label"] == "1", "cif_event"].to_numpy()
    np.testing.assert_allclose(drawn, expected)
    table = next(a for a in ax.figure.axes if a.get_label() == RISK_TABLE_LABEL)
    numbers = [int(t.get_text()) for t in table.texts if t.get_gid() == RISK_LABEL_GID]
    risk = incidence.risk_table((0.0, 24.0, 48.0, 96.0))
    assert numbers == risk["n_risk"].astype(int).tolist()
    assert numbers[0] == (incidence.curves.groupby("label")["n_risk"].first()["0"])
    assert "Gray's test" in " ".join(t.get_text() for t in ax.texts)
    plt.close(ax.figure)


def test_exposure_timing_plot_marks_every_analysis(incidence) -> None:
    import matplotlib.pyplot as plt

    data = pd.read_csv(REFERENCE / "cohort_competing.csv").assign(
        ev=lambda d: (d["status"] == 1).astype(float)
    )
    fit = fit_cox(data, CoxSpec(duration="time_months", event="ev",
                                covariates=("ctc_positive", "age")))  # fmt: skip
    result = compare_exposure_timing(exposure="ctc_positive", baseline=fit,
                                     naive={"ever positive": fit})  # fmt: skip
    ax = exposure_timing_plot(result)
    position = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert position["status at baseline"] > position["ever positive"]  # table order, top down
    assert ax.get_xscale() == "log"
    plt.close(ax.figure)
