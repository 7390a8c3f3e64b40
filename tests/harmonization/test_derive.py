"""Derived fields: receptor status, HER2, PADDY subtype, CTC per 7.5 ml and the endpoints,
checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonization.derive import (
    derive_endpoints,
    derive_fields,
    derive_her2_status,
    derive_receptor_status,
    derive_subtype,
)
from harmonization.errors import SchemaError
from harmonization.schema import load_schema

T = pd.Timestamp
DPM = 30.4375


@pytest.fixture(scope="module")
def schema():
    return load_schema()


def test_receptor_status_threshold_is_one_percent():
    out = derive_receptor_status(np.array([0.0, 0.99, 1.0, 80.0, np.nan]))
    assert out.tolist() == ["negative", "negative", "positive", "positive", None]


@pytest.mark.parametrize(
    ("ihc", "ish", "expected"),
    [
        ("3+", None, "positive"),
        ("2+", "amplified", "positive"),
        ("2+", "not_amplified", "negative"),
        ("2+", None, None),
        ("1+", None, "negative"),
        ("0", None, "negative"),
        (None, "amplified", "positive"),
        (None, "not_amplified", "negative"),
        (None, None, None),
    ],
)
def test_her2_from_ihc_and_ish(ihc, ish, expected):
    assert derive_her2_status(pd.Series([ihc]), pd.Series([ish])).tolist() == [expected]


@pytest.mark.parametrize(
    ("er", "pr", "her2", "grade", "ki67", "expected"),
    [
        ("positive", "negative", "negative", 1, np.nan, "luminal_a"),
        ("negative", "positive", "negative", 2, 10, "luminal_a"),
        ("positive", "positive", "negative", 2, 25, "luminal_b"),
        ("positive", None, "negative", 3, np.nan, "luminal_b"),
        ("positive", "positive", "negative", np.nan, 30, "luminal_b"),
        ("positive", "positive", "negative", np.nan, 5, None),
        ("positive", "positive", "positive", 1, 5, "her2_positive"),
        ("negative", "negative", "positive", 3, 50, "her2_positive"),
        ("negative", "negative", "negative", 3, 50, "triple_negative"),
        ("negative", None, "negative", 3, 50, None),
        ("positive", "positive", None, 1, 5, None),
    ],
)
def test_paddy_subtype(er, pr, her2, grade, ki67, expected):
    got = derive_subtype(
        np.array([er], dtype=object), np.array([pr], dtype=object),
        np.array([her2], dtype=object), np.array([grade], dtype=float),
        np.array([ki67], dtype=float),
    )  # fmt: skip
    assert got.tolist() == [expected]


def test_derive_fields_fills_only_missing_and_is_pure(schema):
    values = pd.DataFrame(
        {
            "er_status": [None, "negative"],
            "er_percent": [50.0, 50.0],  # the delivered status is kept even if inconsistent
            "pr_percent": [0.0, 0.0],
            "her2_ihc": ["2+", "3+"],
            "her2_ish": ["not_amplified", None],
            "grade": [3.0, 1.0],
            "subtype": [None, "luminal_a"],
            "ctc_count": [3.0, 2.0],
            "ctc_blood_volume_ml": [15.0, 0.0],
        }
    )
    before = values.copy()
    out = derive_fields(values, schema)
    pd.testing.assert_frame_equal(values, before)
    assert out["er_status"].tolist() == ["positive", "negative"]
    assert out["pr_status"].tolist() == ["negative", "negative"]
    assert out["her2_status"].tolist() == ["negative", "positive"]
    assert out["subtype"].tolist() == ["luminal_b", "luminal_a"]
    assert out["ctc_per_7_5ml"].iloc[0] == pytest.approx(1.5)
    assert np.isnan(out["ctc_per_7_5ml"].iloc[1])


def _patients() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "setting": ["early", "early", "early", "metastatic", "early"],
            "diagnosis_date": [T("2010-01-01"), T("2010-01-01"), T("2010-01-01"),
                               T("2015-01-01"), pd.NaT],
            "surgery_date": [T("2010-02-01"), T("2010-02-01"), T("2010-02-01"), pd.NaT, pd.NaT],
            "sample_date": [T("2010-01-10"), T("2010-01-10"), T("2010-01-10"),
                            T("2015-03-02"), pd.NaT],
            "last_contact_date": [T("2015-01-01"), T("2013-07-01"), T("2012-01-01"),
                                  T("2016-03-01"), pd.NaT],
            "recurrence_date": [pd.NaT, T("2012-01-01"), pd.NaT, pd.NaT, pd.NaT],
            "distant_recurrence_date": [pd.NaT, T("2013-01-01"), pd.NaT, pd.NaT, pd.NaT],
            "progression_date": [pd.NaT, pd.NaT, pd.NaT, T("2015-09-01"), pd.NaT],
            "death_date": [pd.NaT, T("2013-07-01"), T("2012-01-01"), pd.NaT, pd.NaT],
            "death_cause": [None, "breast_cancer", "other", None, None],
            "os_months": [np.nan, np.nan, np.nan, np.nan, 42.0],
            "os_event": pd.array([None, None, None, None, True], dtype="boolean"),
        }
    )  # fmt: skip


def _months(a: str, b: str) -> float:
    return (T(b) - T(a)).days / DPM


def test_endpoints_from_dates(schema):
    out = derive_endpoints(_patients(), schema)
    # patient 0: alive, censored at last contact
    assert out.loc[0, "os_months"] == pytest.approx(_months("2010-01-01", "2015-01-01"))
    assert not out.loc[0, "os_event"] and not out.loc[0, "dfs_event"]
    # patient 1: recurrence, distant recurrence, death from breast cancer
    assert out.loc[1, "os_months"] == pytest.approx(_months("2010-01-01", "2013-07-01"))
    assert out.loc[1, "dfs_months"] == pytest.approx(_months("2010-01-01", "2012-01-01"))
    assert out.loc[1, "ddfs_months"] == pytest.approx(_months("2010-01-01", "2013-01-01"))
    assert out.loc[1, ["os_event", "bcss_event", "dfs_event", "ddfs_event"]].all()
    # patient 2: death from another cause: an OS and DFS event, BCSS censored at death
    assert out.loc[2, "os_event"] and out.loc[2, "dfs_event"] and not out.loc[2, "bcss_event"]
    assert out.loc[2, "bcss_months"] == pytest.approx(_months("2010-01-01", "2012-01-01"))
    # patient 3: metastatic, origin = sample date; progression is a PFS and TTF event
    assert out.loc[3, "pfs_months"] == pytest.approx(_months("2015-03-02", "2015-09-01"))
    assert out.loc[3, "pfs_event"] and out.loc[3, "ttf_event"] and not out.loc[3, "os_event"]
    assert out.loc[3, "os_months"] == pytest.approx(_months("2015-03-02", "2016-03-01"))
    # patient 4: no dates, delivered duration kept
    assert out.loc[4, "os_months"] == 42.0 and out.loc[4, "os_event"]
    assert np.isnan(out.loc[4, "dfs_months"]) and pd.isna(out.loc[4, "dfs_event"])


def test_origin_can_be_changed(schema):
    values = _patients()
    surgery = derive_endpoints(values, schema, origin="surgery")
    assert surgery.loc[0, "os_months"] == pytest.approx(_months("2010-02-01", "2015-01-01"))
    assert np.isnan(surgery.loc[3, "os_months"])  # metastatic: no surgery date
    sample = derive_endpoints(values, schema, origin="sample")
    assert sample.loc[1, "dfs_months"] == pytest.approx(_months("2010-01-10", "2012-01-01"))
    # re-deriving on a derived table gives the same answer (no state, no drift)
    again = derive_endpoints(derive_endpoints(values, schema), schema, origin="surgery")
    pd.testing.assert_series_equal(again["os_months"], surgery["os_months"])
    with pytest.raises(SchemaError, match="origin must be one of"):
        derive_endpoints(values, schema, origin="randomisation")  # type: ignore[arg-type]


def test_negative_times_are_missing_and_durations_can_be_preferred(schema):
    values = _patients()
    values.loc[0, "last_contact_date"] = T("2009-06-01")
    values.loc[0, ["os_months", "os_event"]] = [99.0, False]
    out = derive_endpoints(values, schema)
    assert np.isnan(out.loc[0, "dfs_months"]) and pd.isna(out.loc[0, "dfs_event"])
    assert np.isnan(out.loc[0, "os_months"])  # dated row: no fallback to the delivered time
    preferred = derive_endpoints(values, schema, prefer="durations")
    assert preferred.loc[0, "os_months"] == 99.0
