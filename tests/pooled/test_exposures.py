"""Exposures derived from the analysis config: thresholds per 7.5 ml, phenotypes, concordance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.config import ExposureSpec
from pooled.errors import ConfigError
from pooled.exposures import ctc_per_7_5ml, derive_exposure


def _patients() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ctc_count": [0, 3, 5, 9, 12, np.nan],
            "ctc_blood_volume_ml": [7.5, 7.5, 15.0, 15.0, 7.5, 7.5],
            "ctc_her2_positive_count": [0, 1, 0, 2, 0, 1],
            "ctc_er_positive_count": [0, 2, 5, 1, 0, 0],
            "dtc_count": [0, 1, 2, 0, np.nan, 4],
            "clinical_risk": ["low", "high", "low", "high", None, "low"],
        }
    )


def test_ctc_counts_are_normalised_to_7_5_ml() -> None:
    per = ctc_per_7_5ml(_patients())
    np.testing.assert_allclose(per.to_numpy()[:5], [0, 3, 2.5, 4.5, 12])
    assert np.isnan(per.iloc[5])


@pytest.mark.parametrize(
    ("threshold", "expected"), [(1, [0, 1, 1, 1, 1, np.nan]), (5, [0, 0, 0, 0, 1, np.nan])]
)
def test_ctc_threshold_per_7_5_ml(threshold: float, expected: list[float]) -> None:
    spec = ExposureSpec(name="ctc_positive", marker="ctc_count", threshold=threshold)
    np.testing.assert_array_equal(derive_exposure(_patients(), spec).to_numpy(), expected)


def test_raw_counts_when_not_normalised() -> None:
    spec = ExposureSpec(name="ctc_positive", marker="ctc_count", threshold=5, per_7_5ml=False)
    np.testing.assert_array_equal(
        derive_exposure(_patients(), spec).to_numpy(), [0, 0, 1, 1, 1, np.nan]
    )


def test_dtc_and_other_cut_off() -> None:
    spec = ExposureSpec(name="dtc_positive", marker="dtc_count", threshold=1, per_7_5ml=False)
    exposure = derive_exposure(_patients(), spec)
    np.testing.assert_array_equal(exposure.to_numpy(), [0, 1, 1, 0, np.nan, 1])
    assert exposure.name == "dtc_positive"
    np.testing.assert_array_equal(
        derive_exposure(_patients(), spec, threshold=2).to_numpy(), [0, 0, 1, 0, np.nan, 1]
    )


def test_her2_positive_ctc_phenotype() -> None:
    spec = ExposureSpec(name="her2_ctc", kind="her2_ctc", threshold=1)
    np.testing.assert_array_equal(derive_exposure(_patients(), spec).to_numpy(), [0, 1, 0, 1, 0, 1])


def test_phenotype_score_formula() -> None:
    spec = ExposureSpec(
        name="endocrine_resistant",
        kind="phenotype_score",
        formula="ctc_her2_positive_count - ctc_er_positive_count",
        threshold=1,
    )
    np.testing.assert_array_equal(derive_exposure(_patients(), spec).to_numpy(), [0, 0, 0, 1, 0, 1])


def test_bad_formula_is_a_config_error() -> None:
    spec = ExposureSpec(name="x", kind="phenotype_score", formula="no_such_column * 2")
    with pytest.raises(ConfigError, match="unknown name 'no_such_column'"):
        derive_exposure(_patients(), spec)


def test_clinical_vs_ctc_risk_concordance() -> None:
    spec = ExposureSpec(name="concordance", kind="risk_concordance", threshold=1)
    values = derive_exposure(_patients(), spec).tolist()
    assert values[:4] == ["low_low", "high_high", "low_high", "high_high"]
    assert pd.isna(values[4]) and pd.isna(values[5])  # clinical risk or CTC missing
