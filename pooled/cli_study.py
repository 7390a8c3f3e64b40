"""The ``pooled study`` command: a simulation study of the estimators on Dask.

Registered in :mod:`pooled.cli` as ``pooled study``; the conventions of every command hold
(exit code 0 when done, 2 with a one-line reason when the input or the output folder cannot
be used). The study's folder keeps every finished replicate in ``tasks/`` as it arrives, so
the same command run again after an interruption computes only the missing replicates (and
a larger ``--reps`` only the new ones).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pooled.cli_common import console, friendly, or_list
from pooled.errors import OutputExistsError
from pooled.simulate.scenarios import STUDY_SCENARIOS

__all__ = ["check_study_folder", "study_command"]

_OWN = {"performance.csv", "estimates.parquet", "study.xlsx", "study.json", "report.html",
        "figures", "tasks"}  # fmt: skip


def check_study_folder(folder: Path) -> None:
    """Refuse, before anything runs, an output that is a file or a folder of other files.

    A study writes into a new folder or into the folder of an earlier (possibly interrupted)
    study, whose ``tasks/manifest.json`` must then match (checked when the tasks are opened).
    """
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(
            f"--out {folder} is a file; give a folder for the study (nothing was run)."
        )
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in _OWN)
        if others:
            raise OutputExistsError(
                f"--out {folder} holds files a study does not write ({', '.join(others[:3])}); "
                "choose an empty or new folder, or the folder of an earlier study to resume it "
                "(nothing was run)."
            )


@friendly
def study_command(
    scenario: Annotated[str, typer.Option(help=or_list(STUDY_SCENARIOS) + ".")] = "paddy",
    reps: Annotated[int, typer.Option("--reps", help="Simulated consortia (replicates).")] = 500,
    seed: Annotated[int, typer.Option(help="Seed: replicate i draws from child i of it.")] = 2026,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of a local Dask cluster (default: the cores of this "
            "machine); 0 runs the replicates in this process."
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of an existing Dask scheduler, e.g. tcp://HOST:8786."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Study folder (default studies/<scenario>-seed<seed>)."),
    ] = None,
    patients: Annotated[
        int | None, typer.Option(help="Patients per consortium (default: the scenario's).")
    ] = None,
    centres: Annotated[int | None, typer.Option(help="Centres (default: the scenario's).")] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option("--endpoint", "-e", help="Endpoint to analyse (repeat; default: all)."),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="Estimator (repeat; default: cox_stratified, two_stage_reml, "
            "two_stage_reml_knha, mixed_cox).",
        ),
    ] = None,
    bayes: Annotated[
        bool, typer.Option("--bayes", help="Add the Bayesian one-stage model (slow).")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Simulation study of the estimators on consortia with known truth.

    Bias, empirical and model SE, relative error of the model SE, coverage and power (Morris,
    White and Crowther 2019), each with its Monte Carlo SE, against the estimands of
    truth.json; writes performance.csv, estimates.parquet, study.xlsx, study.json and
    report.html. Interrupted studies resume from the folder's tasks/.
    """
    from pooled.distributed.engine import ExecutionSpec
    from pooled.study.design import DEFAULT_METHODS, StudySpec
    from pooled.study.report import write_study
    from pooled.study.run import run_study

    if workers is not None and scheduler:
        raise typer.BadParameter("give --workers (a local cluster) or --scheduler, not both.")
    n_workers = 0 if scheduler else (os.cpu_count() or 1) if workers is None else workers
    execution = ExecutionSpec(
        workers=n_workers, scheduler=scheduler or "", progress=not no_progress
    )
    methods = tuple(method) if method else DEFAULT_METHODS
    if bayes and "bayes" not in methods:
        methods = (*methods, "bayes")
    spec = StudySpec(
        scenario=scenario,
        replicates=reps,
        seed=seed,
        n_patients=patients,
        n_centres=centres,
        endpoints=tuple(endpoint or ()),
        methods=methods,  # type: ignore[arg-type]
    )
    folder = out or Path("studies") / f"{scenario}-seed{seed}"
    check_study_folder(folder)
    console.print(f"{spec.describe()} on {execution.describe()} -> {folder}")
    result = run_study(
        spec, execution=execution, checkpoint=folder / "tasks", progress=not no_progress
    )
    files = write_study(result, folder)
    prov = result.provenance
    console.print(
        f"{prov['replicates_computed']} replicates computed, {prov['replicates_reused']} reused "
        f"from {folder / 'tasks'} in {prov['wall_seconds']:.1f} s"
    )
    _summary(result)
    console.print(f"Report: {files.html}")


def _summary(result: object) -> None:
    from rich.table import Table

    wide = result.wide()  # type: ignore[attr-defined]
    table = Table(title="Performance (Monte Carlo SE)", title_justify="left")
    for column in (
        "endpoint",
        "method",
        "target HR",
        "bias",
        "emp. SE",
        "model SE",
        "coverage",
        "power",
    ):
        table.add_column(column, justify="left" if column in ("endpoint", "method") else "right")
    for _, rec in wide.iterrows():
        table.add_row(
            str(rec["endpoint"]),
            str(rec["method"]),
            f"{rec['target_hr']:.3f}",
            f"{rec['bias']:+.4f} ({rec['bias_mcse']:.4f})",
            f"{rec['empirical_se']:.4f}",
            f"{rec['model_se']:.4f}",
            f"{rec['coverage']:.3f} ({rec['coverage_mcse']:.3f})",
            f"{rec['power']:.3f}",
        )
    console.print(table)
