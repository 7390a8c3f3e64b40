"""Added value of a marker over a clinical model: R's ``anova`` and ``concordance(fit1, fit2)``
(``make_concordance.R``), and the bootstrap by centre."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError
from pooled.models.added_value import AddedValueSpec, fit_added_value
from pooled.results import TIDY_COLUMNS

from .conftest import REFERENCE

REL = 1e-6  # LR chi-square, C, variances (observed ~1e-14)
CLINICAL = ("age", "node_positive", "grade3")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "expected_concordance.json").read_text())


@pytest.fixture(scope="module")
def result(cohort: pd.DataFrame):
    spec = AddedValueSpec(duration="os_months", event="os_event", clinical=CLINICAL,
                          marker=("ctc_positive",), tol=1e-12, n_bootstrap=60, seed=11)  # fmt: skip
    return fit_added_value(cohort, spec)


def test_lr_test_matches_r_anova(result, reference):
    ref = reference["lr_test_ctc_added"]
    assert result.n == 2899 and result.lr_test.df == ref["df"]
    assert result.lr_test.chisq == pytest.approx(ref["chisq"], rel=REL)
    assert result.lr_test.p_value == pytest.approx(ref["p"], rel=REL)
    assert result.lr_test.loglik_reduced == pytest.approx(ref["loglik"]["clinical"], rel=REL)


@pytest.mark.parametrize(
    "name, key", [("harrell", "comparison_harrell"), ("uno", "comparison_uno")]
)
def test_concordance_comparison_matches_r(result, reference, name, key):
    ref = reference[key]
    ours = result.concordance[name]
    np.testing.assert_allclose(ours.concordance, list(ref["concordance"].values()), rtol=REL)
    np.testing.assert_allclose(ours.covariance, ref["var"]["matrix"], rtol=REL)
    assert ours.difference == pytest.approx(ref["difference_full_minus_clinical"], rel=REL)
    assert ours.se_difference == pytest.approx(ref["se_difference"], rel=REL)
    assert ours.p_value == pytest.approx(ref["p_two_sided"], rel=REL)
    single = reference[f"concordance_{name}"]["clinical"]
    assert result.concordance[name].results[0].std_error == pytest.approx(single["se"], rel=REL)


def test_bootstrap_by_centre(result, cohort):
    boot = result.bootstrap
    assert len(boot) + result.n_bootstrap_failed == 60 and len(boot) >= 55
    np.testing.assert_allclose(boot["harrell_difference"],
                               boot["harrell_full"] - boot["harrell_clinical"])  # fmt: skip
    se, lower, upper = result.bootstrap_interval("harrell")
    assert lower < result.concordance["harrell"].difference < upper
    # the same order of magnitude as the jackknife SE; clustering can only add
    assert 0.5 < se / result.concordance["harrell"].se_difference < 5
    again = fit_added_value(cohort, AddedValueSpec(duration="os_months", event="os_event",
                                                   clinical=CLINICAL, marker=("ctc_positive",),
                                                   tol=1e-12, n_bootstrap=60, seed=11))  # fmt: skip
    pd.testing.assert_frame_equal(again.bootstrap, boot)  # same seed, same replicates


def test_tidy_table(result):
    frame = result.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    diff = frame.loc[frame["row_type"] == "difference"]
    assert list(diff["model"]) == ["added_value_concordance_harrell", "added_value_concordance_uno"]
    assert diff["bootstrap_ci_lower"].notna().all()
    assert frame.loc[frame["model"] == "added_value_lr", "term"].iloc[0] == "+ ctc_positive"


def test_no_bootstrap_and_spec_errors(cohort):
    res = fit_added_value(cohort, AddedValueSpec(duration="os_months", event="os_event",
                                                 clinical=("age",), marker=("ctc_positive",),
                                                 n_bootstrap=0))  # fmt: skip
    assert res.bootstrap.empty and np.isnan(res.bootstrap_interval()[0])
    with pytest.raises(ConfigError, match="both clinical and marker"):
        AddedValueSpec(duration="t", event="e", clinical=("a",), marker=("a",))
    with pytest.raises(ConfigError, match="at least one"):
        AddedValueSpec(duration="t", event="e", clinical=(), marker=("a",))
