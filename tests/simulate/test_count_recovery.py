"""The ``ctc-count`` scenario: counts and a known concave HR curve; the spline recovers it.

Recovery test (STYLE.md's second kind): over 40 simulated consortia the natural spline's
pointwise 95 % CIs cover the true log HR curve at >= 93 % of the grid points (the 200-replicate
run with its variants is ``bench/bench_count_recovery.py``, recorded in
``bench/results/count_recovery.md``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.simulate import simulate_consortium
from pooled.simulate.cohort import simulate_patients
from pooled.simulate.recovery import RECOVERY_GRID, count_curve_coverage
from pooled.simulate.scenarios import SCENARIOS, CountEffect, CountMetastaticModel, get_scenario

REPLICATES = 40
TARGET = 0.93


@pytest.fixture(scope="module")
def coverage():
    return count_curve_coverage(range(1, REPLICATES + 1))


def test_spline_ci_covers_the_true_curve(coverage):
    rows, summary = coverage
    assert len(rows) == REPLICATES * len(RECOVERY_GRID)
    assert not rows["beyond_data"].any()
    assert rows["covered"].mean() >= TARGET
    assert summary["coverage"].min() >= 0.85  # no count far off
    # small bias against the sampling error: the curve is recovered, not just covered
    assert (summary["bias"].abs() < 0.5 * summary["mean_se"]).all()
    assert summary["mean_log_hr"].is_monotonic_increasing


def test_the_curve_is_concave_and_the_truth_is_the_generator():
    effect = CountEffect()
    counts = np.array([0.0, 1, 2, 5, 20, 100, 1000])
    f = effect.log_hr(counts)
    assert f[0] == 0.0 and np.all(np.diff(f) > 0)
    x = np.linspace(0, 7, 50)
    second = np.diff(effect.log_hr(np.expm1(x)), 2)
    assert np.all(second <= 1e-12)  # concave in log(1 + count)
    exp_form = CountEffect(form="exponential")
    assert exp_form.log_hr(20.0) == pytest.approx(1.6 * (1 - np.exp(-0.5 * np.log(21))))


def test_counts_drive_the_hazard():
    spec = get_scenario("ctc-count")
    assert isinstance(spec.metastatic, CountMetastaticModel)
    frames = [simulate_patients(spec, c, 400, np.random.default_rng([3, i]))
              for i, c in enumerate(spec.centres)]  # fmt: skip
    data = pd.concat(frames, ignore_index=True)
    zero = (data["ctc_count"] == 0).mean()
    assert 0.18 < zero < 0.32  # 15 % structural zeros plus Poisson zeros
    per = data["ctc_count"] * 7.5 / data["ctc_blood_volume_ml"]
    np.testing.assert_allclose(data["ctc_per_7_5ml"], per)
    assert (data["marker_positive"] == (per >= spec.marker_threshold)).all()
    high = data["os_months"][per >= 20].median()
    none = data["os_months"][per == 0].median()
    assert high < none / 2  # exp(1.45): about 4 times the hazard


def test_other_scenarios_keep_their_models():
    for name, spec in SCENARIOS.items():
        if name != "ctc-count" and spec.metastatic is not None:
            assert not isinstance(spec.metastatic, CountMetastaticModel)


def test_consortium_truth_has_the_curve(tmp_path):
    result = simulate_consortium("ctc-count", seed=2, out_dir=tmp_path, n_patients=300)
    truth = json.loads((tmp_path / "truth.json").read_text())
    death = truth["parameters"]["death_hazard"]
    assert "tanh" in death["count_log_hr_function"]
    assert death["log_hr_vs_0_at_count"]["20"] == pytest.approx(float(CountEffect().log_hr(20.0)))
    assert truth["estimands"]["n_draw"] == 1_000_000  # cached in estimands.json
    assert result.n_patients == 300
