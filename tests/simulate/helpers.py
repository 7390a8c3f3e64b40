"""Shared helpers of the simulation tests: read a simulated consortium back and compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonization.mapping import CentreMapping, MappedTable, read_and_map

NUMBER_TOLERANCE = 1e-9


def load_truth(out: Path) -> dict[str, Any]:
    return json.loads((out / "truth.json").read_text(encoding="utf-8"))


def read_centre(out: Path, centre: str) -> tuple[CentreMapping, list[MappedTable]]:
    mapping = CentreMapping.from_yaml(out / "mappings" / f"{centre}.yaml")
    file = next((out / "uploads").glob(f"{centre}.*"))
    return mapping, read_and_map(file, mapping)


def planted_cells(
    truth: dict[str, Any], centre: str, sheet: str | None = None
) -> set[tuple[int, str]]:
    return {
        (e["row"], e["column"])
        for e in truth["planted_errors"]
        if e["centre"] == centre and (sheet is None or e["sheet"] == sheet)
    }


def _equal(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Cell-wise equality of a mapped column and the truth column (missing == missing)."""
    if pd.api.types.is_datetime64_any_dtype(a) or pd.api.types.is_datetime64_any_dtype(b):
        x, y = pd.to_datetime(a), pd.to_datetime(b)
        both = x.isna().to_numpy() & y.isna().to_numpy()
        return both | (x.to_numpy() == y.to_numpy())
    if pd.api.types.is_float_dtype(a) and not pd.api.types.is_bool_dtype(b):
        x = a.to_numpy(dtype=float)
        y = pd.to_numeric(b, errors="coerce").to_numpy(dtype=float)
        both = np.isnan(x) & np.isnan(y)
        with np.errstate(invalid="ignore"):
            return both | (np.abs(x - y) <= NUMBER_TOLERANCE * np.maximum(1.0, np.abs(y)))
    xa = a.astype(object).where(a.notna(), None).tolist()
    yb = b.astype(object).where(b.notna(), None).tolist()
    return np.array([(u is None and v is None) or (u is not None and v is not None and
                     (bool(u) == bool(v) if isinstance(v, bool | np.bool_) else str(u) == str(v)))
                     for u, v in zip(xa, yb, strict=True)])  # fmt: skip


def compare_with_truth(
    mapped: MappedTable, truth_rows: pd.DataFrame, planted: set[tuple[int, str]]
) -> list[str]:
    """Differences between mapped values and the truth, apart from planted cells."""
    problems = []
    rows = np.asarray(mapped.source_rows)
    if len(rows) != len(truth_rows):
        return [f"{mapped.file}: {len(rows)} rows read, {len(truth_rows)} in the truth"]
    if not np.array_equal(rows, truth_rows["source_row"].to_numpy()):
        return [f"{mapped.file}: source rows differ from the truth"]
    for field in mapped.values.columns:
        if field not in truth_rows:
            problems.append(f"{mapped.file}: field {field} not in the truth table")
            continue
        column = mapped.column_of[field]
        equal = _equal(
            mapped.values[field].reset_index(drop=True), truth_rows[field].reset_index(drop=True)
        )
        excused = np.array([(int(r), column) in planted for r in rows])
        bad = ~equal & ~excused
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(
                f"{mapped.file} {field} ({column}): {int(bad.sum())} cells differ, e.g. row "
                f"{rows[i]}: read {mapped.values[field].iloc[i]!r}, truth {truth_rows[field].iloc[i]!r}"
            )
        unchanged = excused & equal
        if unchanged.any():
            problems.append(
                f"{mapped.file} {field}: {int(unchanged.sum())} planted cells unchanged"
            )
    return problems
