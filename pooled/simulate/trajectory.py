"""The ``trajectory`` scenario as consortium uploads: patients and serial-sample sheets.

The cohort comes from :func:`pooled.simulate.trajectory_model.simulate_trajectory_cohort`
(CALGB 40502-like serial CTC counts with four latent trajectory groups); this module turns
its durations into dates (baseline sample dates accrued over 36 months from September 2008),
writes one ``.xlsx`` per centre with a patients sheet and a samples sheet (one centre style
with sample dates, the other with days from baseline), the mappings and ``truth.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pooled.simulate.cohort import DAYS_PER_MONTH, NO_DAY, _add_endpoints, days_to_dates
from pooled.simulate.profiles import Profile, get_profile, header
from pooled.simulate.scenarios import ScenarioSpec
from pooled.simulate.trajectory_model import SCHEDULE, simulate_trajectory_cohort
from pooled.simulate.uploads import (
    MIN_ERRORS_PER_KIND,
    PlantedError,
    UploadWriter,
    dump_yaml,
    format_cells,
    mapping_document,
    plant_errors,
)
from pooled.simulate.writers import ParquetWriter, Progress, SimulationResult, finish_simulation

STUDY_START = np.datetime64("2008-09-01", "D")
TIMEPOINTS = {label: i for i, (label, _, _) in enumerate(SCHEDULE)}


def patient_fields(profile: Profile) -> tuple[str, ...]:
    fields = (
        "patient_id", "age", "er_status", "treatment_arm", "ctc_count", "ctc_blood_volume_ml",
        "chemotherapy", "line_of_therapy", "sample_date", "last_contact_date",
        "progression_date", "treatment_failure_date", "death_date", "death_cause",
    )  # fmt: skip
    return fields + (("os_event",) if profile.os_flag_with_dates else ())


def sample_fields(profile: Profile) -> tuple[str, ...]:
    when = "days_from_baseline" if profile.samples_days else "sample_date"
    return ("patient_id", "timepoint", when, "ctc_count", "ctc_blood_volume_ml")


def harmonised_trajectory(
    patients: pd.DataFrame, samples: pd.DataFrame, centre_names: list[str], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model's cohort as harmonised patients and samples tables (with dates)."""
    rng = np.random.default_rng([seed, 40_502])
    n = len(patients)
    labels = sorted(patients["centre"].unique())
    rename = {label: centre_names[int(label[1:]) - 1] for label in labels}
    start = STUDY_START.astype(np.int64) + np.floor(rng.uniform(0, 36, n) * DAYS_PER_MONTH).astype(
        np.int64
    )

    def to_day(months: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(months, dtype=float) * DAYS_PER_MONTH).astype(np.int64)

    os_m = patients["os_months"].to_numpy()
    pfs_m = patients["pfs_months"].to_numpy()
    ttf_m = patients["ttf_months"].to_numpy()
    dead = patients["os_event"].to_numpy().astype(bool)
    progressed = patients["pfs_event"].to_numpy().astype(bool) & ~(dead & (pfs_m == os_m))
    failed = patients["ttf_event"].to_numpy().astype(bool) & (ttf_m < pfs_m)
    end = start + to_day(os_m)
    death = np.where(dead, end, NO_DAY)
    prog = np.where(progressed, start + to_day(pfs_m), NO_DAY)
    tf = np.where(failed, start + to_day(ttf_m), NO_DAY)
    cause = np.where(rng.random(n) < 0.92, "breast_cancer", "other").astype(object)
    baseline = samples[samples["timepoint"] == "baseline"].set_index("patient_id")
    base = baseline.loc[patients["patient_id"]]
    frame = pd.DataFrame(
        {
            "centre": patients["centre"].map(rename).to_numpy(),
            "patient_id": patients["patient_id"].to_numpy(),
            "setting": "metastatic",
            "age": patients["age"].to_numpy(dtype=float),
            "er_status": np.where(patients["er_positive"] == 1, "positive", "negative").astype(
                object
            ),
            "treatment_arm": patients["arm"].to_numpy().astype(object),
            "ctc_count": base["ctc_count"].to_numpy(dtype=float),
            "ctc_blood_volume_ml": base["ctc_blood_volume_ml"].to_numpy(dtype=float),
            "chemotherapy": np.ones(n, dtype=bool),
            "line_of_therapy": np.ones(n),
            "sample_date": days_to_dates(start),
            "last_contact_date": days_to_dates(end),
            "progression_date": days_to_dates(prog),
            "treatment_failure_date": days_to_dates(tf),
            "death_date": days_to_dates(death),
            "death_cause": np.where(dead, cause, np.array(None, dtype=object)),
        }
    )
    frame["ctc_per_7_5ml"] = frame["ctc_count"] * 7.5 / frame["ctc_blood_volume_ml"]
    frame["marker_positive"] = frame["ctc_per_7_5ml"] >= 1
    frame["true_group"] = patients["true_label"].to_numpy()
    _add_endpoints(
        frame, start, end,
        {"progression_date": prog, "treatment_failure_date": tf, "death_date": death},
        cause, dead, ("os", "pfs", "ttf"),
    )  # fmt: skip
    frame["os_event"] = frame["os_event"].astype(bool)
    start_of = pd.Series(start, index=patients["patient_id"].to_numpy())
    sample_start = start_of.loc[samples["patient_id"]].to_numpy()
    days = samples["days_from_baseline"].to_numpy(dtype=np.int64)
    sample_frame = pd.DataFrame(
        {
            "centre": samples["centre"].map(rename).to_numpy(),
            "patient_id": samples["patient_id"].to_numpy(),
            "timepoint": samples["timepoint"].map(TIMEPOINTS).to_numpy(dtype=float),
            "sample_date": days_to_dates(sample_start + days),
            "days_from_baseline": days.astype(float),
            "ctc_count": samples["ctc_count"].to_numpy(dtype=float),
            "ctc_blood_volume_ml": samples["ctc_blood_volume_ml"].to_numpy(dtype=float),
        }
    )
    return frame, sample_frame


