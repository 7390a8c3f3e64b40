"""Describing the cohort: patient characteristics and the median follow-up.

The characteristics tables (by exposure, by centre) are part of the run itself
(:attr:`pooled.run_output.RunOutput.characteristics`, assembled by the runner); the follow-up
is the first output of the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pooled.dataset import AnalysisDataset
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step, endpoint_frame


def _describe(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return "n/a"
    q1, med, q3 = np.percentile(numbers, [25, 50, 75])
    return f"{med:.1f} ({q1:.1f}-{q3:.1f})"


def _level_text(level: Any) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


def characteristics(patients: pd.DataFrame, by: str, endpoints: tuple[str, ...]) -> pd.DataFrame:
    """Patient characteristics by a grouping column: n, medians (IQR), category shares (%)."""
    groups = [("all", patients)] + [
        (f"{by} = {_level_text(level)}", g)
        for level, g in patients.groupby(by, sort=True, observed=True)
    ]
    rows: list[dict[str, Any]] = [
        {"characteristic": "patients, n", **{name: f"{len(g)}" for name, g in groups}}
    ]
    for column in ("age", "tumour_size_mm", "positive_nodes", "ki67_percent"):
        if column in patients.columns and patients[column].notna().any():
            rows.append(
                {
                    "characteristic": f"{column}, median (IQR)",
                    **{n: _describe(g[column]) for n, g in groups},
                }
            )
    for column in ("grade", "subtype", "er_status", "her2_status", "menopausal_status"):
        if column not in patients.columns or patients[column].notna().sum() == 0:
            continue
        for level in sorted(patients[column].dropna().unique(), key=str):
            label = f"{column} = {level:g}" if isinstance(level, float) else f"{column} = {level}"
            rows.append(
                {
                    "characteristic": f"{label}, n (%)",
                    **{
                        n: f"{int((g[column] == level).sum())} ({100 * (g[column] == level).mean():.1f})"
                        for n, g in groups
                    },
                }
            )
    for endpoint in endpoints:
        column = f"{endpoint}_event"
        if column in patients.columns:
            rows.append(
                {
                    "characteristic": f"{endpoint} events, n (%)",
                    **{n: _events_text(g[column]) for n, g in groups},
                }
            )
    return pd.DataFrame(rows)


def _events_text(flags: pd.Series) -> str:
    """Events n (%) of those with the endpoint known (an endpoint a centre did not collect
    is missing, not 'no event'); nullable booleans and 0/1 floats alike."""
    known = pd.to_numeric(flags.astype("Float64"), errors="coerce").dropna()
    if known.empty:
        return "not collected"
    return f"{int(known.sum())} ({100 * known.mean():.1f})"


def characteristics_tables(patients: pd.DataFrame, ctx: AnalysisContext) -> dict[str, pd.DataFrame]:
    """The run's characteristics tables: by exposure and by centre."""
    return {
        "by_exposure": characteristics(patients, ctx.exposure.name, ctx.endpoints),
        "by_centre": characteristics(patients, "centre", ctx.endpoints),
    }


def run_followup(cohort: AnalysisDataset, section: None, ctx: AnalysisContext) -> list[ModelOutput]:
    """Median follow-up of the primary endpoint (reverse Kaplan-Meier)."""
    from pooled.models.km import median_followup

    primary = ctx.primary_endpoint
    followup = median_followup(
        endpoint_frame(cohort.patients, primary),
        f"{primary}_months",
        f"{primary}_event",
        endpoint=primary,
    )
    return [
        ModelOutput(
            f"followup_{primary}",
            "followup",
            primary,
            followup,
            "Median follow-up (reverse Kaplan-Meier)",
        )
    ]


FOLLOWUP = Step(name="followup", label="follow-up", scope="run", run=run_followup)
