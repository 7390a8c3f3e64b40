"""Simulated consortia for the federated tests: each centre of a store becomes a vantage6
organisation of the in-process ``MockAlgorithmClient``; the pooled analyses of the same
patients are the reference."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("vantage6.algorithm.tools.mock_client")

from harmonization.mapping import CentreMapping  # noqa: E402
from harmonization.store import Store  # noqa: E402
from harmonization.upload import check_upload  # noqa: E402
from pooled.config import AnalysisConfig, load_analysis_config  # noqa: E402
from pooled.dataset import build_analysis_dataset  # noqa: E402
from pooled.federated.local import CentreData, centres_from_stores, run_local  # noqa: E402
from pooled.simulate import simulate_consortium  # noqa: E402
from pooled.steps.base import endpoint_frame  # noqa: E402
from pooled.steps.cohort import select_cohort  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Consortium:
    """A simulated consortium in a store, its centres as nodes, and its config."""

    store: Path
    consortium: Path
    config: AnalysisConfig
    centres: list[CentreData]
    cohort: pd.DataFrame  # the pooled cohort of `pooled run` (all endpoints)

    def endpoint_frame(self, endpoint: str) -> pd.DataFrame:
        return endpoint_frame(self.cohort, endpoint)


def _build(tmp: Path, scenario: str, seed: int, n: int | None) -> Consortium:
    sim = simulate_consortium(scenario, seed=seed, out_dir=tmp / "consortium", n_patients=n)
    with Store(tmp / "pooled.db") as store:
        for centre, mapping_path in sim.mappings.items():
            checked = check_upload(sim.uploads[centre], CentreMapping.from_yaml(mapping_path))
            store.ingest(
                list(checked.tables),
                checked.report,
                mapping_path=str(mapping_path),
                ingested_at=dt.datetime(2026, 1, 1),
            )
    cfg = load_analysis_config(ROOT / "configs" / "analyses" / f"{scenario}.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store(tmp / "pooled.db", read_only=True) as store:
            ds = build_analysis_dataset(store, origin=cfg.origin)
        cohort, _ = select_cohort(ds, cfg)
    centres = centres_from_stores([tmp / "pooled.db"], origin=cfg.origin)
    return Consortium(tmp / "pooled.db", tmp / "consortium", cfg, centres, cohort.patients)


@pytest.fixture(scope="session")
def paddy(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    """PADDY-like, 3,000 patients in 11 centres (early disease, DTC)."""
    return _build(tmp_path_factory.mktemp("fed-paddy"), "paddy", 11, 3000)


@pytest.fixture(scope="session")
def epac(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    """EPAC-like, 1,944 patients in 17 centres (metastatic, CTC >= 5)."""
    return _build(tmp_path_factory.mktemp("fed-epac"), "epac", 5, None)


def run(centres: list[CentreData], method: str, parameters: dict[str, Any], **kw: Any) -> dict:
    """A central function through vantage6's MockAlgorithmClient (its chatter silenced)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_local(centres, method, parameters, **kw)