def write_serial_uploads(
    spec: ScenarioSpec,
    frame: pd.DataFrame,
    sample_frame: pd.DataFrame,
    *,
    seed: int,
    out: Path,
    n: int,
    progress: bool,
    threshold: float,
) -> tuple[list[PlantedError], list[dict], dict[str, Path], dict[str, Path]]:
    """One ``.xlsx`` per centre (patients and samples sheets, planted errors), its mapping, and
    the truth parquet files, for a scenario with serial samples (``trajectory``,
    ``ctc-clearance``). ``frame`` and ``sample_frame`` are the harmonised tables (with
    ``marker_positive`` at ``threshold`` CTC per 7.5 ml at baseline)."""
    bar = Progress(progress, n, f"simulating {spec.name}")
    planted: list[PlantedError] = []
    summaries = []
    uploads: dict[str, Path] = {}
    mappings: dict[str, Path] = {}
    truth_p = ParquetWriter(out / "truth_patients.parquet")
    truth_s = ParquetWriter(out / "truth_samples.parquet")
    for index, centre in enumerate(spec.centres):
        profile = get_profile(centre.profile)
        part = frame[frame["centre"] == centre.name].reset_index(drop=True)
        spart = sample_frame[sample_frame["centre"] == centre.name].reset_index(drop=True)
        if part.empty:
            continue
        file = f"{centre.name}.xlsx"
        p_fields, s_fields = patient_fields(profile), sample_fields(profile)
        writer = UploadWriter(out / "uploads" / file, profile)
        p_headers = [header(profile, f) for f in p_fields]
        s_headers = [header(profile, f) for f in s_fields]
        rng = np.random.default_rng([seed, index, 1])
        cells = format_cells(part, p_fields, profile)
        minimum = MIN_ERRORS_PER_KIND if len(part) >= 60 else 1
        errs = plant_errors(
            part, cells, setting="metastatic", profile=profile, rng=rng, centre=centre.name,
            file=file, sheet=profile.sheet, first_row=profile.header_row + 1, rate=0.005,
            minimum=minimum, skip=("required_missing", "duplicate_id"),
        )  # fmt: skip
        s_cells = format_cells(spart, s_fields, profile)
        errs += plant_errors(
            spart, s_cells, setting="metastatic", profile=profile, rng=rng, centre=centre.name,
            file=file, sheet=profile.samples_sheet, first_row=2, rate=0.005, minimum=minimum,
            table="samples",
        )  # fmt: skip
        writer.start_table(profile.sheet, p_headers, profile.title)
        writer.write(profile.sheet, cells, p_headers)
        writer.start_table(profile.samples_sheet, s_headers, (), header_row=1)
        writer.write(profile.samples_sheet, s_cells, s_headers)
        writer.close()
        planted += errs
        out_p = part.copy()
        out_p.insert(1, "file", file)
        out_p.insert(2, "source_row", np.arange(len(part)) + profile.header_row + 1)
        truth_p.write(out_p)
        out_s = spart.copy()
        out_s.insert(1, "file", file)
        out_s.insert(2, "sheet", profile.samples_sheet)
        out_s.insert(3, "source_row", np.arange(len(spart)) + 2)
        truth_s.write(out_s)
        reported = {
            "patients": len(part),
            "events": {e: int(part[f"{e}_event"].sum()) for e in spec.endpoints},
            "positivity": {
                "ctc_positive": {
                    "share": round(float(part["marker_positive"].mean()), 4),
                    "threshold": threshold,
                }
            },
        }
        doc = mapping_document(
            centre=centre.name,
            description=f"Simulated centre '{centre.name}' of scenario {spec.name} ({profile.name})",
            profile=profile, setting="metastatic", fields=p_fields, file=file,
            reported=reported, sample_fields=s_fields,
        )  # fmt: skip
        dump_yaml(
            doc,
            out / "mappings" / f"{centre.name}.yaml",
            comment=f"Mapping of the simulated upload {file} (scenario {spec.name}, seed {seed}).\n"
            f"reported.positivity: share with >= {threshold:g} CTC per 7.5 ml at baseline",
        )
        uploads[centre.name] = out / "uploads" / file
        mappings[centre.name] = out / "mappings" / f"{centre.name}.yaml"
        summaries.append(
            {
                "centre": centre.name,
                "file": file,
                "sheet": profile.sheet,
                "samples_sheet": profile.samples_sheet,
                "profile": profile.name,
                "format": "xlsx",
                "header_row": profile.header_row,
                "n_patients": len(part),
                "n_samples": len(spart),
                "n_planted": len(errs),
                "marker_positive": float(part["marker_positive"].mean()),
                "events": reported["events"],
                "delivered_fields": list(p_fields),
                "delivered_sample_fields": list(s_fields),
            }
        )
        bar.advance(len(part))
    truth_p.close()
    truth_s.close()
    bar.close()
    return planted, summaries, uploads, mappings


