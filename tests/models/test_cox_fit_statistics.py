"""Model-level statistics of every Cox fit against R survival 3.5-3 (``make_fit_statistics.R``:
``summary(coxph)``, ``AIC``, ``fit$concordance``), and their place in the tidy table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.timesplit import TimeSplitSpec, fit_time_split
from pooled.results import MODEL_STATISTIC_COLUMNS, TIDY_COLUMNS

from .conftest import REFERENCE

REL = 1e-6  # log-likelihoods, test statistics, AIC, C and its SE (observed ~1e-13)
P_ABS = 1e-6
COVARIATES = ("ctc_positive", "age", "node_positive", "grade3")
CASES = {
    "strat_efron": {},
    "strat_breslow": {"ties": "breslow"},
    "strat_efron_cluster_centre": {"cluster": "centre"},
    "unstratified_efron": {"strata": ()},
}


@pytest.fixture(scope="module")
def fit_statistics_reference() -> dict:
    return json.loads((REFERENCE / "expected_fit_statistics.json").read_text())["fits"]


def spec(**kw) -> CoxSpec:
    return CoxSpec(duration="os_months", event="os_event", covariates=COVARIATES, tol=1e-12, **kw)


@pytest.mark.parametrize("key", list(CASES))
def test_fit_statistics_match_r(key, cohort, fit_statistics_reference):
    ref = fit_statistics_reference[key]
    res = fit_cox(cohort, spec(**CASES[key]))
    stats = res.model_statistics()
    assert set(stats) == set(MODEL_STATISTIC_COLUMNS)
    assert stats["model_loglik_null"] == pytest.approx(ref["loglik_null"], rel=REL)
    assert stats["model_loglik"] == pytest.approx(ref["loglik"], rel=REL)
    for test in ("lr", "wald", "score"):
        r = ref[f"{test}_test"]
        assert stats[f"model_{test}_chisq"] == pytest.approx(r["chisq"], rel=REL)
        assert stats[f"model_{test}_df"] == r["df"]
        assert stats[f"model_{test}_p_value"] == pytest.approx(r["p"], abs=P_ABS)
    assert stats["model_aic"] == pytest.approx(ref["aic"], rel=REL)
    assert stats["model_concordance"] == pytest.approx(ref["concordance"], rel=REL)
    assert stats["model_concordance_se"] == pytest.approx(ref["concordance_se"], rel=REL)
    if "robust_score_test" in ref:
        r = ref["robust_score_test"]
        assert res.robust_score_test == pytest.approx(r["chisq"], rel=REL)
        assert res.robust_score_df == r["df"]


def test_model_columns_in_the_tidy_table(cohort):
    res = fit_cox(cohort, spec(analysis="paddy", endpoint="os"))
    frame = res.to_frame()
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert list(frame.columns[len(TIDY_COLUMNS) : len(TIDY_COLUMNS) + 3]) == [
        "z",
        "lr_p_value",
        "naive_std_error",
    ]
    assert list(frame.columns[-len(MODEL_STATISTIC_COLUMNS) :]) == list(MODEL_STATISTIC_COLUMNS)
    stats = res.model_statistics()
    for column in MODEL_STATISTIC_COLUMNS:  # the same value on every coefficient row
        assert (frame[column] == stats[column]).all(), column
    assert len(frame) == len(res.term_names)


def test_fit_statistics_rows(cohort, fit_statistics_reference):
    res = fit_cox(cohort, spec(cluster="centre", term_lr_tests=False))
    rows = res.fit_statistics().set_index("term")
    assert list(rows.index) == [
        "loglik_null",
        "loglik",
        "lr_test",
        "wald_test",
        "score_test",
        "robust_score_test",
        "aic",
        "concordance_harrell",
    ]
    assert (rows["row_type"] == "fit_statistic").all()
    assert rows.loc["wald_test", "estimate"] == res.wald_test
    assert rows.loc["wald_test", "df"] == res.wald_df_used == 4
    c = rows.loc["concordance_harrell"]
    ref = fit_statistics_reference["strat_efron_cluster_centre"]
    assert c["estimate"] == pytest.approx(ref["concordance"], rel=REL)
    assert c["std_error"] == pytest.approx(ref["concordance_se"], rel=REL)
    assert c["ci_lower"] < c["estimate"] < c["ci_upper"]
    plain = fit_cox(cohort, spec(term_lr_tests=False)).fit_statistics()
    assert "robust_score_test" not in set(plain["term"])


def test_multiple_imputation_has_no_likelihood_statistics(cohort):
    res = fit_cox(cohort, spec(missing="mice", n_imputations=2, seed=1, term_lr_tests=False))
    stats = res.model_statistics()
    assert np.isnan(stats["model_loglik"]) and np.isnan(stats["model_concordance"])
    assert np.isfinite(stats["model_wald_chisq"])
    frame = res.to_frame()
    assert set(MODEL_STATISTIC_COLUMNS) <= set(frame.columns)


def test_time_split_fit_carries_its_concordance(cohort):
    ref = json.loads((REFERENCE / "expected_counting.json").read_text())
    r = ref["time_split"]["concordance"]
    split = fit_time_split(
        cohort,
        TimeSplitSpec(cox=spec(term_lr_tests=False), exposure="ctc_positive", cuts=(24, 60)),
    )
    assert split.fit.concordance == pytest.approx(r["concordance"], rel=REL)
    assert split.fit.concordance_se == pytest.approx(np.sqrt(r["var"]), rel=REL)
    frame = split.to_frame()
    assert (frame["model_concordance"].dropna() == split.fit.concordance).all()


def test_no_comparable_pairs_gives_nan_concordance():
    """Events only tied with each other within each stratum: the model is estimable (beta = 0)
    but no pair is comparable, so C is undefined (NaN) and the rest of the fit stands."""
    data = pd.DataFrame(
        {"t": [1.0, 1, 2, 2], "e": [1, 1, 1, 1], "x": [0.0, 1, 1, 0], "centre": list("AABB")}
    )
    res = fit_cox(data, CoxSpec(duration="t", event="e", covariates=("x",)))
    assert res.coefficients[0] == pytest.approx(0.0, abs=1e-8)
    assert np.isnan(res.concordance) and np.isnan(res.concordance_se)
    assert np.isfinite(res.model_statistics()["model_score_chisq"])


def test_concordance_can_be_left_out_without_changing_the_fit(cohort):
    with_c = fit_cox(cohort, spec())
    without = fit_cox(cohort, spec(concordance=False))
    np.testing.assert_array_equal(with_c.coefficients, without.coefficients)
    assert 0.5 < with_c.concordance < 1 and np.isnan(without.concordance)
    assert np.isnan(without.concordance_se)
