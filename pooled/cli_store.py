"""The ``pooled store`` commands: list, show, compare, reject / accept, re-report and check the
versions in the store.

Registered in :mod:`pooled.cli` as ``pooled store``; the same conventions hold: exit code 0
when all is well, 1 when the cross-centre rules find something, 2 when the input cannot be
used (no such store, version or centre; a report folder that would be overwritten), always
with a one-line reason and never a traceback. These commands never create a store; only
``reject`` and ``accept`` open it for writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer

from pooled.cli_common import EXIT_FINDINGS, EXIT_OK, EXIT_UNUSABLE, console, err_console, friendly

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from harmonization.store import Store

store_app = typer.Typer(
    name="store",
    help="The versioned store: list, show, diff, reject / accept, report and check versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = Annotated[
    Path, typer.Option("--store", "-s", help="The store (DuckDB file); never created here.")
]
_STATUS_STYLE = {"accepted": "green", "rejected": "bold red"}
_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


_friendly = friendly


def _console() -> Console:
    return console


def _refuse(message: str) -> typer.Exit:
    """Print a one-line reason the way :func:`pooled.cli_common.friendly` does; exit code 2."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(EXIT_UNUSABLE)


def _open(path: Path, *, write: bool = False) -> Store:
    """Open an existing store (read-only unless ``write``); never create one."""
    from harmonization.errors import StoreError
    from harmonization.store import Store

    if not path.is_file():
        raise StoreError(
            f"{path}: no such store; ingest uploads first with "
            f"`pooled ingest --store {path} --mapping M FILE`, or pass --store."
        )
    return Store(path, read_only=not write)


def _print_table(table: Any) -> None:
    """Print a table whole: on a console narrower than the table, widen the output rather
    than truncate hashes, counts or names (rich would cut them to '…')."""
    console = _console()
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = natural
    try:
        console.print(table)
    finally:
        console.width = width


def _n(count: int, word: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _severities(counts: dict[str, int]) -> str:
    return (
        f"{_n(counts['error'], 'error')}, {_n(counts['warning'], 'warning')}, "
        f"{_n(counts['info'], 'note')}"
    )


def _short(sha: Any, n: int = 8) -> str:
    return str(sha)[:n] if isinstance(sha, str) and sha else "-"


def _when(value: Any, *, zone: str = "") -> str:
    """A stored time (UTC) to the minute; ``zone`` is appended (e.g. " UTC")."""
    if value is None or pd.isna(value):
        return "-"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M") + zone


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'default')}]{status}[/]"


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "(missing)"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else str(value)
    return str(value)


def _version_of(db: Store, centre: str, version: int | None) -> int:
    return db.latest_version(centre) if version is None else int(version)


@store_app.command("list")
@_friendly
def list_command(
    store: StoreOption = Path("pooled.db"),
    centre: Annotated[str | None, typer.Option(help="Only this centre's versions.")] = None,
) -> None:
    """Every version in the store: status, file, counts, mapping and schema hashes."""
    from rich.table import Table

    from harmonization.errors import StoreError

    with _open(store) as db:
        versions = db.versions(centre)
        default = db.latest_versions()
        centres = db.centres()
    if centre is not None and not len(versions):
        raise StoreError(
            f"centre '{centre}' has no versions in {store}; stored centres: "
            f"{', '.join(centres) or 'none'}."
        )
    console = _console()
    if not len(versions):
        console.print(f"{store} holds no versions yet.")
        return
    used = ", ".join(f"{c} v{v}" for c, v in default.items() if centre in (None, c)) or "none"
    table = Table(
        title=f"Versions in {store}",
        caption=f"Analysed by default (latest accepted): {used}",
    )
    for name in ("centre", "version", "status", "file", "ingested (UTC)", "patients", "samples",
                 "blocking", "errors", "warnings", "mapping", "schema"):  # fmt: skip
        numeric = name in ("version", "patients", "samples", "blocking", "errors", "warnings")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for row in versions.itertuples(index=False):
        table.add_row(
            str(row.centre), str(row.version), _status(str(row.status)), str(row.file),
            _when(row.ingested_at), str(row.n_patients), str(row.n_samples),
            str(row.n_blocking), str(row.n_errors), str(row.n_warnings),
            _short(row.mapping_sha256), _short(row.schema_sha256),
        )  # fmt: skip
    _print_table(table)


