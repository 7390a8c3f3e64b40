"""What a simulation writes and returns, shared by every scenario's writer.

:class:`ParquetWriter` appends the clean truth tables chunk by chunk, :class:`Progress` is the
optional progress bar, :func:`finish_simulation` writes ``truth.json`` and returns the
:class:`SimulationResult`. :mod:`pooled.simulate.consortium` (the cross-sectional scenarios)
and :mod:`pooled.simulate.trajectory` (serial samples) both import them from here, so neither
imports the other's private names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from pooled.results import tidy_frame
from pooled.simulate.scenarios import ScenarioSpec
from pooled.simulate.uploads import PlantedError


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What :func:`pooled.simulate.simulate_consortium` wrote, with the truth it knows.

    Attributes
    ----------
    scenario, seed, n_patients : what was simulated.
    out_dir : the output folder.
    centres : per-centre table (``centre, file, profile, n_patients, n_planted, marker_positive``,
        events per endpoint).
    uploads, mappings : centre -> path.
    truth_path, truth_patients_path, truth_samples_path : the truth files.
    planted : every planted error (``centre, file, sheet, row, column, kind, field, value``).
    truth : the content of ``truth.json`` without the planted errors.
    """

    scenario: str
    seed: int
    n_patients: int
    out_dir: Path
    centres: pd.DataFrame
    uploads: MappingProxyType[str, Path]
    mappings: MappingProxyType[str, Path]
    truth_path: Path
    truth_patients_path: Path
    truth_samples_path: Path | None
    planted: pd.DataFrame
    truth: MappingProxyType[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """The true values as a tidy table (one row per endpoint and estimand)."""
        rows = []
        for endpoint, values in self.truth.get("estimands", {}).get("endpoints", {}).items():
            for model in ("adjusted", "unadjusted"):
                if model not in values:
                    continue
                est = values[model]
                rows.append(
                    {
                        "analysis": self.scenario,
                        "endpoint": endpoint,
                        "model": f"stratified_cox_{model}_limit",
                        "term": "marker_positive",
                        "estimate": est["log_hr"],
                        "std_error": est["se"],
                        "hr": est["hr"],
                        "n": self.truth["estimands"]["n_draw"],
                        "events": values.get("events"),
                    }
                )
        for endpoint, groups in self.truth.get("trajectory_hazard_ratios", {}).items():
            for group, hr in groups.items():
                rows.append(
                    {
                        "analysis": self.scenario,
                        "endpoint": endpoint,
                        "model": "generating_weibull_ph",
                        "term": f"group[{group}]",
                        "estimate": math.log(hr),
                        "hr": hr,
                    }
                )
        return tidy_frame(rows)


def finish_simulation(
    spec: ScenarioSpec,
    seed: int,
    n: int,
    out: Path,
    truth: dict[str, Any],
    planted: list[PlantedError],
    summaries: list[dict[str, Any]],
    uploads: dict[str, Path],
    mappings: dict[str, Path],
    samples_path: Path | None,
) -> SimulationResult:
    """Write ``truth.json`` (the truth with every planted error) and return what was written."""
    doc = dict(truth)
    doc["planted_errors"] = [p.to_dict() for p in planted]
    (out / "truth.json").write_text(
        json.dumps(doc, indent=1, ensure_ascii=False, default=_json_default) + "\n",
        encoding="utf-8",
    )
    columns = ["centre", "file", "sheet", "row", "column", "kind", "field", "value"]
    planted_frame = pd.DataFrame([p.to_dict() for p in planted], columns=columns)
    return SimulationResult(
        scenario=spec.name,
        seed=int(seed),
        n_patients=n,
        out_dir=out,
        centres=pd.DataFrame(summaries),
        uploads=MappingProxyType(uploads),
        mappings=MappingProxyType(mappings),
        truth_path=out / "truth.json",
        truth_patients_path=out / "truth_patients.parquet",
        truth_samples_path=samples_path,
        planted=planted_frame,
        truth=MappingProxyType(truth),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, tuple | MappingProxyType):
        return list(value) if isinstance(value, tuple) else dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class ParquetWriter:
    """Appends DataFrame chunks to one parquet file with a stable schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Any = None
        self._schema: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            fields = [
                pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields).remove_metadata()
            self._writer = pq.ParquetWriter(self.path, self._schema)
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class Progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._progress: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total)

    def advance(self, k: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, k)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
