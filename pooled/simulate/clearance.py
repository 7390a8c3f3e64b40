"""The ``ctc-clearance`` scenario as consortium uploads: patients and serial-sample sheets.

The cohort comes from :func:`pooled.simulate.clearance_model.simulate_clearance_cohort` (a CTC
status that changes from sample to sample and drives the hazard of death); this module turns
its days into dates (baseline sample dates accrued over 36 months from March 2006, SWOG
S0500's accrual), draws the cause of each death (breast cancer with probability 0.85, so BCSS
has other deaths as a competing event), and writes one ``.xlsx`` per centre with a patients
sheet and a samples sheet, the mappings and ``truth.json`` (with the generating log hazard
ratio of the current status).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pooled.simulate.clearance_model import simulate_clearance_cohort
from pooled.simulate.cohort import NO_DAY, _add_endpoints, days_to_dates
from pooled.simulate.scenarios import ScenarioSpec
from pooled.simulate.trajectory import write_serial_uploads
from pooled.simulate.writers import SimulationResult, finish_simulation

STUDY_START = np.datetime64("2006-03-01", "D")
BREAST_CANCER_SHARE = 0.85


def harmonised_clearance(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    centre_names: list[str],
    seed: int,
    threshold: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model's cohort as harmonised patients and samples tables (with dates)."""
    rng = np.random.default_rng([seed, 500])
    n = len(patients)
    rename = {f"C{i + 1:02d}": name for i, name in enumerate(centre_names)}
    start = STUDY_START.astype(np.int64) + rng.integers(0, 36 * 30, n).astype(np.int64)
    end = start + patients["os_days"].to_numpy(dtype=np.int64)
    dead = patients["os_event"].to_numpy().astype(bool)
    death = np.where(dead, end, NO_DAY)
    cause = np.where(rng.random(n) < BREAST_CANCER_SHARE, "breast_cancer", "other").astype(object)
    baseline = samples[samples["timepoint"] == 0].set_index("patient_id")
    base = baseline.loc[patients["patient_id"]]
    no_day = np.full(n, NO_DAY)
    frame = pd.DataFrame(
        {
            "centre": patients["centre"].map(rename).to_numpy(),
            "patient_id": patients["patient_id"].to_numpy(),
            "setting": "metastatic",
            "age": patients["age"].to_numpy(dtype=float),
            "er_status": np.where(rng.random(n) < 0.7, "positive", "negative").astype(object),
            "treatment_arm": np.array([None] * n, dtype=object),
            "ctc_count": base["ctc_count"].to_numpy(dtype=float),
            "ctc_blood_volume_ml": base["ctc_blood_volume_ml"].to_numpy(dtype=float),
            "chemotherapy": np.ones(n, dtype=bool),
            "line_of_therapy": np.ones(n),
            "sample_date": days_to_dates(start),
            "last_contact_date": days_to_dates(end),
            "progression_date": days_to_dates(no_day),
            "treatment_failure_date": days_to_dates(no_day),
            "death_date": days_to_dates(death),
            "death_cause": np.where(dead, cause, np.array(None, dtype=object)),
        }
    )
    frame["ctc_per_7_5ml"] = frame["ctc_count"] * 7.5 / frame["ctc_blood_volume_ml"]
    frame["marker_positive"] = frame["ctc_per_7_5ml"] >= threshold
    frame["true_group"] = patients["ever_cleared"].to_numpy()
    _add_endpoints(
        frame, start, end, {"death_date": death}, cause, dead, ("os", "bcss"),
    )  # fmt: skip
    frame["os_event"] = frame["os_event"].astype(bool)
    start_of = pd.Series(start, index=patients["patient_id"].to_numpy())
    sample_start = start_of.loc[samples["patient_id"]].to_numpy()
    days = samples["days_from_baseline"].to_numpy(dtype=np.int64)
    sample_frame = pd.DataFrame(
        {
            "centre": samples["centre"].map(rename).to_numpy(),
            "patient_id": samples["patient_id"].to_numpy(),
            "timepoint": samples["timepoint"].to_numpy(dtype=float),
            "sample_date": days_to_dates(sample_start + days),
            "days_from_baseline": days.astype(float),
            "ctc_count": samples["ctc_count"].to_numpy(dtype=float),
            "ctc_blood_volume_ml": samples["ctc_blood_volume_ml"].to_numpy(dtype=float),
        }
    )
    return frame, sample_frame


def simulate_clearance_consortium(
    spec: ScenarioSpec, *, seed: int, out: Path, n: int, progress: bool = False
) -> SimulationResult:
    """Write the ctc-clearance consortium (called by :func:`simulate_consortium`)."""
    names = [c.name for c in spec.centres]
    patients, samples, model_truth = simulate_clearance_cohort(n, seed, n_centres=len(names))
    frame, sample_frame = harmonised_clearance(
        patients, samples, names, seed, spec.marker_threshold
    )
    planted, summaries, uploads, mappings = write_serial_uploads(
        spec, frame, sample_frame, seed=seed, out=out, n=n, progress=progress,
        threshold=spec.marker_threshold,
    )  # fmt: skip
    truth = {
        "scenario": spec.name,
        "seed": int(seed),
        "n_patients": n,
        "setting": "metastatic",
        "marker": "ctc",
        "marker_threshold": spec.marker_threshold,
        "endpoints": list(spec.endpoints),
        "reference": spec.reference,
        "targets": dict(spec.targets),
        "parameters": {
            **model_truth,
            "centre_names": dict(
                zip([f"C{i + 1:02d}" for i in range(len(names))], names, strict=True)
            ),  # fmt: skip
            "breast_cancer_death_share": BREAST_CANCER_SHARE,
        },
        "time_dependent_log_hazard_ratio": {"os": model_truth["log_hr_status"]},
        "time_dependent_hazard_ratio": {"os": math.exp(model_truth["log_hr_status"])},
        "centres": summaries,
    }
    return finish_simulation(spec, seed, n, out, truth, planted, summaries, uploads, mappings,
                             out / "truth_samples.parquet")  # fmt: skip