@store_app.command("show")
@_friendly
def show_command(
    centre: Annotated[str, typer.Argument(help="The centre.")],
    store: StoreOption = Path("pooled.db"),
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="The version (default the latest).")
    ] = None,
) -> None:
    """One version's provenance, status history and findings by rule and severity."""
    from rich.table import Table

    from harmonization.errors import SchemaError
    from harmonization.schema import load_schema_text

    with _open(store) as db:
        chosen = _version_of(db, centre, version)
        row = db.version_row(centre, chosen)
        history = db.status_history(centre, chosen)
        report = db.validation_report(centre, chosen)
        upload = db.upload_file(centre, chosen)
        analysed = db.latest_versions().get(centre)
        schema_text = db.schema_text(centre, chosen)
        has_mapping = db.mapping_text(centre, chosen) is not None
    console = _console()
    schema_name = ""
    if schema_text is not None:
        try:
            compiled = load_schema_text(schema_text)
            schema_name = f"{compiled.name or 'schema'} version {compiled.version}, "
        except SchemaError:
            schema_name = "(unreadable text), "
    reason = f" ({row['status_reason']})" if row["status_reason"] else ""
    console.print(f"[bold]{centre} version {chosen}[/]: {_status(str(row['status']))}{reason}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("file", f"{row['file']} (sha256 {row['upload_sha256']})")
    facts.add_row(
        "upload bytes",
        f"kept ({len(upload[1]):,} bytes)" if upload else "not kept (ingested without them)",
    )
    facts.add_row(
        "mapping",
        f"{row['mapping_path'] or '-'} "
        + (f"(sha256 {row['mapping_sha256']})" if has_mapping else "(text not recorded)"),
    )
    facts.add_row(
        "schema",
        f"{schema_name}sha256 {row['schema_sha256']}" if schema_text else "not recorded",
    )
    facts.add_row("ingested", _when(row["ingested_at"], zone=" UTC"))
    facts.add_row(
        "analysed",
        "yes (the latest accepted version)"
        if analysed == chosen
        else f"no (analyses use version {analysed} unless they pin {centre}={chosen})"
        if analysed is not None
        else f"no ({centre} has no accepted version)",
    )
    facts.add_row(
        "records",
        f"{row['n_patients']} patients, {row['n_samples']} samples; "
        f"{row['n_blocking']} rows with blocking errors (kept, left out of analyses)",
    )
    facts.add_row(
        "findings",
        _severities(
            {"error": row["n_errors"], "warning": row["n_warnings"], "info": row["n_info"]}
        ),
    )
    if row["note"]:
        facts.add_row("note", str(row["note"]))
    _print_table(facts)
    if len(history):
        changes = Table(title="Status history")
        for name in ("when (UTC)", "status", "reason"):
            changes.add_column(name)
        for item in history.itertuples(index=False):
            changes.add_row(_when(item.changed_at), _status(str(item.status)), str(item.reason))
        _print_table(changes)
    else:
        console.print("Status history: not recorded (version stored by an earlier release).")
    if report.n_findings:
        rules = Table(title="Findings by rule")
        for name, justify in (("severity", "left"), ("rule", "left"), ("n", "right")):
            rules.add_column(name, justify=justify)  # type: ignore[arg-type]
        for rule, severity, n in report.counts_by_rule.itertuples(index=False, name=None):
            rules.add_row(
                f"[{_SEVERITY_STYLE.get(severity, 'default')}]{severity}[/]", rule, str(n)
            )
        console.print(rules)
    else:
        console.print("No findings.")


@store_app.command("diff")
@_friendly
def diff_command(
    centre: Annotated[str, typer.Argument(help="The centre.")],
    version_a: Annotated[int, typer.Argument(metavar="V1", help="The older version.")],
    version_b: Annotated[int, typer.Argument(metavar="V2", help="The newer version.")],
    store: StoreOption = Path("pooled.db"),
    table: Annotated[str, typer.Option(help="patients or samples.")] = "patients",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write every difference to this csv.")
    ] = None,
    rows: Annotated[int, typer.Option(help="Changes to print (all go to --out).")] = 10,
) -> None:
    """Records added, removed and changed (by field) between two versions of a centre."""
    from rich.table import Table

    with _open(store) as db:
        diff = db.diff(centre, version_a, version_b, table=table)
    console = _console()
    key = list(diff.key)
    cells = len(diff.changed)
    console.print(
        f"[bold]{centre} {table}, version {version_a} -> {version_b}[/]: "
        f"{diff.n_added} added, {diff.n_removed} removed, {diff.n_changed} changed "
        f"({_n(cells, 'cell')} in {_n(diff.changed['field'].nunique(), 'field')})."
    )
    for label, frame in (("added", diff.added), ("removed", diff.removed)):
        if len(frame):
            ids = [" / ".join(_cell(v) for v in r) for r in frame[key].head(rows).values.tolist()]
            more = f" ... and {len(frame) - rows} more" if len(frame) > rows else ""
            console.print(f"{label}: {', '.join(ids)}{more}")
    if cells:
        by_field = Table(title="Changed fields")
        by_field.add_column("field")
        by_field.add_column(f"{table} changed", justify="right")
        for field, n in diff.counts_by_field().itertuples(index=False, name=None):
            by_field.add_row(str(field), str(n))
        _print_table(by_field)
        first = Table(title=f"First {min(rows, cells)} of {cells} changed cells")
        for name in (*key, "field", "old", "new"):
            first.add_column(name)
        for item in diff.changed.head(rows).itertuples(index=False, name=None):
            first.add_row(*(_cell(v) for v in item))
        _print_table(first)
    if diff.is_empty:
        console.print("The two versions hold the same records.")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        diff.to_frame().to_csv(out, index=False)
        console.print(f"Every difference: {out}")


