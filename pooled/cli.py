"""The ``pooled`` command. The only module that touches both packages and the file system.

Exit codes: 0 success (no errors found), 1 errors found in the data, 2 the input could not
be used at all (unreadable file, bad mapping or config, an output that would overwrite
something) -- always with a one-line reason, never a traceback; 3 an internal error (a bug in
pooled: one line, the traceback saved to a file to attach to the bug report).
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from harmonization.errors import HarmonizationError
from pooled.cli_common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_UNUSABLE,
    console,
    err_console,
    friendly,
    or_list,
)
from pooled.cli_federate import federate_app
from pooled.cli_store import store_app
from pooled.cli_study import study_command
from pooled.errors import OutputExistsError
from pooled.simulate.scenarios import SCENARIOS

app = typer.Typer(
    name="pooled",
    help="IPD pooled meta-analysis of CTC/DTC in breast cancer: validate, ingest, analyse, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(store_app, name="store")
app.add_typer(federate_app, name="federate")
app.command("study")(study_command)
_friendly = friendly  # the decorator every command wears (pooled.cli_common)


def _parse_day(value: str | None) -> _dt.date | None:
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date like 2026-11-22; got {value!r}.") from None


def _pinned(values: list[str] | None) -> dict[str, int] | None:
    if not values:
        return None
    out: dict[str, int] = {}
    for item in values:
        centre, sep, version = item.partition("=")
        if not sep or not version.isdigit():
            raise typer.BadParameter(f"expected CENTRE=VERSION (e.g. ulm=2); got {item!r}.")
        out[centre] = int(version)
    return out


@app.callback()
def main() -> None:
    """IPD pooled meta-analysis of CTC/DTC in breast cancer."""


def _write_validation(checked: Any, folder: Path) -> None:
    """A centre's validation report: validation.json and validation.xlsx in ``folder``."""
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"--out {folder} is a file; give a folder for the report.")
    _write_report(checked.report, checked.raw, folder)


@app.command("validate")
@_friendly
def validate_command(
    file: Annotated[Path, typer.Argument(help="The centre's upload (.xlsx, .csv, .sav, .dta).")],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="The centre's mapping YAML.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for validation.json/.xlsx.")],
    schema: Annotated[
        Path | None, typer.Option(help="Schema YAML (default configs/schema.yaml).")
    ] = None,
    today: Annotated[
        str | None, typer.Option(help="Validation day, YYYY-MM-DD (default today).")
    ] = None,
) -> None:
    """Validate one upload and write a report the centre can act on.

    Exit code 0 when no errors were found, 1 when errors were found, 2 when the file or the
    mapping cannot be used at all.
    """
    from harmonization.mapping import CentreMapping
    from harmonization.report import summary_table
    from harmonization.schema import load_schema
    from harmonization.upload import check_upload

    compiled = load_schema(schema)
    centre_mapping = CentreMapping.from_yaml(mapping, schema=compiled)
    checked = check_upload(file, centre_mapping, schema=compiled, today=_parse_day(today))
    _write_validation(checked, out)
    console.print(summary_table(checked.report))
    console.print(f"Report: {out / 'validation.xlsx'} and {out / 'validation.json'}")
    raise typer.Exit(EXIT_FINDINGS if checked.report.has_errors else EXIT_OK)


