"""``simulate_consortium``: a whole simulated consortium on disk, with its known truth.

Writes, under ``out_dir``:

* ``uploads/<centre>.<ext>``: one upload per centre in its own format (see
  :mod:`pooled.simulate.profiles`), with a few planted single-cell errors;
* ``mappings/<centre>.yaml``: the correct centre mapping, with a ``reported:`` block;
* ``truth.json``: the scenario, the true parameters and estimands, the centres and every planted
  error as ``{centre, file, sheet, row, column, kind}``;
* ``truth_patients.parquet`` (and ``truth_samples.parquet`` for ``trajectory``): the clean
  harmonised table the uploads were written from, before errors and formatting.

Centres are generated and written one after another in chunks of at most
:data:`CHUNK_ROWS` patients, so memory stays bounded for millions of patients (except the SPSS
centre, whose ``.sav`` is written at once). Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pooled.errors import ConfigError, OutputExistsError
from pooled.simulate.cohort import delivered_fields, simulate_patients
from pooled.simulate.profiles import Profile, get_profile, header
from pooled.simulate.scenarios import (
    CentreSpec,
    ScenarioName,
    ScenarioSpec,
    centre_sizes,
    get_scenario,
)
from pooled.simulate.trajectory import simulate_trajectory_consortium
from pooled.simulate.truth import generating_parameters, scenario_estimands
from pooled.simulate.uploads import (
    CATEGORY_CODES,
    MIN_ERRORS_PER_KIND,
    PlantedError,
    UploadWriter,
    dump_yaml,
    format_cells,
    mapping_document,
    plant_errors,
)
from pooled.simulate.writers import (
    ParquetWriter,
    Progress,
    SimulationResult,
    finish_simulation,
)

CHUNK_ROWS = 50_000
ERROR_RATE = 0.005


def refuse_existing_consortium(out: Path) -> None:
    """Raise :class:`OutputExistsError` when ``out`` already holds files a simulation writes."""
    taken = [
        p
        for p in (out / "uploads", out / "mappings", out / "truth.json", out / "truth_patients.parquet")
        if p.is_file() or (p.is_dir() and any(p.iterdir()))
    ]
    if taken:
        names = ", ".join(str(p) for p in taken)
        raise OutputExistsError(
            f"{out} already holds a consortium ({names}); nothing was written. Choose a new "
            "folder, or pass --overwrite to replace the files a simulation writes."
        )


def simulate_consortium(
    scenario: ScenarioName | str,
    *,
    seed: int,
    out_dir: str | Path,
    n_patients: int | None = None,
    n_centres: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> SimulationResult:
    """Simulate a consortium of centre uploads with known truth.

    Parameters
    ----------
    scenario : {"paddy", "epac", "early-ctc", "trajectory", "ctc-clearance"}
        The calibrated scenario (see ``docs/scenarios.md``).
    seed : int
        Seed; the same seed gives the same bytes.
    out_dir : str or Path
        Output folder (created). A folder that already holds uploads, mappings or a truth
        file is refused unless ``overwrite`` is true.
    n_patients : int, optional
        Patients in total (default: the published size); up to millions, in bounded memory.
    n_centres : int, optional
        Number of centres (default: the published number).
    progress : bool
        Show a rich progress bar.
    overwrite : bool, default False
        Replace the files a simulation writes (``uploads/``, ``mappings/``, ``truth.json``,
        ``truth_patients.parquet``) where the folder already has them.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ConfigError
        Unknown scenario, or fewer patients than centres.
    OutputExistsError
        ``out_dir`` already holds a consortium and ``overwrite`` is false.

    References
    ----------
    .. [1] Burke DL, Ensor J, Riley RD. Meta-analysis using individual participant data:
       one-stage and two-stage approaches, and why they may differ. Stat Med 2017;36:855-75.
    .. [2] Morris TP, White IR, Crowther MJ. Using simulation studies to evaluate statistical
       methods. Stat Med 2019;38:2074-102.

    Examples
    --------
    >>> res = simulate_consortium("paddy", seed=1, out_dir="demo", n_patients=2000)  # doctest: +SKIP
    >>> res.centres[["centre", "file", "n_patients"]].head(3)  # doctest: +SKIP
    """
    spec = get_scenario(str(scenario), n_centres=n_centres)
    n = int(n_patients) if n_patients is not None else spec.n_patients
    if n < spec.n_centres:
        raise ConfigError(
            f"n_patients must be at least the number of centres ({spec.n_centres}); got {n}."
        )
    out = Path(out_dir)
    if not overwrite:
        refuse_existing_consortium(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose a folder for the consortium.")
    (out / "uploads").mkdir(parents=True, exist_ok=True)
    (out / "mappings").mkdir(parents=True, exist_ok=True)
    if spec.name == "trajectory":
        return simulate_trajectory_consortium(spec, seed=seed, out=out, n=n, progress=progress)
    if spec.name == "ctc-clearance":
        from pooled.simulate.clearance import simulate_clearance_consortium

        return simulate_clearance_consortium(spec, seed=seed, out=out, n=n, progress=progress)
    sizes = centre_sizes([c.weight for c in spec.centres], n)
    bar = Progress(progress, n, f"simulating {spec.name}")
    truth_writer = ParquetWriter(out / "truth_patients.parquet")
    planted: list[PlantedError] = []
    summaries = []
    uploads: dict[str, Path] = {}
    mappings: dict[str, Path] = {}
    try:
        for index, (centre, size) in enumerate(zip(spec.centres, sizes, strict=True)):
            summary, errors = _write_centre(
                spec, centre, int(size), index, seed, out, truth_writer, bar
            )
            summaries.append(summary)
            planted.extend(errors)
            uploads[centre.name] = out / "uploads" / summary["file"]
            mappings[centre.name] = out / "mappings" / f"{centre.name}.yaml"
    finally:
        truth_writer.close()
        bar.close()
    estimands = scenario_estimands(spec)
    truth = {
        "scenario": spec.name,
        "seed": int(seed),
        "n_patients": n,
        "setting": spec.setting,
        "marker": spec.marker,
        "marker_threshold": spec.marker_threshold,
        "endpoints": list(spec.endpoints),
        "reference": spec.reference,
        "targets": dict(spec.targets),
        "parameters": generating_parameters(spec),
        "estimands": _estimands_doc(spec, estimands),
        "centres": summaries,
    }
    return finish_simulation(spec, seed, n, out, truth, planted, summaries, uploads, mappings, None)


def _estimands_doc(spec: ScenarioSpec, estimands: dict[str, Any]) -> dict[str, Any]:
    doc = dict(estimands)
    doc["description"] = (
        "Limits of stratified (by centre) Cox models of each endpoint on marker positivity "
        f"({spec.marker} >= {spec.marker_threshold:g}"
        + (" per 7.5 ml" if spec.marker == "ctc" else "")
        + "), from one large draw of the generating model (Breslow partial likelihood; "
        "se = Monte Carlo standard error of that draw). 'adjusted' is the model of "
        f"configs/analyses/{spec.name}.yaml without interaction ({', '.join(spec.adjust_for)}; "
        "grade and subtype categorical with references grade 1 and luminal A); 'unadjusted' "
        "has the marker only. Times from the schema's origin (diagnosis in early, sample in "
        "metastatic disease)."
    )
    return doc


def value_labels(profile: Profile, fields: tuple[str, ...]) -> dict[str, dict[float, str]]:
    """SPSS value labels of the coded variables of a ``.sav`` upload."""
    if profile.extension != "sav":
        return {}
    labels: dict[str, dict[float, str]] = {}
    for field in fields:
        name = header(profile, field)
        if field in ("er_status", "pr_status", "her2_status"):
            labels[name] = {1.0: "positiv", 0.0: "negativ"}
        elif field in ("chemotherapy", "endocrine_therapy", "anti_her2_therapy", "bisphosphonate"):
            labels[name] = {1.0: "ja", 0.0: "nein"}
        elif field in CATEGORY_CODES and CATEGORY_CODES[field]:
            labels[name] = {float(v): k for k, v in CATEGORY_CODES[field]["spss"].items()}
    return labels


def _write_centre(
    spec: ScenarioSpec,
    centre: CentreSpec,
    size: int,
    index: int,
    seed: int,
    out: Path,
    truth_writer: ParquetWriter,
    bar: Progress,
) -> tuple[dict[str, Any], list[PlantedError]]:
    profile = get_profile(centre.profile)
    fields = delivered_fields(spec, profile)
    file = f"{centre.name}.{profile.extension}"
    sheet = profile.sheet if profile.extension == "xlsx" else ""
    headers = [header(profile, f) for f in fields]
    writer = UploadWriter(out / "uploads" / file, profile)
    writer.start_table(profile.sheet, headers, profile.title)
    writer.set_value_labels(value_labels(profile, fields))
    data_rng = np.random.default_rng([seed, index, 0])
    error_rng = np.random.default_rng([seed, index, 1])
    first_row = (profile.header_row + 1) if profile.header_row > 0 else 1
    planted: list[PlantedError] = []
    stats: dict[str, float] = {"positive": 0}
    events = dict.fromkeys(spec.endpoints, 0)
    done = 0
    while done < size:
        m = min(CHUNK_ROWS, size - done)
        frame = simulate_patients(spec, centre, m, data_rng, first_number=done + 1)
        cells = format_cells(frame, fields, profile)
        planted += plant_errors(
            frame,
            cells,
            setting=spec.setting,
            profile=profile,
            rng=error_rng,
            centre=centre.name,
            file=file,
            sheet=sheet,
            first_row=first_row + done,
            rate=ERROR_RATE,
            minimum=_minimum(size) if done == 0 else 0,
        )
        writer.write(profile.sheet, cells, headers)
        frame.insert(1, "source_row", np.arange(first_row + done, first_row + done + m))
        frame.insert(1, "file", file)
        truth_writer.write(frame)
        stats["positive"] += int(frame["marker_positive"].sum())
        for endpoint in spec.endpoints:
            events[endpoint] += int(frame[f"{endpoint}_event"].sum())
        done += m
        bar.advance(m)
    writer.close()
    marker_key = f"{spec.marker}_positive"
    reported = {
        "patients": size,
        "events": dict(events),
        "positivity": {
            marker_key: {
                "share": round(stats["positive"] / size, 4),
                "threshold": spec.marker_threshold,
            }
        },
    }
    doc = mapping_document(
        centre=centre.name,
        description=f"Simulated centre '{centre.name}' of scenario {spec.name} ({profile.name})",
        profile=profile,
        setting=spec.setting,
        fields=fields,
        file=file,
        reported=reported,
    )
    dump_yaml(
        doc,
        out / "mappings" / f"{centre.name}.yaml",
        comment=(
            f"Mapping of the simulated upload {file} (scenario {spec.name}, seed {seed}).\n"
            f"reported.positivity: share with {spec.marker} >= {spec.marker_threshold:g}"
            + (" per 7.5 ml" if spec.marker == "ctc" else "")
        ),
    )
    summary = {
        "centre": centre.name,
        "file": file,
        "sheet": sheet,
        "profile": profile.name,
        "format": profile.extension,
        "header_row": profile.header_row,
        "n_patients": size,
        "n_planted": len(planted),
        "marker_positive": stats["positive"] / size,
        "events": events,
        "delivered_fields": list(fields),
    }
    return summary, planted


def _minimum(size: int) -> int:
    if size >= 200:
        return MIN_ERRORS_PER_KIND
    return 1 if size >= 8 else 0
