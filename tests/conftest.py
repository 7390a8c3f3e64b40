"""Shared fixtures. Reference data and R results live in tests/reference/ (see SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

REFERENCE = Path(__file__).parent / "reference"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def survival_reference() -> dict:
    """R survival 3.5-3 / metafor 3.8-1 results on cohort_multicentre.csv and dat.bcg."""
    return json.loads((REFERENCE / "expected_survival_meta.json").read_text())


@pytest.fixture(scope="session")
def flexmix_reference() -> dict:
    """R flexmix 2.3-18 Poisson trajectory mixtures on serial_ctc.csv."""
    return json.loads((REFERENCE / "expected_trajectory_flexmix.json").read_text())


@pytest.fixture(scope="session")
def cohort() -> pd.DataFrame:
    """3,000 simulated patients in 8 centres (whole-month times, heavy ties)."""
    return pd.read_csv(REFERENCE / "cohort_multicentre.csv")


@pytest.fixture(scope="session")
def serial_ctc() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "serial_ctc.csv")


@pytest.fixture(scope="session")
def dat_bcg() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "dat_bcg.csv")