@app.command("ingest")
@_friendly
def ingest_command(
    file: Annotated[Path, typer.Argument(help="The centre's upload.")],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="The centre's mapping YAML.")],
    store: Annotated[Path, typer.Option("--store", "-s", help="The store (DuckDB file).")] = Path(
        "pooled.db"
    ),
    schema: Annotated[
        Path | None, typer.Option(help="Schema YAML (default configs/schema.yaml).")
    ] = None,
    today: Annotated[
        str | None, typer.Option(help="Validation day, YYYY-MM-DD (default today).")
    ] = None,
    reject: Annotated[bool, typer.Option(help="Store this version as rejected.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Store nothing when validation finds any error.")
    ] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Store an upload without data rows anyway.")
    ] = False,
    allow_centre_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-centre-mismatch",
            help="Store an upload that looks like another centre's file anyway.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Folder for validation.json/.xlsx (default <store folder>/validation/"
            "<centre>/v<version>).",
        ),
    ] = None,
) -> None:
    """Validate an upload and store it as the centre's next version (nothing is lost).

    Prints the errors and warnings, writes the centre's validation report, runs the
    cross-centre rules against what the store holds, and stores every row (rows with
    blocking errors flagged). Refuses (exit 2, nothing stored) an upload without data rows
    or one that looks like another centre's file, unless --allow-empty /
    --allow-centre-mismatch say it is intended; with --strict, any error stores nothing
    (exit 1). Exit 0 when stored without errors, 1 when stored with errors.
    """
    from harmonization.guards import ingest_concerns, summarise
    from harmonization.mapping import CentreMapping
    from harmonization.report import summary_table
    from harmonization.schema import load_schema
    from harmonization.store import Store
    from harmonization.upload import check_upload
    from harmonization.validate import validate_consortium

    compiled = load_schema(schema)
    centre_mapping = CentreMapping.from_yaml(mapping, schema=compiled)
    checked = check_upload(file, centre_mapping, schema=compiled, today=_parse_day(today))
    centre = checked.centre
    if report is not None and report.exists() and not report.is_dir():
        raise OutputExistsError(f"--report {report} is a file; give a folder.")
    with Store(store) as db:
        others = {c: v for c, v in db.latest_versions().items() if c != centre}
        stored = db.harmonised_tables(others) if others else []
        cross = validate_consortium(
            [*stored, *(t for t in checked.tables if t.table == "patients")], schema=compiled
        )
        full = (
            checked.report.merge(_with_file(cross, checked)) if cross.n_findings else checked.report
        )
        concerns = [
            c
            for c in ingest_concerns(checked, db)
            if not (c.kind == "empty" and allow_empty)
            and not (c.kind == "other_centre" and allow_centre_mismatch)
        ]
        console.print(summary_table(full))
        if concerns:
            folder = _report_folder(report, store, centre, "refused")
            _write_report(full, checked.raw, folder)
            err_console.print(
                f"[bold red]{centre}: not stored[/]; {file.name} does not look like an upload "
                f"to store as centre '{centre}':\n{summarise(concerns)}\nReport: {folder}",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_UNUSABLE)
        if strict and full.has_errors:
            folder = _report_folder(report, store, centre, "refused")
            _write_report(full, checked.raw, folder)
            err_console.print(
                f"[bold red]{centre}: not stored[/] (--strict): {full.n_errors} error(s). "
                f"Report: {folder}"
            )
            raise typer.Exit(EXIT_FINDINGS)
        result = db.ingest(
            list(checked.tables),
            full,
            mapping_path=str(mapping),
            mapping=centre_mapping,
            schema=compiled,
            upload_path=file,
            status="rejected" if reject else "accepted",
        )
    if result.duplicate_of is not None:
        console.print(
            f"{centre}: this file, read with this mapping and schema, is already stored as "
            f"version {result.duplicate_of}; nothing written (see `pooled store show {centre} "
            f"--version {result.duplicate_of}`)."
        )
        return
    folder = _report_folder(report, store, centre, f"v{result.version}")
    _write_report(full, checked.raw, folder)
    blocking = sum(result.blocking.values())
    console.print(
        f"{centre}: stored version {result.version} in {store} ({result.n_rows} rows; "
        f"{full.n_errors} errors, {full.n_warnings} warnings; {blocking} rows with blocking "
        f"errors kept and flagged{'; stored as rejected' if reject else ''}). Report: {folder}"
    )
    raise typer.Exit(EXIT_FINDINGS if full.has_errors else EXIT_OK)


def _with_file(cross: Any, checked: Any) -> Any:
    """Cross-centre findings about this upload's centre, in its report (others dropped)."""
    from harmonization.validate import ValidationReport

    f = cross.findings
    mine = f.loc[f["centre"].astype(str) == checked.centre].copy()
    return ValidationReport(mine.reset_index(drop=True))


def _report_folder(report: Path | None, store: Path, centre: str, name: str) -> Path:
    """Where an ingest writes the validation report: never over an existing report."""
    folder = report if report is not None else store.parent / "validation" / centre / name
    candidate, k = folder, 1
    while (candidate / "validation.json").exists() or (candidate / "validation.xlsx").exists():
        k += 1
        candidate = folder.with_name(f"{folder.name}-{k}")
    return candidate


def _write_report(report: Any, raw: Any, folder: Path) -> None:
    from harmonization.report import write_validation_json, write_validation_xlsx

    folder.mkdir(parents=True, exist_ok=True)
    write_validation_json(report, folder / "validation.json")
    write_validation_xlsx(report, raw, folder / "validation.xlsx")


