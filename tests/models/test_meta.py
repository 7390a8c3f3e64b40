"""Meta-analysis against metafor 3.8-1 ``rma()`` (fitted with threshold = tol = 1e-14).

Reference numbers: ``survival_reference`` (tests/reference/SOURCE.md): ``dat_bcg_meta_analysis``
(the BCG trials, Colditz et al. 1994, log risk ratios) and ``two_stage_meta_analysis`` (the
per-centre Cox log HRs of the cohort). Tolerances: 1e-6 relative for estimates, SEs, tau^2,
I^2, H^2, Q, intervals and weights; 1e-6 absolute for p-values; tau^2 and I^2 near zero are
compared absolutely (1e-10), since R's Fisher scoring stops at about 4e-15 there.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.meta import MetaSpec, fit_meta
from pooled.results import TIDY_COLUMNS

REL = 1e-6
P_ABS = 1e-6
NEAR_ZERO_ABS = 1e-10

FIELDS = [
    ("estimate", "estimate"),
    ("se", "se"),
    ("ci_lower", "ci_lower"),
    ("ci_upper", "ci_upper"),
    ("tau2", "tau2"),
    ("se_tau2", "se_tau2"),
    ("I2", "i2"),
    ("H2", "h2"),
    ("Q", "q"),
    ("pi_lower", "pi_lower"),
    ("pi_upper", "pi_upper"),
]


def spec_from_key(key: str) -> MetaSpec:
    method, _, suffix = key.partition("_")
    return MetaSpec(method=method, knha=suffix == "knha")  # type: ignore[arg-type]


def check_against_r(result, ref: dict) -> None:
    for ref_key, attr in FIELDS:
        expected = ref[ref_key]
        actual = getattr(result, attr)
        if expected is None or expected == []:  # R returned NULL (FE: no se.tau2, no PI)
            assert np.isnan(actual), f"{attr}: expected NaN (R gives NULL), got {actual}"
        elif ref_key in ("tau2", "I2") and abs(expected) < 1e-8:
            assert abs(actual - expected) < NEAR_ZERO_ABS, f"{attr}: {actual} vs {expected}"
        else:
            assert actual == pytest.approx(expected, rel=REL), attr
    assert abs(result.p_value - ref["pval"]) < P_ABS
    assert abs(result.q_p_value - ref["Q_p"]) < P_ABS
    np.testing.assert_allclose(result.weights_percent, ref["weights_percent"], rtol=REL)


BCG_KEYS = ["FE", "DL", "REML", "PM", "ML", "HE", "SJ", "REML_knha"]
TWO_STAGE_KEYS = ["FE", "DL", "REML", "PM", "REML_knha", "DL_knha"]


@pytest.mark.parametrize("key", BCG_KEYS)
def test_dat_bcg_against_metafor(key, survival_reference, dat_bcg):
    ref = survival_reference["dat_bcg_meta_analysis"][key]
    # the pinned JSON and the CSV hold the same yi, vi
    bcg = survival_reference["dat_bcg_log_rr"]
    np.testing.assert_allclose(dat_bcg["yi"], bcg["yi"], rtol=1e-12)
    res = fit_meta(dat_bcg["yi"], dat_bcg["vi"], spec_from_key(key), labels=dat_bcg["author"])
    check_against_r(res, ref)
    assert res.k == 13


@pytest.mark.parametrize("key", TWO_STAGE_KEYS)
def test_two_stage_pooling_against_metafor(key, survival_reference):
    per_centre = survival_reference["two_stage_per_centre"]
    ref = survival_reference["two_stage_meta_analysis"][key]
    se = np.asarray(per_centre["se"])
    res = fit_meta(per_centre["log_hr"], se**2, spec_from_key(key), labels=per_centre["centre"])
    check_against_r(res, ref)


class TestEstimatorProperties:
    @pytest.fixture
    def bcg(self, dat_bcg):
        return dat_bcg["yi"].to_numpy(), dat_bcg["vi"].to_numpy()

    def test_pm_solves_generalised_q(self, bcg):
        y, v = bcg
        res = fit_meta(y, v, MetaSpec(method="PM"))
        w = 1 / (v + res.tau2)
        mu = np.sum(w * y) / w.sum()
        assert np.sum(w * (y - mu) ** 2) == pytest.approx(len(y) - 1, rel=1e-12)

    def test_reml_is_a_stationary_point_of_the_restricted_likelihood(self, bcg):
        y, v = bcg
        tau2 = fit_meta(y, v, MetaSpec(method="REML")).tau2

        def restricted_loglik(t):
            w = 1 / (v + t)
            mu = np.sum(w * y) / w.sum()
            return -0.5 * (np.sum(np.log(v + t)) + np.log(w.sum()) + np.sum(w * (y - mu) ** 2))

        h = 1e-6
        assert restricted_loglik(tau2) > restricted_loglik(tau2 + h)
        assert restricted_loglik(tau2) > restricted_loglik(tau2 - h)

    def test_dl_closed_form(self, bcg):
        y, v = bcg
        w = 1 / v
        mu = np.sum(w * y) / w.sum()
        q = np.sum(w * (y - mu) ** 2)
        tau2 = (q - (len(y) - 1)) / (w.sum() - np.sum(w**2) / w.sum())
        assert fit_meta(y, v, MetaSpec(method="DL")).tau2 == pytest.approx(tau2, rel=1e-12)

    def test_knha_scales_variance_by_residual_mean_square(self, bcg):
        y, v = bcg
        plain = fit_meta(y, v, MetaSpec(method="DL"))
        knha = fit_meta(y, v, MetaSpec(method="DL", knha=True))
        w = 1 / (v + plain.tau2)
        s2 = np.sum(w * (y - plain.estimate) ** 2) / (len(y) - 1)
        assert knha.se == pytest.approx(plain.se * np.sqrt(s2), rel=1e-12)
        assert knha.df == len(y) - 1
        half = stats.t.ppf(0.975, len(y) - 1) * knha.se
        assert knha.ci_upper - knha.estimate == pytest.approx(half, rel=1e-12)

    def test_homogeneous_studies_give_zero_tau2(self):
        y = np.array([0.2, 0.21, 0.19, 0.2])
        v = np.array([0.05, 0.04, 0.06, 0.05])
        for method in ("DL", "REML", "PM", "ML", "HE", "SJ"):
            res = fit_meta(y, v, MetaSpec(method=method))  # type: ignore[arg-type]
            assert res.tau2 >= 0.0
        assert fit_meta(y, v, MetaSpec(method="PM")).tau2 == 0.0

    def test_single_study(self):
        res = fit_meta([0.4], [0.04], MetaSpec(method="REML", knha=True))
        assert res.estimate == 0.4 and res.se == pytest.approx(0.2)
        assert res.tau2 == 0.0 and res.df is None


class TestRecovery:
    def test_random_effects_recovers_mean_and_tau2(self):
        rng = np.random.default_rng(2026)
        k, mu, tau2 = 400, 0.25, 0.04
        v = rng.uniform(0.01, 0.1, k)
        y = mu + rng.normal(0, np.sqrt(tau2), k) + rng.normal(0, np.sqrt(v))
        for method in ("DL", "REML", "PM", "ML"):
            res = fit_meta(y, v, MetaSpec(method=method))  # type: ignore[arg-type]
            assert res.ci_lower < mu < res.ci_upper, method
            assert abs(res.tau2 - tau2) < 3 * res.se_tau2, method

    def test_knha_coverage_with_few_studies(self):
        # with 6 studies and real heterogeneity the HKSJ interval keeps nominal coverage
        rng = np.random.default_rng(99)
        k, mu, tau2, reps = 6, 0.2, 0.05, 400
        covered = 0
        for _ in range(reps):
            v = rng.uniform(0.01, 0.08, k)
            y = mu + rng.normal(0, np.sqrt(tau2), k) + rng.normal(0, np.sqrt(v))
            res = fit_meta(y, v, MetaSpec(method="REML", knha=True))
            covered += res.ci_lower <= mu <= res.ci_upper
        assert 0.91 <= covered / reps <= 0.985


class TestInterface:
    def test_per_study_table_and_tidy_frame(self, dat_bcg):
        res = fit_meta(
            dat_bcg["yi"],
            dat_bcg["vi"],
            MetaSpec(method="DL"),
            labels=dat_bcg["author"],
            term="bcg_vaccine",
        )
        table = res.per_study
        assert list(table["label"]) == list(dat_bcg["author"])
        assert table["weight_percent"].sum() == pytest.approx(100.0)
        frame = res.to_frame(endpoint="tb")
        assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
        pooled = frame[frame["row_type"] == "pooled"].iloc[0]
        assert pooled["term"] == "bcg_vaccine"
        assert pooled["hr"] == pytest.approx(np.exp(res.estimate))
        assert pooled["ci_lower"] == pytest.approx(np.exp(res.ci_lower))
        assert pooled["model"] == "meta_DL"
        assert (frame["row_type"] == "study").sum() == 13

    def test_result_is_frozen(self, dat_bcg):
        res = fit_meta(dat_bcg["yi"], dat_bcg["vi"])
        with pytest.raises(AttributeError):
            res.estimate = 0.0  # type: ignore[misc]

    def test_errors(self):
        with pytest.raises(DataError, match="same length"):
            fit_meta([0.1, 0.2], [0.1])
        with pytest.raises(DataError, match="positive"):
            fit_meta([0.1, 0.2], [0.1, -0.1])
        with pytest.raises(DataError, match="finite"):
            fit_meta([0.1, np.nan], [0.1, 0.1])
        with pytest.raises(ConfigError, match="one of FE, DL"):
            MetaSpec(method="reml2")  # type: ignore[arg-type]


# -- tau^2 in the hundreds: metafor's dat.normand1999 and a x3 copy -------------------------
# Reference: expected_estimators.json (`meta`, make_estimators.R), rma(..., control =
# list(threshold = 1e-14, tol = 1e-14, maxiter = 1000)); REML on the original scale does not
# converge in metafor at 1e-14 (absolute rule) and is recorded at threshold = 1e-12. The
# solvers agree to ~4e-16, so 1e-9 relative.
NORMAND_FIELDS = [
    ("estimate", "estimate"),
    ("se", "se"),
    ("zval", "statistic"),
    ("ci_lower", "ci_lower"),
    ("ci_upper", "ci_upper"),
    ("tau2", "tau2"),
    ("se_tau2", "se_tau2"),
    ("i2", "i2"),
    ("h2", "h2"),
    ("q", "q"),
    ("pi_lower", "pi_lower"),
    ("pi_upper", "pi_upper"),
]
NORMAND_KEYS = [f"normand1999_x{s}_{m}" for s in (1, 3) for m in ("ML", "REML", "PM")]


@pytest.mark.parametrize("key", NORMAND_KEYS)
def test_large_tau2_against_metafor(key, estimators_reference, normand1999):
    ref = estimators_reference["meta"][key]
    scale = ref["scale"]
    y = normand1999["yi"].to_numpy() * scale
    v = normand1999["vi"].to_numpy() * scale**2
    res = fit_meta(y, v, MetaSpec(method=ref["method"]))
    for ref_key, attr in NORMAND_FIELDS:
        assert getattr(res, attr) == pytest.approx(ref[ref_key], rel=1e-9), attr
    assert res.p_value == pytest.approx(ref["pval"], rel=1e-6)
    assert res.q_p_value == pytest.approx(ref["q_p"], rel=1e-6)
    assert res.k == ref["k"] == 9


def test_metafor_absolute_threshold_fails_where_ours_converges(estimators_reference):
    # documents why the rule is relative: metafor stops REML on the original scale only at 1e-12
    ref = estimators_reference["meta"]["normand1999_x1_REML"]
    assert ref["threshold_used"] == 1e-12
    assert [a["threshold"] for a in ref["failed_thresholds"]] == [1e-14, 1e-13]


@pytest.mark.parametrize("method", ["ML", "REML", "PM", "DL", "HE", "SJ"])
def test_estimates_scale_exactly_with_the_units(method, normand1999):
    # tau^2 from about 1e-6 to 1e3: multiplying yi by c multiplies tau^2 by c^2
    y0 = normand1999["yi"].to_numpy()
    v0 = normand1999["vi"].to_numpy()
    base = fit_meta(y0, v0, MetaSpec(method=method))  # type: ignore[arg-type]
    for c in (4e-5, 1.1e-3, 0.037, 0.3, 1.3):
        res = fit_meta(c * y0, c**2 * v0, MetaSpec(method=method))  # type: ignore[arg-type]
        assert res.tau2 == pytest.approx(c**2 * base.tau2, rel=1e-10), c
        assert res.estimate == pytest.approx(c * base.estimate, rel=1e-10), c
        assert res.se == pytest.approx(c * base.se, rel=1e-10), c
        assert res.se_tau2 == pytest.approx(c**2 * base.se_tau2, rel=1e-10), c
        assert res.i2 == pytest.approx(base.i2, rel=1e-10), c
        assert res.p_value == pytest.approx(base.p_value, rel=1e-8), c
    assert 5e-7 < fit_meta(4e-5 * y0, 16e-10 * v0, MetaSpec(method="ML")).tau2 < 2e-6


def test_fisher_scoring_still_reports_non_convergence(normand1999):
    from pooled.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match="did not converge in 2 iterations"):
        fit_meta(normand1999["yi"], normand1999["vi"], MetaSpec(method="REML", max_iter=2))


# -- a single study: metafor's conventions -----------------------------------------------------
K1_FIELDS = [
    ("estimate", "estimate"),
    ("se", "se"),
    ("zval", "statistic"),
    ("ci_lower", "ci_lower"),
    ("ci_upper", "ci_upper"),
    ("tau2", "tau2"),
    ("se_tau2", "se_tau2"),
    ("i2", "i2"),
    ("h2", "h2"),
    ("q", "q"),
    ("q_p", "q_p_value"),
    ("pi_lower", "pi_lower"),
    ("pi_upper", "pi_upper"),
    ("pval", "p_value"),
]


@pytest.mark.parametrize("key", ["FE", "DL", "REML", "ML", "PM", "HE", "SJ", "REML_knha"])
def test_single_study_against_metafor(key, estimators_reference, normand1999):
    ref = estimators_reference["meta_k1"][key]
    method, _, suffix = key.partition("_")
    spec = MetaSpec(method=method, knha=suffix == "knha")  # type: ignore[arg-type]
    res = fit_meta(normand1999["yi"][:1], normand1999["vi"][:1], spec)
    assert res.k == ref["k"] == 1
    for ref_key, attr in K1_FIELDS:
        expected = ref[ref_key]
        if expected is None:  # NA in R (se_tau2; FE has no prediction interval)
            assert np.isnan(getattr(res, attr)), attr
        else:
            assert getattr(res, attr) == pytest.approx(expected, rel=1e-12, abs=1e-300), attr
    assert res.df is None and ref["test"] == "z"
    assert res.q_df == 0


# -- Fisher scoring that cycles: eight REML fits from the paddy simulation study -------------
# Reference: expected_reml_cycles.json (make_reml_cycles.R): metafor 3.8-1 rma(method = "REML",
# control = list(threshold = 1e-14, stepadj = 0.5, maxiter = 10000)). Without stepadj metafor's
# Fisher scoring does not converge in five of them (it cycles around the root of the score);
# ours raised ConvergenceError in all eight (the five cycles, and three where the last step is
# rounding noise that flips sign at the relative tolerance). Both solvers find the root to
# ~1e-12, so 1e-9 relative.
REML_CYCLE_FIELDS = ("estimate", "se", "ci_lower", "ci_upper", "tau2", "se_tau2")


@pytest.fixture(scope="module")
def reml_cycles() -> dict:
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "reference" / "expected_reml_cycles.json"
    return dict(json.loads(path.read_text(encoding="utf-8"))["cases"])


@pytest.mark.parametrize(
    "case", ["os_5", "os_49", "os_118", "os_127", "os_228", "ddfs_228", "ddfs_391", "dfs_456"]
)
def test_reml_where_fisher_scoring_cycles_against_metafor(case, reml_cycles):
    ref = reml_cycles[case]
    res = fit_meta(ref["yi"], ref["vi"], MetaSpec(method="REML"))
    for field in REML_CYCLE_FIELDS:
        assert getattr(res, field) == pytest.approx(ref["reml"][field], rel=1e-9), field
    assert res.k == ref["reml"]["k"] == 11


def test_metafor_needs_stepadj_on_five_of_the_cycles(reml_cycles):
    # documents the cycles: plain Fisher scoring (threshold 1e-14) fails in metafor too
    plain = {case: ref["converges_plain"] for case, ref in reml_cycles.items()}
    assert sorted(c for c, ok in plain.items() if not ok) == [
        "ddfs_228", "os_118", "os_228", "os_49", "os_5"
    ]  # fmt: skip


def test_reml_root_is_the_maximum_where_fisher_scoring_cycles(reml_cycles):
    from scipy import optimize

    ref = reml_cycles["os_118"]
    y, v = np.asarray(ref["yi"]), np.asarray(ref["vi"])

    def minus_restricted_loglik(t: float) -> float:
        w = 1 / (v + t)
        mu = np.sum(w * y) / w.sum()
        return 0.5 * (np.sum(np.log(v + t)) + np.log(w.sum()) + np.sum(w * (y - mu) ** 2))

    best = optimize.minimize_scalar(
        minus_restricted_loglik, bounds=(0.0, 0.1), method="bounded", options={"xatol": 1e-12}
    )
    assert fit_meta(y, v, MetaSpec(method="REML")).tau2 == pytest.approx(best.x, rel=1e-5)
