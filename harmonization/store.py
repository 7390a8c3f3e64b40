"""The versioned store: harmonised records with row provenance in an embedded database.

Every ingest of a centre's upload becomes a new *version* of that centre; earlier versions
stay readable. Each record keeps where it came from (centre, source file, sheet, source
row, upload sha256, upload version, ingest time). Rows with blocking validation errors are
stored too, flagged with their reasons, so the exclusion flow can always be produced.
The database is a single DuckDB file (default ``pooled.db``).

Tables
------
``uploads``   one row per (upload, table): ``upload_id, centre, version, table_name, file,
              sheet, sha256, mapping, ingested_at, n_rows, n_blocking, n_errors, n_warnings,
              status``
``patients``  harmonised patient records + ``upload_id`` and provenance columns
``samples``   harmonised serial samples, likewise
``findings``  every validation finding of every upload, with ``upload_id``
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from harmonization.errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from harmonization.validate import HarmonisedTable, ValidationReport

RECORD_TABLES = ("patients", "samples")
Status = Literal["accepted", "rejected"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_UPLOADS_DDL = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id INTEGER NOT NULL,
    centre VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    table_name VARCHAR NOT NULL,
    file VARCHAR,
    sheet VARCHAR,
    sha256 VARCHAR,
    mapping VARCHAR,
    ingested_at TIMESTAMP,
    n_rows INTEGER,
    n_blocking INTEGER,
    n_errors INTEGER,
    n_warnings INTEGER,
    status VARCHAR
)
"""
_FINDINGS_DDL = """
CREATE TABLE IF NOT EXISTS findings (
    upload_id INTEGER, centre VARCHAR, file VARCHAR, sheet VARCHAR, "row" BIGINT,
    "column" VARCHAR, value VARCHAR, rule VARCHAR, severity VARCHAR, message VARCHAR,
    field VARCHAR
)
"""
FINDING_COLUMNS = (
    "centre", "file", "sheet", "row", "column", "value", "rule", "severity", "message", "field",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingest wrote."""

    upload_id: int
    centre: str
    version: int
    rows: Mapping[str, int]
    blocking: Mapping[str, int]
    status: Status
    duplicate_of: int | None = None

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows.values()))


def _quote(name: str) -> str:
    if not _IDENT.match(name):
        raise StoreError(f"'{name}' is not a valid column name for the store.")
    return f'"{name}"'


class Store:
    """A DuckDB file holding every version of every centre's harmonised records.

    Parameters
    ----------
    path : str or Path, default ``"pooled.db"``
        The database file; created on first ingest.
    read_only : bool, default False
        Open without write access (for analyses).

    Examples
    --------
    >>> with Store("pooled.db") as store:  # doctest: +SKIP
    ...     result = store.ingest(tables, report, mapping_path="configs/centres/ulm.yaml")
    ...     latest = store.records("patients")
    """

    def __init__(self, path: str | Path = "pooled.db", *, read_only: bool = False) -> None:
        import duckdb

        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(
                f"{self.path}: no such store; ingest uploads first with "
                "`pooled ingest --store {self.path} --mapping M FILE`."
            )
        try:
            self._con: duckdb.DuckDBPyConnection = duckdb.connect(
                str(self.path), read_only=read_only
            )
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc}).") from None
        if not read_only:
            self._con.execute(_UPLOADS_DDL)
            self._con.execute(_FINDINGS_DDL)

    # -- context management -------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------
    def _existing_columns(self, table: str) -> list[str] | None:
        rows = self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return [r[0] for r in rows] if rows else None

    def _append(self, table: str, frame: pd.DataFrame) -> None:
        """Append ``frame`` to ``table``, creating it or adding new columns as needed."""
        frame = _storable(frame)
        existing = self._existing_columns(table)
        self._con.register("_incoming", frame)
        try:
            if existing is None:
                self._con.execute(f"CREATE TABLE {_quote(table)} AS SELECT * FROM _incoming")
                return
            types = dict(
                self._con.execute("DESCRIBE SELECT * FROM _incoming").fetchall()[i][:2]
                for i in range(frame.shape[1])
            )
            for column in frame.columns:
                if column not in existing:
                    self._con.execute(
                        f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(column)} {types[column]}"
                    )
            self._con.execute(f"INSERT INTO {_quote(table)} BY NAME SELECT * FROM _incoming")
        finally:
            self._con.unregister("_incoming")

    def ingest(
        self,
        tables: Sequence[HarmonisedTable],
        report: ValidationReport | None = None,
        *,
        mapping_path: str = "",
        status: Status | None = None,
        ingested_at: _dt.datetime | None = None,
        allow_duplicate: bool = False,
    ) -> IngestResult:
        """Store one upload (all its tables) as the centre's next version.

        Parameters
        ----------
        tables : sequence of HarmonisedTable
            The validated tables of one upload (e.g. patients and samples sheets).
        report : ValidationReport, optional
            Its findings, stored beside the records.
        mapping_path : str
            The mapping used (recorded for provenance).
        status : {"accepted", "rejected"}, optional
            Default ``"accepted"``. A rejected version is kept but never read by default.
        ingested_at : datetime, optional
            Default now (UTC); pass a fixed value for reproducible stores.
        allow_duplicate : bool, default False
            When the same bytes (sha256) were already ingested for this centre, nothing is
            written and the earlier version is returned in ``duplicate_of``; set True to
            store them again as a new version anyway.

        Returns
        -------
        IngestResult
        """
        if not tables:
            raise StoreError("nothing to ingest: no harmonised tables were given.")
        centre = tables[0].centre
        sha = tables[0].sha256
        if any(t.centre != centre for t in tables):
            raise StoreError("one ingest takes the tables of one centre's upload only.")
        status = status or "accepted"
        if not allow_duplicate:
            hit = self._con.execute(
                "SELECT upload_id, version FROM uploads WHERE centre = ? AND sha256 = ? "
                "ORDER BY version DESC LIMIT 1",
                [centre, sha],
            ).fetchone()
            if hit is not None:
                return IngestResult(
                    upload_id=int(hit[0]),
                    centre=centre,
                    version=int(hit[1]),
                    rows={},
                    blocking={},
                    status=status,
                    duplicate_of=int(hit[1]),
                )
        when = ingested_at or _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
        self._con.execute("BEGIN TRANSACTION")
        try:
            upload_id = int(
                self._con.execute("SELECT COALESCE(MAX(upload_id), 0) + 1 FROM uploads").fetchone()[
                    0
                ]  # type: ignore[index]
            )
            version = int(
                self._con.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM uploads WHERE centre = ?", [centre]
                ).fetchone()[0]  # type: ignore[index]
            )
            findings = report.findings if report is not None else None
            counts_rows: dict[str, int] = {}
            counts_blocking: dict[str, int] = {}
            for table in tables:
                if table.table not in RECORD_TABLES:
                    raise StoreError(
                        f"table '{table.table}' cannot be stored; expected one of "
                        f"{', '.join(RECORD_TABLES)}."
                    )
                data = table.data.copy()
                data.insert(0, "upload_id", upload_id)
                data["upload_version"] = version
                data["upload_sha256"] = sha
                data["ingested_at"] = pd.Timestamp(when)
                self._append(table.table, data)
                n_blocking = int(data["blocking"].sum()) if "blocking" in data else 0
                counts_rows[table.table] = int(len(data))
                counts_blocking[table.table] = n_blocking
                sheet_findings = (
                    findings[findings["sheet"].fillna("") == (table.sheet or "")]
                    if findings is not None and "sheet" in findings
                    else None
                )
                n_errors = (
                    int((sheet_findings["severity"] == "error").sum())
                    if sheet_findings is not None
                    else 0
                )
                n_warnings = (
                    int((sheet_findings["severity"] == "warning").sum())
                    if sheet_findings is not None
                    else 0
                )
                self._con.execute(
                    "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        upload_id, centre, version, table.table, table.file, table.sheet or "",
                        sha, mapping_path, when, len(data), n_blocking, n_errors, n_warnings,
                        status,
                    ],
                )  # fmt: skip
            if findings is not None and len(findings):
                frame = pd.DataFrame({c: findings.get(c) for c in FINDING_COLUMNS})
                frame.insert(0, "upload_id", upload_id)
                frame["row"] = pd.to_numeric(frame["row"], errors="coerce").astype("Int64")
                for column in FINDING_COLUMNS:
                    if column != "row":
                        frame[column] = frame[column].astype("string")
                self._con.register("_findings", frame)
                try:
                    self._con.execute("INSERT INTO findings BY NAME SELECT * FROM _findings")
                finally:
                    self._con.unregister("_findings")
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        return IngestResult(
            upload_id=upload_id,
            centre=centre,
            version=version,
            rows=counts_rows,
            blocking=counts_blocking,
            status=status,
        )

    def set_status(self, centre: str, version: int, status: Status) -> None:
        """Accept or reject a stored version (e.g. after the centre's reply)."""
        found = self._con.execute(
            "SELECT COUNT(*) FROM uploads WHERE centre = ? AND version = ?", [centre, version]
        ).fetchone()
        if not found or not found[0]:
            raise StoreError(f"the store has no version {version} of centre '{centre}'.")
        self._con.execute(
            "UPDATE uploads SET status = ? WHERE centre = ? AND version = ?",
            [status, centre, version],
        )

    # -- reading --------------------------------------------------------------------------
    def uploads(self) -> pd.DataFrame:
        """Every stored upload version, one row per (upload, table)."""
        return self._con.execute("SELECT * FROM uploads ORDER BY centre, version, table_name").df()

    def centres(self) -> list[str]:
        return [
            r[0]
            for r in self._con.execute("SELECT DISTINCT centre FROM uploads ORDER BY 1").fetchall()
        ]

    def latest_versions(self, *, status: Status = "accepted") -> dict[str, int]:
        """The latest version of each centre with the given status."""
        rows = self._con.execute(
            "SELECT centre, MAX(version) FROM uploads WHERE status = ? GROUP BY centre ORDER BY 1",
            [status],
        ).fetchall()
        return {str(c): int(v) for c, v in rows}

    def resolve_versions(
        self, centres: Iterable[str] | None = None, pinned: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """Versions to read: pinned ones where given, else the latest accepted one."""
        latest = self.latest_versions()
        wanted = list(centres) if centres is not None else sorted(set(latest) | set(pinned or {}))
        out: dict[str, int] = {}
        available = self.uploads()
        for centre in wanted:
            if pinned and centre in pinned:
                version = int(pinned[centre])
                exists = ((available["centre"] == centre) & (available["version"] == version)).any()
                if not exists:
                    have = sorted(set(available.loc[available["centre"] == centre, "version"]))
                    raise StoreError(
                        f"centre '{centre}' has no version {version} in {self.path}; "
                        f"stored versions: {have or 'none'}."
                    )
                out[centre] = version
            elif centre in latest:
                out[centre] = latest[centre]
            else:
                raise StoreError(
                    f"centre '{centre}' has no accepted upload in {self.path}; stored centres: "
                    f"{', '.join(self.centres()) or 'none'}."
                )
        return out

    def records(
        self,
        table: str = "patients",
        *,
        versions: Mapping[str, int] | None = None,
        centres: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Harmonised records of the chosen centre versions (default: latest accepted).

        Every row carries its provenance: ``upload_id, upload_version, upload_sha256,
        ingested_at, source_file, source_sheet, source_row`` and its ``blocking`` flag and
        ``reasons``.
        """
        if table not in RECORD_TABLES:
            raise StoreError(
                f"no record table '{table}'; expected one of {', '.join(RECORD_TABLES)}."
            )
        if self._existing_columns(table) is None:
            return pd.DataFrame()
        chosen = self.resolve_versions(centres, versions)
        if not chosen:
            return pd.DataFrame()
        pairs = pd.DataFrame({"centre": list(chosen), "upload_version": list(chosen.values())})
        self._con.register("_chosen", pairs)
        try:
            frame = self._con.execute(
                f"SELECT r.* FROM {_quote(table)} r JOIN _chosen c "
                "ON r.centre = c.centre AND r.upload_version = c.upload_version "
                "ORDER BY r.centre, r.upload_id, r.source_row"
            ).df()
        finally:
            self._con.unregister("_chosen")
        return frame

    def findings(self, *, centre: str | None = None, version: int | None = None) -> pd.DataFrame:
        """Stored findings, optionally of one centre (and version)."""
        query = (
            "SELECT f.*, u.version FROM findings f JOIN (SELECT DISTINCT upload_id, version "
            "FROM uploads) u USING (upload_id)"
        )
        clauses: list[str] = []
        params: list[object] = []
        if centre is not None:
            clauses.append("f.centre = ?")
            params.append(centre)
        if version is not None:
            clauses.append("u.version = ?")
            params.append(version)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        return self._con.execute(query + " ORDER BY f.upload_id, f.row", params).df()


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Column types DuckDB stores faithfully: object columns of text stay text."""
    out = frame.copy()
    for column in out.columns:
        if not _IDENT.match(str(column)):
            raise StoreError(f"'{column}' is not a valid column name for the store.")
        series = out[column]
        if series.dtype == object:
            non_null = series.dropna()
            if non_null.map(lambda v: isinstance(v, bool)).all() and len(non_null):
                out[column] = series.astype("boolean")
            else:
                out[column] = series.map(
                    lambda v: None if v is None or v is pd.NA else str(v)
                ).astype("string")
    return out
