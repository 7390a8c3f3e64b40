"""Cluster-robust Cox tests: R parity with enough clusters, a rank-based Wald test with few.

Reference: ``expected_estimators.json`` (``cox_robust``), made by ``make_estimators.R``
(survival 3.5-3, ``coxph(..., cluster = )``, ``coxph.control(eps = 1e-12)``) on ``veteran.csv``
(cluster = row %% G) and ``cohort_multicentre.csv`` (cluster = centre, 8 centres).

With ``G > p`` clusters our robust Wald test, robust score test and robust SEs are R's
(``fit$wald.test``, ``fit$rscore``, ``sqrt(diag(fit$var))``). With ``G <= p`` the robust
covariance has rank ``G - 1``: R prints its Wald statistic (a generalised-Cholesky quadratic
form that depends on the column order) on ``p`` df, and a robust score statistic that equals
``G`` whatever the data; neither is meaningful. There the rank-based statistic is checked
against a direct NumPy computation, and R's rank (``coxph.wtest``'s ``df``) against ours.
Tolerance: 1e-9 relative (the fits agree to ~1e-14).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pooled.errors import FewClustersWarning
from pooled.models.cox import CoxSpec, cox_fit_arrays, fit_cox, generalised_wald

REL = 1e-9
VETERAN_COVARIATES = ("trt", "celltype", "karno", "diagtime", "age", "prior")
COHORT_COVARIATES = ("ctc_positive", "subtype", "age", "node_positive", "grade3")


@pytest.fixture(scope="module")
def veteran(reference_dir) -> pd.DataFrame:
    df = pd.read_csv(reference_dir / "veteran.csv")
    df["celltype"] = pd.Categorical(
        df["celltype"], categories=["squamous", "smallcell", "adeno", "large"]
    )
    return df


@pytest.fixture(scope="module")
def cohort_levels(cohort) -> pd.DataFrame:
    df = cohort.copy()
    df["subtype"] = pd.Categorical(
        df["subtype"], categories=["luminal_a", "luminal_b", "her2_positive", "triple_negative"]
    )
    return df


def veteran_fit(veteran: pd.DataFrame, n_clusters: int, **kw):
    data = veteran.assign(cl=veteran["row"] % n_clusters)
    spec = CoxSpec(
        duration="time",
        event="status",
        covariates=VETERAN_COVARIATES,
        categorical=(("celltype", "squamous"),),
        strata=(),
        cluster="cl",
        tol=1e-12,
        term_lr_tests=False,
        **kw,
    )
    return fit_cox(data, spec)


def cohort_fit(cohort: pd.DataFrame, interaction: bool):
    spec = CoxSpec(
        duration="os_months",
        event="os_event",
        covariates=COHORT_COVARIATES,
        categorical=(("subtype", "luminal_a"),),
        interactions=(("ctc_positive", "subtype"),) if interaction else (),
        cluster="centre",
        tol=1e-12,
        term_lr_tests=False,
    )
    return fit_cox(cohort, spec)


def assert_matches_r_estimates(res, ref):
    assert list(res.term_names) == list(ref["coef"])
    assert res.n == ref["n"] and res.events == ref["events"]
    assert res.n_clusters == ref["n_clusters"]
    np.testing.assert_allclose(res.coefficients, list(ref["coef"].values()), rtol=REL)
    np.testing.assert_allclose(res.std_errors, list(ref["robust_se"].values()), rtol=REL)
    np.testing.assert_allclose(res.naive_std_errors, list(ref["naive_se"].values()), rtol=REL)
    np.testing.assert_allclose(res.robust_covariance, ref["robust_vcov"]["matrix"], rtol=1e-8)
    assert res.score_test == pytest.approx(ref["score_test"], rel=REL)


# -- enough clusters: R's numbers ------------------------------------------------------------


@pytest.mark.parametrize("n_clusters", [9, 20])
def test_veteran_robust_tests_match_r(veteran, estimators_reference, n_clusters):
    ref = estimators_reference["cox_robust"][f"veteran_cluster_row_mod_{n_clusters}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewClustersWarning)
        res = veteran_fit(veteran, n_clusters)
    assert_matches_r_estimates(res, ref)
    assert res.wald_test == pytest.approx(ref["wald_test"], rel=REL)
    assert res.wald_df == ref["wald_df_summary"] == ref["p"] == ref["wald_rank_coxph_wtest"]
    assert res.wald_p_value == pytest.approx(ref["wald_p_summary"], rel=1e-6, abs=1e-300)
    assert res.robust_score_test == pytest.approx(ref["robust_score_test"], rel=REL)
    assert res.robust_score_df == ref["robust_score_df_summary"]
    assert res.robust_score_p_value == pytest.approx(ref["robust_score_p_summary"], rel=1e-6)


def test_cohort_main_effects_robust_tests_match_r(cohort_levels, estimators_reference):
    # 8 centres, 7 coefficients: the robust covariance has full rank 7 = G - 1
    ref = estimators_reference["cox_robust"]["cohort_strat_cluster_centre"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewClustersWarning)
        res = cohort_fit(cohort_levels, interaction=False)
    assert_matches_r_estimates(res, ref)
    assert res.wald_test == pytest.approx(ref["wald_test"], rel=1e-8)
    assert res.wald_df == ref["p"] == 7
    assert res.robust_score_test == pytest.approx(ref["robust_score_test"], rel=REL)
    assert res.robust_score_df == 7


# -- few clusters: a rank-based statistic, a warning, no lost fit ---------------------------


def direct_rank_wald(b: np.ndarray, v: np.ndarray, rtol: float = 1e-10) -> tuple[float, int]:
    """The definition, written independently: Moore-Penrose inverse of the correlation matrix
    (eigen-decomposition), rank by eigenvalues above rtol x the largest."""
    d = np.sqrt(np.diag(v))
    corr = v / np.outer(d, d)
    values, vectors = np.linalg.eigh((corr + corr.T) / 2)
    keep = values > rtol * values.max()
    pinv = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    z = b / d
    return float(z @ pinv @ z), int(keep.sum())


@pytest.mark.parametrize(
    ("case", "n_clusters", "p"),
    [("veteran_cluster_row_mod_5", 5, 8), ("cohort_strat_interaction_cluster_centre", 8, 10)],
)
def test_few_clusters_gives_rank_based_wald_and_warns(
    case, n_clusters, p, veteran, cohort_levels, estimators_reference
):
    ref = estimators_reference["cox_robust"][case]
    with pytest.warns(FewClustersWarning, match=f"{n_clusters} clusters for {p} coefficients"):
        if case.startswith("veteran"):
            res = veteran_fit(veteran, n_clusters)
        else:
            res = cohort_fit(cohort_levels, interaction=True)
    # the fit and the per-coefficient robust SEs are kept (and are R's)
    assert_matches_r_estimates(res, ref)
    # rank G - 1, as R's own generalised Cholesky finds it
    assert res.wald_df == n_clusters - 1 == ref["wald_rank_coxph_wtest"]
    stat, rank = direct_rank_wald(res.coefficients, res.robust_covariance)
    assert rank == res.wald_df
    assert res.wald_test == pytest.approx(stat, rel=1e-10)
    assert 0.0 <= res.wald_test < 1e6 and 0.0 <= res.wald_p_value <= 1.0
    # R prints a robust score statistic equal to G (not meaningful); ours is undefined
    assert ref["robust_score_test"] == pytest.approx(n_clusters, rel=1e-10)
    assert np.isnan(res.robust_score_test) and np.isnan(res.robust_score_p_value)
    assert res.robust_score_df == n_clusters


def test_rank_based_wald_does_not_depend_on_units(veteran):
    with pytest.warns(FewClustersWarning):
        base = veteran_fit(veteran, 5)
    rescaled = veteran.assign(karno=veteran["karno"] / 100.0, age=veteran["age"] * 12.0)
    with pytest.warns(FewClustersWarning):
        other = veteran_fit(rescaled, 5)
    assert other.wald_df == base.wald_df == 4
    assert other.wald_test == pytest.approx(base.wald_test, rel=1e-8)


def test_arrays_kernel_with_fewer_clusters_than_coefficients():
    rng = np.random.default_rng(11)
    n, p = 300, 4
    x = rng.normal(size=(n, p))
    t = rng.exponential(np.exp(-x @ np.array([0.5, -0.3, 0.2, 0.0])))
    cluster = np.arange(n) % 3
    with pytest.warns(FewClustersWarning, match="3 clusters for 4 coefficients"):
        fit = cox_fit_arrays(x, t, np.ones(n), cluster=cluster)
    assert fit.robust_covariance is not None
    assert np.all(np.isfinite(np.sqrt(np.diag(fit.robust_covariance))))
    assert fit.robust_wald_df == 2 and fit.n_clusters == 3
    assert np.isfinite(fit.robust_wald_test) and np.isnan(fit.robust_score_test)


def test_generalised_wald_full_rank_is_the_ordinary_wald():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    v = a @ a.T + np.diag([1e-6, 1.0, 1e4, 2.0, 3.0])
    b = rng.normal(size=5)
    stat, rank = generalised_wald(b, v)
    assert rank == 5
    assert stat == pytest.approx(float(b @ np.linalg.solve(v, b)), rel=1e-10)


def test_generalised_wald_drops_zero_variance_and_checks_shape():
    v = np.diag([2.0, 0.0, 4.0])
    stat, rank = generalised_wald(np.array([2.0, 5.0, 2.0]), v)
    assert rank == 2 and stat == pytest.approx(2.0 + 1.0)
    from pooled.errors import DataError

    with pytest.raises(DataError, match="expected shape"):
        generalised_wald(np.ones(2), np.eye(3))


def test_multiple_imputation_with_few_clusters_keeps_the_fit(cohort_levels):
    spec = CoxSpec(
        duration="os_months",
        event="os_event",
        covariates=COHORT_COVARIATES,
        categorical=(("subtype", "luminal_a"),),
        interactions=(("ctc_positive", "subtype"),),
        cluster="centre",
        missing="mice",
        n_imputations=2,
        seed=5,
    )
    with pytest.warns(FewClustersWarning, match="8 clusters for 10 coefficients"):
        res = fit_cox(cohort_levels, spec)
    stat, rank = direct_rank_wald(res.coefficients, res.robust_covariance)
    assert res.wald_df == rank and res.wald_test == pytest.approx(stat, rel=1e-10)
    assert np.all(np.isfinite(res.std_errors)) and res.n_clusters == 8


def test_a_single_cluster_leaves_no_robust_test(veteran):
    with pytest.warns(FewClustersWarning, match="1 clusters for 8 coefficients"):
        res = veteran_fit(veteran, 1)
    assert res.wald_df == 0 and np.isnan(res.wald_test) and np.isnan(res.wald_p_value)
    assert np.isnan(res.robust_score_test) and res.n_clusters == 1
    assert np.all(np.isfinite(res.coefficients))


def test_generalised_wald_respects_a_known_rank_bound():
    # eigenvalues 1.9 (along (1, 1, 0)), 1 (along (0, 0, 1)) and 0.1 (along (1, -1, 0))
    v = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    b = np.array([1.0, -1.0, 0.5])
    stat, rank = generalised_wald(b, v)
    assert rank == 3 and stat == pytest.approx(0.25 + 2.0 / 0.1)
    stat, rank = generalised_wald(b, v, max_rank=2)  # drops the smallest direction
    assert rank == 2 and stat == pytest.approx(0.25)