def simulate_trajectory_consortium(
    spec: ScenarioSpec, *, seed: int, out: Path, n: int, progress: bool = False
) -> SimulationResult:
    """Write the trajectory consortium (called by :func:`simulate_consortium`)."""
    names = [c.name for c in spec.centres]
    patients, samples, model_truth = simulate_trajectory_cohort(n, seed, n_centres=len(names))
    frame, sample_frame = harmonised_trajectory(patients, samples, names, seed)
    planted, summaries, uploads, mappings = write_serial_uploads(
        spec, frame, sample_frame, seed=seed, out=out, n=n, progress=progress, threshold=1.0
    )
    hrs = model_truth["hazard_ratios"]
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
            **{k: v for k, v in model_truth.items() if k != "hazard_ratios"},
            "estimand": "hazard ratio of latent trajectory group vs undetectable in the "
            "generating Weibull PH model, conditional on age, ER and centre (what a Cox model "
            "with the true groups and these covariates converges to)",
        },
        "trajectory_hazard_ratios": {
            e: {g: float(v) for g, v in groups.items() if g != "undetectable"}
            for e, groups in hrs.items()
        },
        "trajectory_log_hazard_ratios": {
            e: {g: math.log(v) for g, v in groups.items() if g != "undetectable"}
            for e, groups in hrs.items()
        },
        "centres": summaries,
    }
    return finish_simulation(spec, seed, n, out, truth, planted, summaries, uploads, mappings,
                   out / "truth_samples.parquet")  # fmt: skip
