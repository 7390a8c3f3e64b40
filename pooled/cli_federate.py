"""``pooled federate``: the analyses of a config without patient rows leaving the centres.

``pooled federate run``     several stores or upload folders as the centres of vantage6's
                            in-process MockAlgorithmClient (the same algorithm as on a node)
``pooled federate export``  at a centre: the node's data (patients.parquet, findings.parquet)
``pooled federate server``  the same analyses on a real vantage6 network
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from pooled.cli_common import EXIT_OK, EXIT_UNUSABLE, console, err_console, friendly
from pooled.errors import ConfigError, OutputExistsError

federate_app = typer.Typer(
    help="Federated analysis on vantage6: aggregates leave the centres, patient rows never.",
    no_args_is_help=True,
)

ANALYSES = ("cox", "logrank", "two-stage", "km", "describe", "validation")
AnalysisOption = Annotated[
    list[str] | None,
    typer.Option(
        "--analysis",
        "-a",
        help=f"Analyses to run (repeatable): {', '.join(ANALYSES)}. Default all.",
    ),
]
EndpointOption = Annotated[str | None, typer.Option(help="Endpoint (default the config's first).")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")]


def _parameters(
    analysis: str, request: dict[str, Any], cfg: Any, km_width: float, km_max_time: float,
    exclude_refusing: bool,
) -> tuple[str, dict[str, Any], str]:  # fmt: skip
    """Central function, its parameters and the node database of one analysis."""
    if analysis == "cox":  # robust SEs clustered by centre: free in a federated fit
        return "central_cox", {"request": request, "robust": True}, "patients"
    if analysis == "logrank":
        return "central_logrank", {"request": request}, "patients"
    if analysis == "two-stage":
        method, knha, ties = "REML", False, request["ties"]
        with contextlib.suppress(KeyError):
            section = cfg.section("two_stage")
            method, knha, ties = section.meta_method, section.knha, section.ties
        return (
            "central_two_stage",
            {"request": {**request, "ties": ties}, "method": method, "knha": knha},
            "patients",
        )
    if analysis == "km":
        return "central_km", {"request": request, "width": km_width, "max_time": km_max_time,
                              "exclude_refusing": exclude_refusing}, "patients"  # fmt: skip
    if analysis == "describe":
        return "central_describe", {"request": request}, "patients"
    if analysis == "validation":
        return "central_validation", {"request_id": request["request_id"]}, "findings"
    raise typer.BadParameter(f"--analysis must be one of {', '.join(ANALYSES)}; got {analysis!r}.")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder.")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not (out / "exchange.csv").is_file()
        and not overwrite
    ):
        raise OutputExistsError(
            f"--out {out} holds other files and no earlier federated run; choose a new folder."
        )
    if (out / "exchange.csv").is_file() and not overwrite:
        raise OutputExistsError(
            f"{out} holds an earlier federated run; pass --overwrite to replace it."
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "releases.jsonl").unlink(missing_ok=True)


def _run_all(
    analyses: list[str], execute: Callable[[str, dict[str, Any], str], dict[str, Any]],
    cfg: Any, endpoint: str | None, out: Path, km_width: float, km_max_time: float,
    exclude_refusing: bool,
) -> int:  # fmt: skip
    from pooled.federated.request import request_from_config

    request = request_from_config(cfg, endpoint).to_dict()
    rows, exchanges, failed = [], [], 0
    for analysis in analyses:
        method, parameters, database = _parameters(
            analysis, request, cfg, km_width, km_max_time, exclude_refusing
        )
        result = execute(method, parameters, database)
        exchange = result.get("exchange", {})
        exchanges.append({"analysis": analysis, "endpoint": request["endpoint"],
                          "rounds": exchange.get("rounds"), "bytes_sent": exchange.get("bytes_sent"),
                          "bytes_received": exchange.get("bytes_received")})  # fmt: skip
        if result.get("error"):
            failed += 1
            err_console.print(
                f"[bold red]{analysis}:[/] {result['error']['message']}", soft_wrap=True
            )
            continue
        if "rows" in result:
            rows.append(pd.DataFrame(result["rows"]).assign(analysis_kind=analysis))
        for key in ("table", "centres"):
            if key in result and result[key]:
                pd.DataFrame(result[key]).to_csv(out / f"{analysis}_{key}.csv", index=False)
        if result.get("excluded"):
            err_console.print(f"[yellow]{analysis}:[/] centres left out: {result['excluded']}")
        console.print(f"{analysis}: done in {exchange.get('rounds')} round(s), "
                      f"{exchange.get('bytes_sent', 0) + exchange.get('bytes_received', 0):,} bytes")  # fmt: skip
    if rows:
        pd.concat(rows, ignore_index=True).to_csv(out / "results.csv", index=False)
    pd.DataFrame(exchanges).to_csv(out / "exchange.csv", index=False)
    (out / "request.json").write_text(json.dumps(request, indent=2), encoding="utf-8")
    console.print(
        f"Results: {out} (results.csv, <analysis>_table.csv, exchange.csv, releases.jsonl)"
    )
    return EXIT_UNUSABLE if failed else EXIT_OK


def _load_config(config: Path) -> Any:
    from pooled.config import load_analysis_config

    return load_analysis_config(config)


def _policy_environment(
    min_patients: int | None, min_events: int | None, min_cell: int | None
) -> None:
    for name, value in (("POOLED_MIN_PATIENTS", min_patients), ("POOLED_MIN_EVENTS", min_events),
                        ("POOLED_MIN_CELL", min_cell)):  # fmt: skip
        if value is not None:
            os.environ[name] = str(value)


KmWidth = Annotated[float, typer.Option(help="Kaplan-Meier bin width (months).")]
KmMax = Annotated[float, typer.Option(help="Kaplan-Meier horizon (months).")]
ExcludeRefusing = Annotated[
    bool, typer.Option("--exclude-refusing", help="Leave out a centre that refuses its KM counts.")
]


@federate_app.command("run")
@friendly
def run_command(
    config: Annotated[Path, typer.Argument(help="Analysis config YAML.")],
    store: Annotated[
        list[Path] | None,
        typer.Option("--store", "-s", help="A store; each of its centres is a node (repeatable)."),
    ] = None,
    uploads: Annotated[
        list[Path] | None,
        typer.Option(
            help="An upload folder (uploads/ + mappings/, or one centre's upload and mapping) (repeatable)."
        ),
    ] = None,
    centre: Annotated[
        list[str] | None, typer.Option(help="Only these centres (repeatable).")
    ] = None,
    endpoint: EndpointOption = None,
    analysis: AnalysisOption = None,
    out: OutOption = Path("federated"),
    km_width: KmWidth = 12.0,
    km_max_time: KmMax = 120.0,
    exclude_refusing: ExcludeRefusing = False,
    min_patients: Annotated[
        int | None, typer.Option(help="Centres' minimum patients (default 10).")
    ] = None,
    min_events: Annotated[
        int | None, typer.Option(help="Centres' minimum events (default 10).")
    ] = None,
    min_cell: Annotated[
        int | None, typer.Option(help="Centres' minimum table cell (default 5).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier federated run in --out.")
    ] = False,
) -> None:
    """Run a config's analyses federated, in process: every centre a vantage6 organisation of
    the MockAlgorithmClient, every answer disclosure-checked and logged (releases.jsonl)."""
    from pooled.federated.disclosure import RELEASE_LOG
    from pooled.federated.local import centres_from_stores, centres_from_uploads, run_local

    if not store and not uploads:
        raise typer.BadParameter("give at least one --store or --uploads folder.")
    cfg = _load_config(config)
    _prepare_out(out, overwrite)
    _policy_environment(min_patients, min_events, min_cell)
    centres = []
    if store:
        centres += centres_from_stores(store, centres=centre, origin=cfg.origin)
    if uploads:
        centres += centres_from_uploads(uploads, origin=cfg.origin)
        if centre:
            centres = [c for c in centres if c.name in centre]
    console.print(f"{len(centres)} centres: {', '.join(c.name for c in centres)}")
    log = out / "releases.jsonl"

    def write(entry: dict[str, Any]) -> None:
        with log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def execute(method: str, parameters: dict[str, Any], database: str) -> dict[str, Any]:
        with contextlib.redirect_stdout(io.StringIO()):
            return run_local(centres, method, parameters, database=database)

    remove = RELEASE_LOG.listen(write)
    try:
        code = _run_all(list(analysis or ANALYSES), execute, cfg, endpoint, out, km_width,
                        km_max_time, exclude_refusing)  # fmt: skip
    finally:
        remove()
    raise typer.Exit(code)


@federate_app.command("export")
@friendly
def export_command(
    store: Annotated[Path, typer.Option("--store", "-s", help="The centre's store.")],
    centre: Annotated[str, typer.Option(help="The centre.")],
    out: OutOption = Path("node-data"),
    origin: Annotated[
        str | None, typer.Option(help="Time origin: diagnosis, surgery or sample.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace earlier exports.")
    ] = False,
) -> None:
    """At a centre: write the node's databases, patients.parquet (the analysis dataset of the
    latest accepted version) and findings.parquet (rule and severity of each finding)."""
    from harmonization.store import Store
    from pooled.federated.local import centre_export

    targets = [out / "patients.parquet", out / "findings.parquet"]
    for path in targets:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it.")
    if not store.is_file():
        raise ConfigError(f"store {store} does not exist.")
    with Store(store, read_only=True) as db:
        data = centre_export(db, centre, origin=origin)
    out.mkdir(parents=True, exist_ok=True)
    data.patients.to_parquet(targets[0], index=False)
    data.findings.to_parquet(targets[1], index=False)
    console.print(
        f"{centre}: {len(data.patients)} patients -> {targets[0]}; {len(data.findings)} findings "
        f"-> {targets[1]}. Name them as the node's databases 'patients' and 'findings' (type parquet)."
    )


@federate_app.command("server")
@friendly
def server_command(
    config: Annotated[Path, typer.Argument(help="Analysis config YAML.")],
    host: Annotated[str, typer.Option(help="vantage6 server, e.g. https://v6.example.org")],
    collaboration: Annotated[int, typer.Option(help="Collaboration id.")],
    central_organization: Annotated[
        int, typer.Option(help="Organisation whose node runs the central function.")
    ],
    image: Annotated[
        str, typer.Option(help="The algorithm image (as built from pooled/federated/Dockerfile).")
    ],
    username: Annotated[str, typer.Option(help="vantage6 user.")],
    organization: Annotated[
        list[int] | None, typer.Option(help="Centres' organisation ids (repeatable; default all).")
    ] = None,
    port: Annotated[int, typer.Option(help="Server port.")] = 443,
    api_path: Annotated[str, typer.Option(help="API path.")] = "/api",
    private_key: Annotated[
        Path | None, typer.Option(help="Organisation private key (encrypted collaborations).")
    ] = None,
    endpoint: EndpointOption = None,
    analysis: AnalysisOption = None,
    out: OutOption = Path("federated"),
    km_width: KmWidth = 12.0,
    km_max_time: KmMax = 120.0,
    exclude_refusing: ExcludeRefusing = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier federated run in --out.")
    ] = False,
) -> None:
    """Run a config's analyses on a vantage6 network. The password is read from the
    environment variable POOLED_V6_PASSWORD (never from the command line)."""
    from pooled.federated.server import connect, run_on_server

    password = os.environ.get("POOLED_V6_PASSWORD")
    if not password:
        raise ConfigError(
            "set the environment variable POOLED_V6_PASSWORD to the vantage6 user's password."
        )
    cfg = _load_config(config)
    _prepare_out(out, overwrite)
    client = connect(
        host, port, api_path, username, password, str(private_key) if private_key else None
    )
    organizations = list(organization or [])

    def execute(method: str, parameters: dict[str, Any], database: str) -> dict[str, Any]:
        return run_on_server(
            client, collaboration=collaboration, central_organization=central_organization,
            organizations=organizations, image=image, method=method, parameters=parameters,
            database=database,
        )  # fmt: skip

    raise typer.Exit(
        _run_all(
            list(analysis or ANALYSES),
            execute,
            cfg,
            endpoint,
            out,
            km_width,
            km_max_time,
            exclude_refusing,
        )  # fmt: skip
    )
