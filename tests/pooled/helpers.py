"""Small hand-made analysis datasets and schemas for the config, runner and flow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harmonization.schema import DEFAULT_SCHEMA_PATH
from pooled.dataset import AnalysisDataset, ExclusionFlow

PGR_FIELD = (
    '      pgr_fmol: {type: number, unit: fmol/l, min: 0, description: "Progesterone receptor '
    '(ligand binding assay)"}\n'
)


def schema_with_pgr(folder: Path, name: str = "pgr_schema.yaml") -> Path:
    """``configs/schema.yaml`` with a numeric ``pgr_fmol`` field added to the patients table."""
    text = DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8")
    anchor = "      ki67_percent:"
    assert anchor in text
    path = folder / name
    path.write_text(text.replace(anchor, PGR_FIELD + anchor, 1), encoding="utf-8")
    return path


def small_cohort(n: int = 900, seed: int = 7) -> pd.DataFrame:
    """Patients of four centres with known effects; age often missing, DFS sometimes missing.

    Centre ``D`` is small and every patient there has ``pgr_fmol >= 10``, so the two-stage
    model cannot estimate the exposure there.
    """
    rng = np.random.default_rng(seed)
    centres = np.array(["A", "B", "C"])[rng.integers(0, 3, n)]
    centres[:24] = "D"
    pgr = rng.gamma(1.2, 20.0, n)
    pgr[centres == "D"] = 15.0 + rng.gamma(1.0, 10.0, int((centres == "D").sum()))
    pgr[rng.random(n) < 0.04] = np.nan
    nodes = rng.poisson(1.0, n).astype(float)
    nodes[rng.random(n) < 0.08] = np.nan
    grade = rng.integers(1, 4, n).astype(float)
    grade[rng.random(n) < 0.06] = np.nan
    age = rng.normal(58, 11, n).round()
    age[rng.random(n) < 0.3] = np.nan
    size = rng.gamma(2.0, 11.0, n).round(1)
    linear = (
        0.5 * (np.nan_to_num(pgr, nan=0.0) < 10)
        + 0.6 * (np.nan_to_num(nodes) > 0)
        + 0.4 * (grade == 3)
        + 0.01 * (np.nan_to_num(age, nan=58.0) - 58)
    )
    time = rng.exponential(80.0 / np.exp(linear))
    censor = rng.uniform(12, 120, n)
    os_months = np.minimum(time, censor).round(1)
    os_event = (time <= censor).astype(float)
    dfs_time = time * rng.uniform(0.4, 1.0, n)
    dfs_months = np.minimum(dfs_time, censor).round(1)
    dfs_event = (dfs_time <= censor).astype(float)
    no_dfs = rng.random(n) < 0.1
    dfs_months[no_dfs] = np.nan
    dfs_event[no_dfs] = np.nan
    setting = np.where(rng.random(n) < 0.9, "early", "metastatic")
    return pd.DataFrame(
        {
            "centre": centres,
            "patient_id": [f"p{i:04d}" for i in range(n)],
            "setting": setting,
            "age": age,
            "tumour_size_mm": size,
            "positive_nodes": nodes,
            "grade": grade,
            "subtype": np.array(["luminal_a", "luminal_b", "her2_positive", "triple_negative"])[
                rng.integers(0, 4, n)
            ],
            "er_status": np.where(rng.random(n) < 0.7, "positive", "negative"),
            "er_percent": rng.uniform(0, 100, n).round(),
            "pr_percent": rng.uniform(0, 100, n).round(),
            "pgr_fmol": pgr,
            "ctc_count": rng.poisson(1.5, n).astype(float),
            "ctc_blood_volume_ml": np.where(rng.random(n) < 0.5, 7.5, 10.0),
            "dtc_count": rng.poisson(0.6, n).astype(float),
            "line_of_therapy": rng.integers(1, 4, n).astype(float),
            "os_months": os_months,
            "os_event": os_event,
            "dfs_months": dfs_months,
            "dfs_event": dfs_event,
            "pfs_months": os_months,
            "pfs_event": os_event,
        }
    )


def dataset(patients: pd.DataFrame) -> AnalysisDataset:
    """An analysis dataset of ``patients`` as the store would give it (nobody excluded yet)."""
    return AnalysisDataset(
        patients=patients.reset_index(drop=True),
        samples=pd.DataFrame(),
        flow=ExclusionFlow.start(patients["centre"]),
        versions={},
        provenance={"store": "<test>"},
    )
