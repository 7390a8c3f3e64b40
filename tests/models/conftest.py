"""Fixtures of the model tests: the R numbers of ``make_estimators.R`` and its data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

REFERENCE = Path(__file__).parent.parent / "reference"


@pytest.fixture(scope="session")
def estimators_reference() -> dict:
    """``expected_estimators.json``: robust Cox tests, metafor (normand1999, k = 1), survfit
    CI and summary(times =), flexmix BIC (see tests/reference/SOURCE.md)."""
    return json.loads((REFERENCE / "expected_estimators.json").read_text())


@pytest.fixture(scope="session")
def normand1999() -> pd.DataFrame:
    """metafor's dat.normand1999 with escalc(measure = "MD") yi, vi (17 digits)."""
    return pd.read_csv(REFERENCE / "normand1999.csv")
