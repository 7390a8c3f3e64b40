"""Validity across centres: per-centre C of the model fitted in each centre and its pooling
(``make_concordance.R``), internal-external cross-validation: C and calibration slope per
held-out centre and their pooling (``make_validity.R``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError
from pooled.models.validity import ValiditySpec, fit_validity

from .conftest import REFERENCE

REL = 1e-6  # C, SEs, slopes, pooled estimates (observed ~1e-14)
MODEL = ("age", "node_positive", "grade3", "ctc_positive")


@pytest.fixture(scope="module")
def concordance_reference() -> dict:
    return json.loads((REFERENCE / "expected_concordance.json").read_text())


@pytest.fixture(scope="module")
def validity_reference() -> dict:
    return json.loads((REFERENCE / "expected_validity.json").read_text())


@pytest.fixture(scope="module")
def result(cohort: pd.DataFrame):
    return fit_validity(cohort, ValiditySpec(duration="os_months", event="os_event",
                                             covariates=MODEL, tol=1e-12))  # fmt: skip


def test_apparent_per_centre_c_matches_r(result, concordance_reference):
    ref = concordance_reference["per_centre_harrell"]
    table = result.per_centre
    assert table["centre"].tolist() == ref["centre"]
    assert table["n"].tolist() == ref["n"] and table["events"].tolist() == ref["events"]
    np.testing.assert_allclose(table["apparent_c"], ref["C"], rtol=REL)
    np.testing.assert_allclose(table["apparent_c_se"], ref["se"], rtol=REL)


def test_apparent_c_pooling_matches_metafor(result, concordance_reference):
    ref = concordance_reference["per_centre_meta_analysis"]["REML_knha"]
    meta = result.meta["apparent_c"]
    for ours, theirs in (("estimate", "estimate"), ("se", "se"), ("ci_lower", "ci_lower"),
                         ("ci_upper", "ci_upper"), ("pi_lower", "pi_lower"),
                         ("pi_upper", "pi_upper"), ("q", "Q")):  # fmt: skip
        assert getattr(meta, ours) == pytest.approx(ref[theirs], rel=REL)
    assert meta.tau2 == ref["tau2"] == 0
    np.testing.assert_allclose(meta.weights_percent, ref["weights_percent"], rtol=REL)


def test_iecv_matches_r(result, validity_reference):
    ref = validity_reference["iecv"]
    table = result.per_centre
    for ours, theirs in (("iecv_c", "C"), ("iecv_c_se", "C_se"), ("calibration_slope", "slope"),
                         ("calibration_slope_se", "slope_se")):  # fmt: skip
        np.testing.assert_allclose(table[ours], ref[theirs], rtol=REL)
    for measure, key in (("iecv_c", "C_REML_knha"), ("calibration_slope", "slope_REML_knha")):
        meta, pooled = result.meta[measure], validity_reference["pooled"][key]
        for ours, theirs in (("estimate", "estimate"), ("se", "se"), ("pi_lower", "pi_lower"),
                             ("pi_upper", "pi_upper")):  # fmt: skip
            assert getattr(meta, ours) == pytest.approx(pooled[theirs], rel=REL)


def test_tidy_table(result):
    frame = result.to_frame()
    pooled = frame.loc[frame["row_type"] == "pooled"]
    assert list(pooled["model"]) == ["validity_apparent_c", "validity_iecv_c",
                                     "validity_calibration_slope"]  # fmt: skip
    assert (pooled["n"] == result.n).all()
    study = frame.loc[(frame["row_type"] == "study") & (frame["model"] == "validity_iecv_c")]
    assert study["n"].sum() == result.n


def test_small_centre_is_kept_with_a_reason(cohort):
    data = cohort.copy()
    small = data.index[data["centre"] == "C08"][5:]
    data = data.drop(small)  # C08 keeps 5 patients
    res = fit_validity(data, ValiditySpec(duration="os_months", event="os_event",
                                          covariates=MODEL, min_events=5))  # fmt: skip
    row = res.per_centre.set_index("centre").loc["C08"]
    assert np.isnan(row["apparent_c"]) and "events" in row["note"]
    assert res.meta["apparent_c"].k == 7
    off = fit_validity(cohort, ValiditySpec(duration="os_months", event="os_event",
                                            covariates=MODEL, iecv=False))  # fmt: skip
    assert set(off.meta) == {"apparent_c"} and off.per_centre["iecv_c"].isna().all()


def test_errors(cohort):
    with pytest.raises(ConfigError, match="non-empty"):
        ValiditySpec(duration="t", event="e", covariates=())
    with pytest.raises(DataError, match="no centre"):
        fit_validity(cohort, ValiditySpec(duration="os_months", event="os_event",
                                          covariates=MODEL, min_events=10_000))  # fmt: skip