def _set_status(store: Path, centre: str, version: int, status: str, reason: str) -> None:
    with _open(store, write=True) as db:
        was = db.version_row(centre, version)["status"]
        db.set_status(centre, version, status, reason)  # type: ignore[arg-type]
        latest = db.latest_versions().get(centre)
    again = f" (it was {was} already; the reason is recorded)" if was == status else ""
    console = _console()
    console.print(
        f"{centre} version {version}: {_status(status)}"
        + (f" ({reason})" if reason else "")
        + again
        + "."
    )
    if latest is None:
        console.print(f"{centre} has no accepted version now: its data are left out of analyses.")
    elif latest != version and status == "accepted":
        console.print(
            f"The latest accepted version of {centre} is {latest}: analyses use it unless "
            f"they pin {centre}={version}."
        )
    else:
        console.print(f"Analyses now use {centre} version {latest}.")


@store_app.command("reject")
@_friendly
def reject_command(
    centre: Annotated[str, typer.Argument(help="The centre.")],
    version: Annotated[int, typer.Argument(help="The version to reject.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with the time).")],
    store: StoreOption = Path("pooled.db"),
) -> None:
    """Reject a version: it stays in the store but analyses no longer read it."""
    if not reason.strip():
        raise _refuse("--reason must say why the version is rejected.")
    _set_status(store, centre, version, "rejected", reason.strip())


@store_app.command("accept")
@_friendly
def accept_command(
    centre: Annotated[str, typer.Argument(help="The centre.")],
    version: Annotated[int, typer.Argument(help="The version to accept.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with the time).")] = "",
    store: StoreOption = Path("pooled.db"),
) -> None:
    """Accept a version again (e.g. after the centre confirmed its data)."""
    _set_status(store, centre, version, "accepted", reason.strip())


def _raw_tables(db: Store, centre: str, version: int, folder: Path) -> tuple[list[Any], str]:
    """The version's upload re-read through its stored mapping, or ``([], why not)``."""
    from harmonization.errors import HarmonizationError
    from harmonization.mapping import CentreMapping, read_source
    from harmonization.schema import load_schema, load_schema_text

    upload = db.upload_file(centre, version)
    if upload is None:
        return [], "its upload file was not kept (ingested without it)"
    mapping_text = db.mapping_text(centre, version)
    if mapping_text is None:
        return [], "its mapping text was not recorded, so the upload cannot be re-read"
    schema_text = db.schema_text(centre, version)
    name, content = upload
    (folder / "upload").mkdir()
    path = folder / "upload" / name
    path.write_bytes(content)
    mapping_path = folder / "mapping.yaml"
    mapping_path.write_text(mapping_text, encoding="utf-8")
    try:
        schema = load_schema_text(schema_text) if schema_text is not None else load_schema()
        mapping = CentreMapping.from_yaml(mapping_path, schema=schema)
        sources = sorted(mapping.sources, key=lambda s: s.table != "patients")
        return [read_source(path, source) for source in sources], ""
    except HarmonizationError as exc:
        return [], f"the stored upload could not be re-read ({exc})"