@app.command("dataset")
@_friendly
def dataset_command(
    store: Annotated[Path, typer.Option("--store", "-s", help="The store (DuckDB file).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .csv, .parquet or .xlsx.")],
    centre: Annotated[
        list[str] | None, typer.Option(help="Centre to include (repeatable).")
    ] = None,
    version: Annotated[
        list[str] | None, typer.Option(help="Pin a version: CENTRE=VERSION (repeatable).")
    ] = None,
    origin: Annotated[
        str | None, typer.Option(help="Time origin: diagnosis, surgery or sample.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="Schema YAML (default: the one the data were ingested with)."),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Build the analysis dataset (one row per patient) and its exclusion flow.

    Writes OUT and OUT_flow.csv beside it; existing files are not replaced unless
    --overwrite is given.
    """
    from harmonization.report import write_frames_xlsx
    from harmonization.schema import load_schema
    from harmonization.store import Store
    from pooled.dataset import build_analysis_dataset

    flow_path = out.with_name(out.stem + "_flow.csv")
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet", ".xlsx"):
        raise typer.BadParameter(f"--out must end in .csv, .parquet or .xlsx; got {out.name!r}.")
    for path in (out, flow_path):
        if path.is_dir() or (path.exists() and not overwrite):
            raise OutputExistsError(
                f"{path} already exists; nothing was written. Choose another --out, or pass "
                "--overwrite to replace the dataset files."
            )
    with Store(store, read_only=True) as db:
        ds = build_analysis_dataset(
            db, centres=centre, versions=_pinned(version), origin=origin,
            schema=load_schema(schema) if schema else None,
        )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    flow = ds.flow.to_frame()
    if suffix == ".parquet":
        ds.patients.to_parquet(out, index=False)
    elif suffix == ".xlsx":
        write_frames_xlsx({"patients": ds.patients, "exclusion_flow": flow}, out)
    else:
        ds.patients.to_csv(out, index=False)
    flow.to_csv(flow_path, index=False)
    console.print(
        f"{len(ds.patients)} patients from {len(ds.versions)} centres -> {out}; "
        f"exclusion flow -> {flow_path}"
    )


def write_run(run_output: Any, out: Path) -> Path:
    """Write a run's files: results.csv, exclusion_flow.csv, model_flow.csv, run.json, run.pkl
    and the rendered report."""

    from pooled.report.render import render_report

    out.mkdir(parents=True, exist_ok=True)
    run_output.save(out)  # run.pkl and run.json (with run.pkl's checksum for `pooled report`)
    run_output.results().to_csv(out / "results.csv", index=False)
    run_output.flow.to_frame().to_csv(out / "exclusion_flow.csv", index=False)
    model_flow = getattr(run_output, "model_flow", None)
    if model_flow is not None:
        model_flow.to_frame().to_csv(out / "model_flow.csv", index=False)
    if run_output.sample_flow is not None:
        run_output.sample_flow.to_frame().to_csv(out / "sample_flow.csv", index=False)
    for output in run_output.of_kind("bayes") + run_output.of_kind("bayes_meta"):
        output.result.save_netcdf(out / f"{output.name}.nc")  # reopen with arviz.from_netcdf
    files = render_report(run_output, out)
    return Path(getattr(files, "html", out / "report.html"))


def run_config(
    config: Path,
    *,
    store: Path | None,
    out: Path | None,
    progress: bool = True,
    schema: Path | None = None,
) -> Path:
    """Load a config, build the dataset from the store, run the models, write the outputs.

    The schema is, in this order: ``schema`` (``--schema``), the config's ``schema:`` key,
    the schema the chosen store versions were ingested with, the default schema.
    """
    from harmonization.schema import load_schema
    from harmonization.store import Store
    from pooled.dataset import build_analysis_dataset
    from pooled.runner import run_analysis

    cfg = load_run_config(config, store=store, schema=load_schema(schema) if schema else None)
    target = out or (Path(cfg.output) if cfg.output else Path("reports") / cfg.name)
    check_run_folder(target)
    with Store(_store_path(config, store, cfg.data.store), read_only=True) as db:
        ds = build_analysis_dataset(
            db,
            centres=cfg.data.centres or None,
            versions=dict(cfg.data.versions) or None,
            origin=cfg.origin,
            schema=cfg.schema,
        )
    run_output = run_analysis(cfg, ds, progress=progress)
    return write_run(run_output, target)


def _store_path(config: Path, store: Path | None, declared: str) -> Path:
    """``--store``, else the config's ``data.store`` (relative to the working folder, then to
    the config's folder)."""
    if store is not None:
        return store
    path = Path(declared)
    if not path.is_absolute() and not path.exists():
        path = config.parent / path
    return path


def load_run_config(config: Path, *, store: Path | None, schema: Any = None) -> Any:
    """The config checked against the schema its run will use (see :func:`run_config`)."""
    from harmonization.errors import HarmonizationError
    from harmonization.store import Store
    from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text
    from pooled.config import load_analysis_config

    if schema is not None:
        return load_analysis_config(config, schema=schema)
    try:
        raw = load_yaml(read_yaml_text(config))
    except (OSError, YamlProblem):
        return load_analysis_config(config)  # raises the config's own one-line error
    if not isinstance(raw, dict) or raw.get("schema"):
        return load_analysis_config(config)
    data: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
    path = _store_path(config, store, str(data.get("store", "pooled.db")))
    if not path.is_file():
        return load_analysis_config(config)
    centres = data.get("centres")
    pinned = data.get("versions")
    try:
        with Store(path, read_only=True) as db:
            chosen = db.resolve_versions(
                None if centres in (None, "all") else [str(c) for c in centres],
                pinned if isinstance(pinned, dict) else None,
            )
            recorded = db.schema_for(chosen)
    except (HarmonizationError, TypeError, ValueError):
        return load_analysis_config(config)  # the run reports the store's problem itself
    return load_analysis_config(config, schema=recorded)


def check_run_folder(target: Path) -> None:
    """Refuse, before any fitting, an output that is a file or a folder of other files.

    A run writes into a new folder or over an earlier run (a folder with ``run.json``); it
    never writes into a folder that holds something else.
    """
    if target.exists() and not target.is_dir():
        raise OutputExistsError(
            f"--out {target} is a file; give a folder for the run's outputs (nothing was fitted)."
        )
    if target.is_dir() and any(target.iterdir()) and not (target / "run.json").is_file():
        raise OutputExistsError(
            f"--out {target} is a folder with other files and no earlier run (run.json); choose "
            "an empty or new folder (nothing was fitted)."
        )


@app.command("run")
@_friendly
def run_command(
    config: Annotated[
        Path, typer.Argument(help="Analysis config YAML (configs/analyses/<name>.yaml).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default reports/<name>/).")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", "-s", help="Override the config's store.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            help="Schema YAML (default: the config's schema:, else the one the data were "
            "ingested with, else configs/schema.yaml)."
        ),
    ] = None,
) -> None:
    """Run an analysis config: results.csv, tables.xlsx, figures/, report.html, run.json."""
    html = run_config(config, store=store, out=out, schema=schema)
    console.print(f"Report: {html}")


@app.command("report")
@_friendly
def report_command(
    folder: Annotated[Path, typer.Argument(help="A run folder written by `pooled run`.")],
) -> None:
    """Rebuild a run's report from its saved results, without refitting."""
    from pooled.report.render import render_report
    from pooled.run_output import load_run

    files = render_report(load_run(folder), folder)
    console.print(f"Report: {getattr(files, 'html', folder / 'report.html')}")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ScenarioOption = Annotated[str, typer.Option(help=or_list(SCENARIOS) + ".")]
PatientsOption = Annotated[
    int | None, typer.Option(help="Scale the scenario to this many patients.")
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the files this command writes where they already exist (never others).",
    ),
]


@app.command("simulate")
@_friendly
def simulate_command(
    scenario: ScenarioOption = "paddy",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 2026,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("consortium"),
    patients: PatientsOption = None,
    centres: Annotated[int | None, typer.Option(help="Number of centres.")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Simulate a consortium with known truth: uploads, their mappings and truth.json.

    A folder that already holds uploads, mappings or a truth file is refused (exit 2) unless
    --overwrite is given.
    """
    from pooled.simulate import simulate_consortium

    result = simulate_consortium(
        scenario, seed=seed, out_dir=out, n_patients=patients, n_centres=centres, progress=True,
        overwrite=overwrite,
    )  # fmt: skip
    console.print(
        f"{scenario}: {result.n_patients} patients in {len(result.centres)} centres -> {out} "
        f"(uploads/, mappings/, truth.json; {len(result.planted)} planted errors)"
    )


def _validate_consortium_uploads(consortium: Path, out: Path, today: _dt.date | None) -> list[Any]:
    """Validate every simulated upload with its mapping; write each centre's report."""
    from harmonization.mapping import CentreMapping
    from harmonization.schema import load_schema
    from harmonization.upload import check_upload

    schema = load_schema()
    checked = []
    for mapping_path in sorted((consortium / "mappings").glob("*.yaml")):
        mapping = CentreMapping.from_yaml(mapping_path, schema=schema)
        uploads = sorted((consortium / "uploads").glob(f"{mapping_path.stem}.*"))
        if not uploads:
            err_console.print(f"[yellow]warning:[/] no upload for mapping {mapping_path.name}")
            continue
        try:
            item = check_upload(uploads[0], mapping, schema=schema, today=today)
        except HarmonizationError as exc:  # one unusable upload does not stop the demo
            err_console.print(f"[red]{uploads[0].name}: cannot be used:[/] {exc}")
            continue
        _write_validation(item, out / mapping.centre)
        checked.append((mapping_path, item))
    return checked


@app.command("demo")
@_friendly
def demo_command(
    scenario: ScenarioOption = "paddy",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2026,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo"),
    patients: PatientsOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """The whole pipeline on a simulated consortium: simulate -> validate -> ingest -> run.

    A folder that already holds a demo (a store, a consortium, a run) is refused (exit 2)
    unless --overwrite is given; then only the files the demo writes are replaced.
    """
    import json

    from rich.table import Table

    from harmonization.store import Store
    from pooled.simulate import simulate_consortium
    from pooled.simulate.consortium import refuse_existing_consortium

    consortium = out / "consortium"
    store_path = out / "pooled.db"
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose a folder for the demo.")
    if not overwrite:
        refuse_existing_consortium(consortium)
        for taken in (store_path, out / "run" / "run.json"):
            if taken.exists():
                raise OutputExistsError(
                    f"{taken} already exists; nothing was written. Choose a new folder, or pass "
                    "--overwrite to replace the demo's own files."
                )
    console.rule(f"[bold]pooled demo: {scenario}")
    sim = simulate_consortium(
        scenario, seed=seed, out_dir=consortium, n_patients=patients, progress=True,
        overwrite=overwrite,
    )  # fmt: skip
    console.print(
        f"1. simulated {sim.n_patients} patients in {len(sim.centres)} centres -> {consortium}"
    )
    truth = json.loads((consortium / "truth.json").read_text(encoding="utf-8"))
    today = _parse_day(truth.get("validation_day")) if truth.get("validation_day") else None
    checked = _validate_consortium_uploads(consortium, out / "validation", today)
    planted = pd.DataFrame(truth.get("planted_errors", []))
    table = Table(
        title="2. validation of each upload (planted errors found at their row and column)"
    )
    for column in ("centre", "file", "rows", "errors", "warnings", "planted", "planted found"):
        table.add_column(column, justify="right" if column not in ("centre", "file") else "left")
    for _, item in checked:
        findings = item.report.findings
        mine = planted.loc[planted["centre"] == item.centre] if len(planted) else planted
        found = 0
        if len(mine):
            keys = set(
                zip(
                    findings["row"].astype("Int64").astype(str),
                    findings["column"].astype(str),
                    strict=True,
                )
            )
            found = sum(
                (str(r), str(c)) in keys for r, c in zip(mine["row"], mine["column"], strict=True)
            )
        table.add_row(
            item.centre, Path(item.path).name, str(sum(len(t.data) for t in item.tables)),
            str(int((findings["severity"] == "error").sum())), str(int((findings["severity"] == "warning").sum())),
            str(len(mine)), str(found),
        )  # fmt: skip
    console.print(table)
    if store_path.exists():  # only with --overwrite (checked above): the demo's own store
        store_path.unlink()
        Path(f"{store_path}.wal").unlink(missing_ok=True)
    with Store(store_path) as db:
        for mapping_path, item in checked:
            db.ingest(list(item.tables), item.report, mapping_path=str(mapping_path))
    console.print(
        f"3. ingested {len(checked)} uploads into {store_path} (rows with blocking errors kept, flagged)"
    )
    config = CONFIGS / "analyses" / f"{scenario}.yaml"
    html = run_config(config, store=store_path, out=out / "run")
    console.print(f"4. ran {config.name}: results in {out / 'run'}")
    console.print(f"[bold green]Report:[/] {html}")


def run() -> None:  # pragma: no cover - console entry for `python -m pooled.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    run()
