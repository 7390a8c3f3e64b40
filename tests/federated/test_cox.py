"""The federated one-stage Cox model equals the pooled fit (and so R) to 1e-8."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pooled.federated.cox_sums import cox_sums
from pooled.federated.request import request_from_config
from pooled.models.cox import cox_fit_arrays, cox_score_residuals, fit_cox
from pooled.steps.base import AnalysisContext
from pooled.steps.cox import cox_spec
from tests.federated.conftest import Consortium, run

RTOL = 1e-8
COMPARED = (
    "estimate", "std_error", "naive_std_error", "hr", "ci_lower", "ci_upper", "p_value",
    "lr_p_value", "model_loglik_null", "model_loglik", "model_lr_chisq", "model_wald_chisq",
    "model_wald_df", "model_score_chisq", "model_aic",
)  # fmt: skip


def _pooled(consortium: Consortium, endpoint: str, **changes) -> pd.DataFrame:
    ctx = AnalysisContext(consortium.config)
    spec = cox_spec(ctx, endpoint, interactions=True, concordance=False, **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_cox(consortium.endpoint_frame(endpoint), spec)


def _compare(fed: dict, pooled) -> None:
    assert fed.get("error") is None, fed.get("error")
    rows = pd.DataFrame(fed["rows"])
    expected = pooled.to_frame()
    assert list(rows["term"]) == list(expected["term"])
    assert rows["n"].tolist() == expected["n"].tolist()
    assert rows["events"].tolist() == expected["events"].tolist()
    for column in COMPARED:
        np.testing.assert_allclose(
            rows[column].to_numpy(float), expected[column].to_numpy(float), rtol=RTOL, atol=1e-12,
            err_msg=column,
        )  # fmt: skip
    np.testing.assert_allclose(
        np.array(fed["covariance"]), pooled.covariance, rtol=RTOL, atol=1e-14
    )
    assert fed["iterations"] == pooled.iterations


def test_efron_with_interactions_and_robust_se_by_centre_equal_the_pooled_fit(paddy) -> None:
    request = request_from_config(paddy.config, "os")
    fed = run(paddy.centres, "central_cox", {"request": request.to_dict(), "robust": True})
    pooled = _pooled(paddy, "os", cluster="centre")
    _compare(fed, pooled)
    np.testing.assert_allclose(
        np.array(fed["robust_covariance"]), pooled.robust_covariance, rtol=RTOL, atol=1e-14
    )
    stats = pd.DataFrame(fed["fit_statistics"]).set_index("term")
    expected = pooled.fit_statistics().set_index("term")
    for term in ("loglik_null", "loglik", "lr_test", "wald_test", "score_test"):
        assert stats.loc[term, "estimate"] == pytest.approx(
            expected.loc[term, "estimate"], rel=RTOL
        )
        assert stats.loc[term, "p_value"] == pytest.approx(
            expected.loc[term, "p_value"], rel=RTOL, nan_ok=True
        )
    # a round is one request to every centre; the exchange is recorded
    assert fed["exchange"]["rounds"] == 1 + fed["exchange"]["rounds_by_method"]["partial_cox"]
    assert fed["exchange"]["bytes_received"] > 0


def test_breslow_without_robust_se_equals_the_pooled_fit(paddy) -> None:
    request = request_from_config(paddy.config, "dfs", ties="breslow")
    fed = run(paddy.centres, "central_cox", {"request": request.to_dict(), "robust": False})
    _compare(fed, _pooled(paddy, "dfs", ties="breslow"))


def test_robust_score_test_with_more_centres_than_terms_equals_the_pooled_fit(epac) -> None:
    request = request_from_config(epac.config, "pfs")
    fed = run(epac.centres, "central_cox", {"request": request.to_dict(), "robust": True})
    pooled = _pooled(epac, "pfs", cluster="centre")
    _compare(fed, pooled)
    stats = pd.DataFrame(fed["fit_statistics"]).set_index("term")
    assert np.isfinite(pooled.robust_score_test)
    assert stats.loc["robust_score_test", "estimate"] == pytest.approx(
        pooled.robust_score_test, rel=RTOL
    )
    assert stats.loc["robust_score_test", "df"] == pooled.robust_score_df


def test_a_changed_centre_changes_the_estimate(paddy) -> None:
    """The comparison can fail: dropping one centre's answer moves the estimate."""
    request = request_from_config(paddy.config, "os")
    fed = run(
        paddy.centres[1:], "central_cox", {"request": request.to_dict(), "term_lr_tests": False}
    )
    full = _pooled(paddy, "os").coefficients
    assert not np.allclose(pd.DataFrame(fed["rows"])["estimate"], full, rtol=1e-3)


def test_centre_sums_equal_the_engine_at_any_coefficients() -> None:
    rng = np.random.default_rng(4)
    n = 800
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)])
    time = np.ceil(rng.exponential(20, n))  # many tied times
    event = rng.integers(0, 2, n)
    strata = rng.integers(0, 3, n)
    beta = np.array([0.3, -0.5, 0.1])
    for ties in ("efron", "breslow"):
        sums = cox_sums(X, time, event, strata, beta, ties=ties)
        residuals = cox_score_residuals(X, time, event, strata, beta, ties=ties)
        np.testing.assert_allclose(sums.score, residuals.sum(axis=0), rtol=1e-10, atol=1e-10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            at_beta = cox_fit_arrays(X, time, event, strata, ties=ties, init=beta, max_iter=1)
            fit = cox_fit_arrays(X, time, event, strata, ties=ties)
        assert sums.loglik == pytest.approx(at_beta.loglik_init, rel=1e-12)
        at_mle = cox_sums(X, time, event, strata, fit.coefficients, ties=ties)
        np.testing.assert_allclose(at_mle.information, fit.information, rtol=1e-10)
        assert at_mle.loglik == pytest.approx(fit.loglik, rel=1e-12)
        # sums over centres = the pooled sums (risk sets within strata)
        parts = [
            cox_sums(X[strata == s], time[strata == s], event[strata == s], None, beta, ties=ties)
            for s in range(3)
        ]
        assert sum(p.loglik for p in parts) == pytest.approx(sums.loglik, rel=1e-12)


def test_request_round_trips_through_json(paddy) -> None:
    import json

    from pooled.federated.request import FederatedRequest

    request = request_from_config(paddy.config, "os")
    again = FederatedRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again.to_dict() == json.loads(json.dumps(request.to_dict()))
    assert again.exposure_spec == request.exposure_spec
    assert again.covariate_specs == request.covariate_specs
    assert again.terms == request.terms and again.categorical == request.categorical