@store_app.command("report")
@_friendly
def report_command(
    centre: Annotated[str, typer.Argument(help="The centre.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for validation.json/.xlsx.")],
    store: StoreOption = Path("pooled.db"),
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="The version (default the latest).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace validation.json/.xlsx already in --out.")
    ] = False,
) -> None:
    """Write a stored version's validation report again (validation.json and .xlsx)."""
    import tempfile

    from harmonization.report import write_validation_json, write_validation_xlsx

    targets = [out / "validation.json", out / "validation.xlsx"]
    present = [str(p) for p in targets if p.exists()]
    if present and not overwrite:
        raise _refuse(
            f"{' and '.join(present)} already exist; pass --overwrite to replace them or "
            "choose another --out."
        )
    with _open(store) as db, tempfile.TemporaryDirectory(prefix="pooled-report-") as tmp:
        chosen = _version_of(db, centre, version)
        report = db.validation_report(centre, chosen)
        raws, why_not = _raw_tables(db, centre, chosen, Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        write_validation_json(report, targets[0])
        write_validation_xlsx(report, raws, targets[1])
    console = _console()
    counts = report.counts_by_severity
    console.print(
        f"{centre} version {chosen}: {_n(report.n_findings, 'finding')} "
        f"({_severities(counts)}) -> {targets[0]} and {targets[1]}"
    )
    if why_not:
        console.print(
            f"[yellow]note:[/] {why_not}; validation.xlsx has the Summary and Findings sheets "
            "only, not the centre's own sheets."
        )


@store_app.command("check")
@_friendly
def check_command(
    store: StoreOption = Path("pooled.db"),
    centre: Annotated[
        list[str] | None, typer.Option(help="Centre to include (repeatable; default all).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the findings to this csv.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="Schema YAML (default: the one the versions were ingested with)."),
    ] = None,
) -> None:
    """Cross-centre rules over the latest accepted versions (exit code 1 on findings).

    The same patient sent by two centres, and event-rate and positivity outliers (funnel
    z-scores against the other centres).
    """
    from rich.table import Table

    from harmonization.errors import StoreError
    from harmonization.rules import FINDING_COLUMNS
    from harmonization.schema import load_schema
    from harmonization.validate import ValidationSpec

    compiled = load_schema(schema) if schema is not None else None
    with _open(store) as db:
        versions = db.resolve_versions(centre or None)
        if not versions:
            raise StoreError(f"{store} holds no accepted versions to check.")
        report = db.consortium_report(versions, schema=compiled)
    console = _console()
    findings = report.findings
    chosen = ", ".join(f"{c} v{v}" for c, v in versions.items())
    console.print(
        f"Cross-centre rules over {_n(len(versions), 'centre')} ({chosen}): "
        f"{_n(report.n_findings, 'finding')}."
    )
    spec = ValidationSpec()
    if len(versions) < spec.min_centres:
        console.print(
            f"[yellow]note:[/] the outlier rules need at least {spec.min_centres} centres with "
            f"{spec.min_patients} or more patients; only the duplicate-patient rule ran."
        )
    if report.n_findings:
        table = Table(title="Cross-centre findings")
        for name in ("centre", "severity", "rule", "message"):
            table.add_column(name, no_wrap=name != "message")
        for item in findings.itertuples(index=False):
            table.add_row(
                str(item.centre),
                f"[{_SEVERITY_STYLE.get(str(item.severity), 'default')}]{item.severity}[/]",
                str(item.rule),
                str(item.message),
            )
        console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        findings[list(FINDING_COLUMNS)].to_csv(out, index=False)
        console.print(f"Findings: {out}")
    raise typer.Exit(EXIT_FINDINGS if report.n_findings else EXIT_OK)
