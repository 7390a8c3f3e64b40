"""Serial CTC samples: trajectory groups, the serial exposures, clearance, the exposure comparison.

Exposures of kind ``change_category`` (bCTC -> b2CTC) and ``trajectory_group`` (tCTC) come
from each patient's serial samples: :func:`serial_exposures` fits the latent trajectory model
(number of groups by BIC, section ``models.trajectory``) and derives bCTC, b2CTC and tCTC per
patient. The cohort step (:mod:`pooled.steps.cohort`) calls it before the exposure is
derived, so its outputs (clearance, trajectory groups, serial exposures) are reported with the
cohort. The exposure comparison (bCTC vs b2CTC vs tCTC by AIC) is a step of its own, after the
per-endpoint models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.exposures import SERIAL_KINDS, ExposureSpec
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step

DAYS_PER_MONTH = 30.4375
TrajectoryFamily = Literal["poisson", "negbin", "zip"]

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.trajectory", "model switch",
        "Latent trajectory groups of the serial CTC counts (selected by BIC); needed by "
        "serial exposures and run for them anyway.",
        "models: {trajectory: {groups: [1, 2, 3, 4], starts: 10}}", default=False,
    ),
    ConfigKey(
        "models.trajectory.groups", "list of integers >= 1",
        "Numbers of groups compared by BIC.",
        "models: {trajectory: {groups: [1, 2, 3, 4, 5, 6]}}", default=(1, 2, 3, 4, 5, 6),
    ),
    ConfigKey(
        "models.trajectory.starts", "integer >= 1",
        "Random starts of the EM algorithm per number of groups.",
        "models: {trajectory: {starts: 20}}", default=20,
    ),
    ConfigKey(
        "models.trajectory.family", "choice", "Count distribution within a group.",
        "models: {trajectory: {family: negbin}}", default="poisson",
        allowed=("poisson", "negbin", "zip"),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrajectorySection(ModelSection):
    """``models.trajectory``: the latent trajectory model of the serial CTC counts."""

    groups: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    starts: int = 20
    family: TrajectoryFamily = "poisson"


def parse_trajectory(section: SectionReader) -> TrajectorySection:
    return TrajectorySection(
        enabled=section.enabled,
        groups=section.get("groups"),
        starts=section.get("starts"),
        family=section.get("family"),
    )


def needs_serial_exposures(exposure: ExposureSpec, trajectory: TrajectorySection) -> bool:
    """Whether the run derives the serial exposures (a serial exposure, or the model asked for)."""
    return exposure.kind in SERIAL_KINDS or bool(trajectory)


def samples_with_days(samples: pd.DataFrame) -> pd.DataFrame:
    """Serial samples with ``days_from_baseline`` (from sample dates where not delivered)."""
    out = samples.copy()
    if "days_from_baseline" not in out.columns:
        out["days_from_baseline"] = np.nan
    if "sample_date" in out.columns:
        dates = pd.to_datetime(out["sample_date"])
        keys = [out["centre"], out["patient_id"]]
        first = dates.groupby(keys).transform("min")
        from_dates = (dates - first).dt.days.astype(float)
        out["days_from_baseline"] = out["days_from_baseline"].astype(float).fillna(from_dates)
    out["months_from_baseline"] = out["days_from_baseline"] / DAYS_PER_MONTH
    return out


def observed_means(samples: pd.DataFrame, fit: Any) -> pd.DataFrame:
    """Observed mean CTC per 7.5 ml by assigned trajectory group and whole month (for the plot)."""
    key = fit.spec.patient
    assigned = fit.assignments[[key, "label"]].rename(columns={key: "patient_key"})
    merged = samples.merge(assigned, on="patient_key")
    merged = merged.assign(
        count=merged["ctc_count"] * 7.5 / merged["ctc_blood_volume_ml"].fillna(7.5),
        time=merged["months_from_baseline"].round(),
    )
    return merged.groupby(["label", "time"], as_index=False).agg(
        mean_count=("count", "mean"), n=("count", "size")
    )


def _arm_column(patients: pd.DataFrame) -> str | None:
    """``treatment_arm`` when the cohort has two or more arms, else no grouping."""
    arms = patients["treatment_arm"].dropna().nunique() if "treatment_arm" in patients else 0
    return "treatment_arm" if arms >= 2 else None


def _with_arm(serial_patients: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    if _arm_column(patients) is None:
        return serial_patients
    arms = patients[["patient_key", "treatment_arm"]]
    return serial_patients.merge(arms, on="patient_key", how="left")


def serial_exposures(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    exposure: ExposureSpec,
    trajectory: TrajectorySection,
    *,
    seed: int,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[ModelOutput]]:
    """bCTC, b2CTC and tCTC per patient from the serial samples (trajectory model by BIC).

    Returns the patients with the three columns (and the exposure's column for a serial
    exposure) and the outputs: CTC clearance, the trajectory groups, the serial exposures.
    """
    from pooled.models.serial import SerialSpec, ctc_clearance, derive_serial_exposures
    from pooled.models.trajectories import TrajectorySpec, select_trajectories

    if samples.empty:
        raise DataError(
            f"exposure {exposure.name!r} ({exposure.kind}) needs serial samples, but no "
            "centre in the store sent a samples table."
        )
    samples = samples_with_days(samples)
    samples = samples.loc[samples["days_from_baseline"].notna() & samples["ctc_count"].notna()]
    samples = samples.assign(
        patient_key=samples["centre"].astype(str) + "/" + samples["patient_id"].astype(str)
    )
    patients = patients.assign(
        patient_key=patients["centre"].astype(str) + "/" + patients["patient_id"].astype(str)
    )
    trajectory_spec = TrajectorySpec(
        patient="patient_key",
        time="months_from_baseline",
        volume="ctc_blood_volume_ml",
        family=trajectory.family,
        n_starts=trajectory.starts,
        seed=seed,
    )
    selection = select_trajectories(
        samples, trajectory_spec, k_range=trajectory.groups, progress=progress
    )
    serial = derive_serial_exposures(
        samples,
        SerialSpec(
            patient="patient_key",
            centre=None,
            threshold=exposure.threshold,
            followup_window=exposure.follow_up_window,
        ),
        trajectories=selection.best,
        patients=patients[["patient_key"]],
    )
    per_patient = serial.patients.set_index("patient_key")
    out = patients.copy()
    for column in ("bCTC", "b2CTC", "tCTC"):
        out[column] = per_patient[column].reindex(out["patient_key"]).astype(object).to_numpy()
    if exposure.kind == "trajectory_group":
        out[exposure.name] = out["tCTC"]
    elif exposure.kind == "change_category":
        out[exposure.name] = out["b2CTC"]
    outputs = [
        ModelOutput(
            "ctc_clearance",
            "clearance",
            "",
            ctc_clearance(_with_arm(serial.patients, patients), by=_arm_column(patients)),
            "CTC clearance among baseline-positive patients"
            + (" by treatment arm" if _arm_column(patients) else ""),
        ),
        ModelOutput(
            "trajectory_selection",
            "trajectory",
            "",
            selection,
            "CTC trajectory groups (BIC)",
            {"observed": observed_means(samples, selection.best)},
        ),
        ModelOutput(
            "serial_exposures", "trajectory", "", serial, "Exposures from serial CTC counts"
        ),
    ]
    return out.drop(columns="patient_key"), outputs


def run_comparison(
    cohort: AnalysisDataset, section: TrajectorySection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """bCTC vs b2CTC vs tCTC: the adjusted Cox model with each, by AIC, per endpoint."""
    from pooled.models.serial import compare_exposures

    covariates = tuple(
        c.name for c in ctx.covariates if c.name not in (ctx.exposure.name, "bCTC", "b2CTC", "tCTC")
    )
    endpoints = {e: (f"{e}_months", f"{e}_event") for e in ctx.endpoints}
    data = cohort.patients.copy()
    for endpoint in ctx.endpoints:
        data[f"{endpoint}_event"] = data[f"{endpoint}_event"].astype(float)
    comparison = compare_exposures(
        data,
        ("bCTC", "b2CTC", "tCTC"),
        endpoints=endpoints,
        covariates=covariates,
        categorical=tuple((c, r) for c, r in ctx.categorical if c in covariates),
        strata=ctx.strata,
        references={"bCTC": "CTC-", "b2CTC": "CTC-/CTC-", "tCTC": "undetectable"},
        ties=ctx.section("cox").primary_ties,
    )
    return [
        ModelOutput(
            "exposure_comparison",
            "comparison",
            ",".join(ctx.endpoints),
            comparison,
            "bCTC vs b2CTC vs tCTC by AIC",
        )
    ]


TRAJECTORY = Step(
    name="trajectory",
    label="trajectory groups",
    scope="run",
    section="models.trajectory",
    keys=KEYS,
    parse=parse_trajectory,
)
COMPARISON = Step(
    name="comparison",
    label="exposure comparison",
    scope="run",
    run=run_comparison,
    uses="trajectory",
    enabled=lambda section, ctx: needs_serial_exposures(ctx.exposure, section),
)
