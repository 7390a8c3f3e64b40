"""The generator reproduces its published calibration targets, and its truth is recovered.

Recovery tests with fixed seeds: positivity rates, centre sizes, median follow-up, median OS by
marker status, and a stratified Cox fit (lifelines, Efron) whose 95 % CI covers the cached
large-draw estimand (the value the same model converges to).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

from pooled.simulate import get_scenario, scenario_estimands, simulate_consortium
from pooled.simulate.cohort import simulate_patients
from pooled.simulate.scenarios import SUBTYPES, centre_sizes
from pooled.simulate.truth import _read_cache, compute_estimands, cox_breslow, fingerprint


def _draw(name: str, n: int, seed: int) -> pd.DataFrame:
    spec = get_scenario(name)
    sizes = centre_sizes([c.weight for c in spec.centres], n)
    parts = [
        simulate_patients(spec, c, int(m), np.random.default_rng([seed, i]))
        for i, (c, m) in enumerate(zip(spec.centres, sizes, strict=True))
    ]
    return pd.concat(parts, ignore_index=True)


def _design(frame: pd.DataFrame, setting: str) -> pd.DataFrame:
    out = pd.DataFrame({"marker": frame["marker_positive"].astype(float), "age": frame["age"]})
    if setting == "early":
        out["tumour_size_mm"] = frame["tumour_size_mm"]
        out["positive_nodes"] = frame["positive_nodes"]
        for g in (2, 3):
            out[f"grade{g}"] = (frame["grade"] == g).astype(float)
    else:
        out["line_of_therapy"] = frame["line_of_therapy"]
    for s in SUBTYPES[1:]:
        out[s] = (frame["subtype"] == s).astype(float)
    out["centre"] = frame["centre"].to_numpy()
    return out


def _covers(frame: pd.DataFrame, setting: str, endpoint: str, log_hr: float) -> tuple[bool, tuple]:
    data = _design(frame, setting)
    data["time"] = frame[f"{endpoint}_months"].to_numpy(float)
    data["event"] = frame[f"{endpoint}_event"].astype(bool).to_numpy()
    data = data.dropna()
    fit = CoxPHFitter().fit(data, "time", "event", strata=["centre"])
    lo, hi = fit.confidence_intervals_.loc["marker"]
    return bool(lo <= log_hr <= hi), (lo, fit.params_["marker"], hi, log_hr)


@pytest.fixture(scope="module")
def paddy(tmp_path_factory):
    """The full-size paddy consortium (10,307 patients), written to disk."""
    out = tmp_path_factory.mktemp("paddy_full")
    result = simulate_consortium("paddy", seed=2026, out_dir=out)
    return result, pd.read_parquet(out / "truth_patients.parquet")


def test_paddy_sizes_and_positivity(paddy):
    result, frame = paddy
    spec = get_scenario("paddy")
    assert len(frame) == 10_307
    expected = centre_sizes([c.weight for c in spec.centres], 10_307)
    assert result.centres["n_patients"].tolist() == expected.tolist()
    assert len(expected) == 11 and expected.max() / expected.min() > 5
    se = math.sqrt(0.273 * 0.727 / 10_307)
    assert abs(frame["marker_positive"].mean() - 0.273) < 3.5 * se
    # positivity more frequent with larger tumours, node-positive, HR-negative, HER2+, grade 3
    pos = frame["marker_positive"]
    assert pos[frame["positive_nodes"] > 0].mean() > pos[frame["positive_nodes"] == 0].mean()
    assert pos[frame["grade"] == 3].mean() > pos[frame["grade"] < 3].mean()
    assert (
        pos[frame["her2_status"] == "positive"].mean()
        > pos[frame["her2_status"] == "negative"].mean()
    )
    assert pos[frame["tumour_size_mm"] > 30].mean() > pos[frame["tumour_size_mm"] < 15].mean()


def test_paddy_median_followup(paddy):
    _, frame = paddy
    km = KaplanMeierFitter().fit(frame["os_months"], ~frame["os_event"].astype(bool))
    assert abs(km.median_survival_time_ / 12 - 7.6) < 0.35


@pytest.mark.parametrize("endpoint", ["os", "bcss", "dfs"])
def test_paddy_cox_recovers_the_estimand(paddy, endpoint):
    _, frame = paddy
    truth = scenario_estimands(get_scenario("paddy"))["endpoints"][endpoint]["adjusted"]
    covered, numbers = _covers(frame, "early", endpoint, truth["log_hr"])
    assert covered, numbers


def test_estimands_match_the_published_targets():
    for name, targets in (
        ("paddy", {"os": 1.23, "bcss": 1.38, "dfs": 1.30}),
        ("early-ctc", {"dfs": 1.8, "ddfs": 1.9, "bcss": 2.0, "os": 2.0}),
        ("epac", {"os": 2.8, "pfs": 1.9}),
    ):
        est = scenario_estimands(get_scenario(name))["endpoints"]
        for endpoint, target in targets.items():
            assert abs(math.log(est[endpoint]["adjusted"]["hr"] / target)) < 0.05, (name, endpoint)
    # the interaction: the recurrence HR is largest in luminal B
    by_subtype = get_scenario("paddy").early.marker_log_hr
    assert max(by_subtype, key=by_subtype.get) == "luminal_b"


def test_epac_calibration():
    frame = _draw("epac", 30_000, seed=3)
    assert abs(frame["marker_positive"].mean() - 0.5) < 0.02
    assert ((frame["ctc_per_7_5ml"] >= 5) == frame["marker_positive"]).all()
    for positive, target, tol in ((False, 36.0, 2.5), (True, 16.0, 1.5)):
        sel = frame["marker_positive"] == positive
        km = KaplanMeierFitter().fit(frame.loc[sel, "os_months"], frame.loc[sel, "os_event"])
        assert abs(km.median_survival_time_ - target) < tol
        for subtype in SUBTYPES:  # in every subtype
            s = sel & (frame["subtype"] == subtype)
            km = KaplanMeierFitter().fit(frame.loc[s, "os_months"], frame.loc[s, "os_event"])
            assert abs(km.median_survival_time_ - target) < 2 * tol, subtype


def test_epac_cox_recovers_the_estimand():
    frame = _draw("epac", 1_944, seed=4)
    truth = scenario_estimands(get_scenario("epac"))["endpoints"]
    for endpoint in ("os", "pfs"):
        covered, numbers = _covers(
            frame, "metastatic", endpoint, truth[endpoint]["adjusted"]["log_hr"]
        )
        assert covered, (endpoint, numbers)


def test_early_ctc_calibration():
    frame = _draw("early-ctc", 3_173, seed=5)
    assert abs(frame["marker_positive"].mean() - 0.20) < 3.5 * math.sqrt(0.16 / 3_173)
    km = KaplanMeierFitter().fit(frame["os_months"], ~frame["os_event"].astype(bool))
    assert abs(km.median_survival_time_ - 63) < 4
    truth = scenario_estimands(get_scenario("early-ctc"))["endpoints"]
    covered, numbers = _covers(frame, "early", "dfs", truth["dfs"]["adjusted"]["log_hr"])
    assert covered, numbers


def test_trajectory_calibration(tmp_path):
    result = simulate_consortium("trajectory", seed=9, out_dir=tmp_path)
    frame = pd.read_parquet(tmp_path / "truth_patients.parquet")
    samples = pd.read_parquet(tmp_path / "truth_samples.parquet")
    assert len(frame) == 469 and samples.groupby("patient_id").size().min() >= 3
    assert 1900 <= len(samples) <= 2500
    shares = frame["true_group"].value_counts(normalize=True)
    for group, share in (
        ("undetectable", 0.57),
        ("low", 0.24),
        ("intermediate", 0.14),
        ("high", 0.05),
    ):
        assert abs(shares[group] - share) < 0.01
    assert abs(frame["marker_positive"].mean() - 0.53) < 0.07
    assert result.truth["trajectory_hazard_ratios"]["os"]["high"] == pytest.approx(10.8)


def test_estimand_cache_is_fresh_and_reproducible():
    cache = _read_cache()
    for name in ("paddy", "epac", "early-ctc"):
        assert cache[name]["fingerprint"] == fingerprint(get_scenario(name)), (
            f"estimands.json is stale for {name}: run python -m pooled.simulate.truth {name}"
        )
    spec = get_scenario("epac")
    small = compute_estimands(spec, n_draw=100_000, seed=7)
    for endpoint, values in small["endpoints"].items():
        big = cache["epac"]["endpoints"][endpoint]["adjusted"]
        got = values["adjusted"]
        assert abs(got["log_hr"] - big["log_hr"]) < 4 * math.hypot(got["se"], big["se"])


def test_cox_breslow_matches_statsmodels():
    from statsmodels.duration.hazard_regression import PHReg

    rng = np.random.default_rng(1)
    n = 1500
    x = rng.normal(size=(n, 2))
    strata = rng.integers(0, 3, n)
    time = np.round(rng.exponential(np.exp(-0.5 * x[:, 0] + 0.2 * x[:, 1] - 0.3 * strata)) * 20) + 1
    event = rng.random(n) < 0.7
    beta, se = cox_breslow(time, event, x, strata)
    ref = PHReg(time, x, status=event.astype(int), strata=strata, ties="breslow").fit()
    np.testing.assert_allclose(beta, ref.params, rtol=1e-6)
    np.testing.assert_allclose(se, ref.bse, rtol=1e-6)
