"""Several stores or upload folders as the centres of an in-process vantage6 network.

:func:`centres_from_stores` and :func:`centres_from_uploads` give each centre its own data:
the analysis dataset of its latest accepted version (what ``pooled federate export`` writes
for a node) and its validation findings. :func:`run_local` runs a central function of
:mod:`pooled.federated.algorithm` with vantage6's own ``MockAlgorithmClient``
(``vantage6-algorithm-tools``), one organisation per centre, exactly as a node would run it.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pooled.errors import ConfigError, DataError

__all__ = [
    "CentreData",
    "centre_export",
    "centres_from_stores",
    "centres_from_uploads",
    "run_local",
]

ALGORITHM_MODULE = "pooled.federated.algorithm"
FINDING_COLUMNS = ("centre", "rule", "severity")


@dataclass(frozen=True, slots=True)
class CentreData:
    """One centre's harmonised data as its node holds them."""

    name: str
    patients: pd.DataFrame
    findings: pd.DataFrame


def centre_export(store: Any, centre: str, *, origin: str | None = None) -> CentreData:
    """A centre's node data from its store: the analysis dataset of the latest accepted
    version (rows with blocking errors left out, as ``pooled dataset`` does) and the
    findings of that version (``centre, rule, severity`` only: no row, column or value)."""
    from pooled.dataset import build_analysis_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_analysis_dataset(store, centres=[centre], origin=origin)
    version = ds.versions[centre]
    findings = store.findings(centre=centre, version=version)
    findings = findings.reindex(columns=list(FINDING_COLUMNS)).assign(centre=centre)
    return CentreData(name=centre, patients=ds.patients, findings=findings.reset_index(drop=True))


def centres_from_stores(
    stores: Iterable[str | Path], *, centres: Sequence[str] | None = None, origin: str | None = None
) -> list[CentreData]:
    """Every centre of every store (or only ``centres``), each as its own node."""
    from harmonization.store import Store

    out: list[CentreData] = []
    for path in stores:
        if not Path(path).is_file():
            raise DataError(
                f"store {path} does not exist; give a pooled.db written by `pooled ingest`."
            )
        with Store(path, read_only=True) as store:
            for name in sorted(store.latest_versions()):
                if centres and name not in centres:
                    continue
                out.append(centre_export(store, name, origin=origin))
    return _unique(out)


def centres_from_uploads(
    folders: Iterable[str | Path], *, origin: str | None = None, schema: Any = None
) -> list[CentreData]:
    """Centres from upload folders: a folder holding ``uploads/`` and ``mappings/`` (as
    ``pooled simulate`` writes), or one centre's upload file(s) beside its mapping YAML.
    Each upload is validated and stored in a temporary store (nothing is written beside it).
    """
    from harmonization.mapping import CentreMapping
    from harmonization.store import Store
    from harmonization.upload import check_upload

    pairs: list[tuple[Path, Path]] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise DataError(f"upload folder {folder} does not exist.")
        mappings_dir = folder / "mappings" if (folder / "mappings").is_dir() else folder
        uploads_dir = folder / "uploads" if (folder / "uploads").is_dir() else folder
        found = False
        for mapping in sorted(mappings_dir.glob("*.yaml")):
            uploads = [
                p
                for p in sorted(uploads_dir.glob(f"{mapping.stem}.*"))
                if p.suffix.lower() not in (".yaml", ".yml")
            ]
            if not uploads:
                uploads = [
                    p
                    for p in sorted(uploads_dir.iterdir())
                    if p.is_file() and p.suffix.lower() in (".xlsx", ".csv", ".sav", ".dta")
                ]
            if uploads:
                pairs.append((uploads[0], mapping))
                found = True
        if not found:
            raise DataError(
                f"{folder}: expected a centre's upload beside its mapping YAML (or uploads/ and "
                "mappings/ folders); found none."
            )
    out: list[CentreData] = []
    with tempfile.TemporaryDirectory(prefix="pooled-federate-") as tmp:
        with Store(Path(tmp) / "pooled.db") as store:
            for upload, mapping_path in pairs:
                centre_mapping = CentreMapping.from_yaml(mapping_path, schema=schema)
                checked = check_upload(upload, centre_mapping, schema=schema)
                store.ingest(list(checked.tables), checked.report, mapping_path=str(mapping_path))
            for name in sorted(store.latest_versions()):
                out.append(centre_export(store, name, origin=origin))
    return _unique(out)


def _unique(centres: list[CentreData]) -> list[CentreData]:
    seen: set[str] = set()
    for c in centres:
        if c.name in seen:
            raise ConfigError(f"centre {c.name!r} appears in two of the given stores or folders.")
        seen.add(c.name)
    if not centres:
        raise DataError("no centre found in the given stores or upload folders.")
    return centres


def mock_client(centres: Sequence[CentreData], *, database: str = "patients") -> Any:
    """vantage6's ``MockAlgorithmClient`` with one organisation per centre (ids 1, 2, ...),
    each holding its ``patients`` (or ``findings``) as its one database."""
    try:
        from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
    except ImportError as exc:  # pragma: no cover - the extra is installed by make test
        raise ConfigError(
            "the local federated mode runs vantage6's MockAlgorithmClient: install the extra "
            "with `pip install -e '.[federated]'`."
        ) from exc
    if database not in ("patients", "findings"):
        raise ConfigError(f"database must be 'patients' or 'findings'; got {database!r}.")
    datasets = [[{"database": getattr(c, database)}] for c in centres]
    ids = list(range(1, len(centres) + 1))
    return MockAlgorithmClient(
        datasets=datasets, module=ALGORITHM_MODULE, organization_ids=ids, node_ids=ids
    )


def run_local(
    centres: Sequence[CentreData],
    method: str,
    parameters: dict[str, Any],
    *,
    database: str = "patients",
) -> dict[str, Any]:
    """Run the central function ``method`` (``central_cox``, ...) over ``centres`` in process.

    The coordinator's task runs at the first organisation, as on a network where the
    coordinating centre's node runs the central function; it returns the JSON result.
    """
    client = mock_client(centres, database=database)
    organisations = list(range(1, len(centres) + 1))
    task = client.task.create(
        input_={
            "method": method,
            "kwargs": {"parameters": parameters, "organizations": organisations},
        },
        organizations=[organisations[0]],
        name=f"pooled {method}",
        description="pooled federate (local)",
    )
    results = client.wait_for_results(task["id"])
    return dict(results[0])
