"""The versioned store: harmonised records with row provenance in an embedded database.

Every ingest of a centre's upload becomes a new *version* of that centre; earlier versions
stay readable. A version is identified by what made it: the upload's bytes (sha256), the
centre mapping (sha256 of its YAML text) and the schema (sha256 of its YAML text), so the
same file read through a corrected mapping is a new version. Each record keeps where it came
from (centre, source file, sheet, source row, upload sha256, upload version, ingest time).
Rows with blocking validation errors are stored too, flagged with their reasons, so the
exclusion flow can always be produced. The mapping and schema texts and the upload's bytes
are kept once per sha256, so any version can be re-read, re-reported and analysed with the
schema it was ingested with. The database is a single DuckDB file (default ``pooled.db``).

Tables
------
``uploads``         one row per (upload, table): ``upload_id, centre, version, table_name,
                    file, sheet, sha256, mapping, ingested_at, n_rows, n_blocking, n_errors,
                    n_warnings, status, mapping_sha256, schema_sha256, status_reason,
                    status_changed_at, note``
``patients``        harmonised patient records + ``upload_id`` and provenance columns
``samples``         harmonised serial samples, likewise
``findings``        every validation finding of every upload, with ``upload_id``
``texts``           ``sha256, kind, text``: mapping and schema YAML texts, once per sha256
``files``           ``sha256, name, content``: upload bytes, once per sha256
``status_history``  ``centre, version, status, reason, changed_at``: every status given

A store written before the last five ``uploads`` columns and the last three tables existed
is upgraded when opened for writing; opened read-only, it reads as if they were empty.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from harmonization.errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from harmonization.mapping import CentreMapping
    from harmonization.schema import Schema
    from harmonization.validate import HarmonisedTable, ValidationReport

RECORD_TABLES = ("patients", "samples")
STATUSES: tuple[str, ...] = ("accepted", "rejected")
Status = Literal["accepted", "rejected"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Columns the store adds to every record row (not harmonised data).
STORE_COLUMNS: tuple[str, ...] = ("upload_id", "upload_version", "upload_sha256", "ingested_at")
#: Record keys when no schema is known (the schema's key without ``centre``).
_DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id",),
    "samples": ("patient_id", "timepoint"),
}

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
#: Columns added to ``uploads`` after the first release (stores are upgraded on open).
_UPLOADS_ADDED: tuple[tuple[str, str], ...] = (
    ("mapping_sha256", "VARCHAR"),
    ("schema_sha256", "VARCHAR"),
    ("status_reason", "VARCHAR"),
    ("status_changed_at", "TIMESTAMP"),
    ("note", "VARCHAR"),
)
_FINDINGS_DDL = """
CREATE TABLE IF NOT EXISTS findings (
    upload_id INTEGER, centre VARCHAR, file VARCHAR, sheet VARCHAR, "row" BIGINT,
    "column" VARCHAR, value VARCHAR, rule VARCHAR, severity VARCHAR, message VARCHAR,
    field VARCHAR
)
"""
_EXTRA_DDL: dict[str, str] = {
    "texts": "CREATE TABLE IF NOT EXISTS texts (sha256 VARCHAR, kind VARCHAR, text VARCHAR)",
    "files": "CREATE TABLE IF NOT EXISTS files (sha256 VARCHAR, name VARCHAR, content BLOB)",
    "status_history": (
        "CREATE TABLE IF NOT EXISTS status_history (centre VARCHAR, version INTEGER, "
        "status VARCHAR, reason VARCHAR, changed_at TIMESTAMP)"
    ),
}
FINDING_COLUMNS = (
    "centre", "file", "sheet", "row", "column", "value", "rule", "severity", "message", "field",
)  # fmt: skip
#: Columns of :meth:`Store.versions`, in this order.
VERSION_COLUMNS: tuple[str, ...] = (
    "centre", "version", "status", "status_reason", "file", "upload_sha256", "mapping_path",
    "mapping_sha256", "schema_sha256", "ingested_at", "n_patients", "n_samples", "n_blocking",
    "n_errors", "n_warnings", "n_info", "note",
)  # fmt: skip
_VERSIONS_SQL = """
WITH u AS (
    SELECT upload_id, any_value(centre) AS centre, any_value(version) AS version,
        any_value(status) AS status, any_value(status_reason) AS status_reason,
        min(file) AS file, any_value(sha256) AS upload_sha256,
        any_value(mapping) AS mapping_path, any_value(mapping_sha256) AS mapping_sha256,
        any_value(schema_sha256) AS schema_sha256, any_value(ingested_at) AS ingested_at,
        coalesce(sum(n_rows) FILTER (WHERE table_name = 'patients'), 0) AS n_patients,
        coalesce(sum(n_rows) FILTER (WHERE table_name = 'samples'), 0) AS n_samples,
        coalesce(sum(n_blocking), 0) AS n_blocking, any_value(note) AS note
    FROM uploads WHERE {where} GROUP BY upload_id
), f AS (
    SELECT upload_id,
        count(*) FILTER (WHERE severity = 'error') AS n_errors,
        count(*) FILTER (WHERE severity = 'warning') AS n_warnings,
        count(*) FILTER (WHERE severity = 'info') AS n_info
    FROM findings WHERE upload_id IN (SELECT upload_id FROM uploads WHERE {where})
    GROUP BY upload_id
)
SELECT u.centre, u.version, u.status, coalesce(u.status_reason, '') AS status_reason, u.file,
    u.upload_sha256, coalesce(u.mapping_path, '') AS mapping_path, u.mapping_sha256,
    u.schema_sha256, u.ingested_at, u.n_patients, u.n_samples, u.n_blocking,
    coalesce(f.n_errors, 0) AS n_errors, coalesce(f.n_warnings, 0) AS n_warnings,
    coalesce(f.n_info, 0) AS n_info, coalesce(u.note, '') AS note
FROM u LEFT JOIN f USING (upload_id)
"""
_LOCK_PID = re.compile(r"\(PID (\d+)\)")


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


@dataclass(frozen=True, slots=True)
class StoreDiff:
    """How two stored versions of a centre differ, record by record (see :meth:`Store.diff`).

    Attributes
    ----------
    centre, table : what was compared.
    version_a, version_b : the older and the newer version (``a`` -> ``b``).
    key : the columns identifying a record (``patient_id``; for samples also ``timepoint``).
    added : the keys of records in ``version_b`` only.
    removed : the keys of records in ``version_a`` only.
    changed : one row per changed cell: the key columns, ``field``, ``old``, ``new`` (raw
        values; missing is ``None``).
    fields : the harmonised schema fields compared.
    n_changed : records (not cells) with at least one changed field; a patient id sent twice
        counts as two records.

    Examples
    --------
    >>> d = store.diff("ulm", 1, 2)  # doctest: +SKIP
    >>> d.counts_by_field()  # doctest: +SKIP
    """

    centre: str
    table: str
    version_a: int
    version_b: int
    key: tuple[str, ...]
    added: pd.DataFrame
    removed: pd.DataFrame
    changed: pd.DataFrame
    fields: tuple[str, ...]
    n_changed: int

    @property
    def n_added(self) -> int:
        return int(len(self.added))

    @property
    def n_removed(self) -> int:
        return int(len(self.removed))

    @property
    def is_empty(self) -> bool:
        return not (len(self.added) or len(self.removed) or len(self.changed))

    def counts_by_field(self) -> pd.DataFrame:
        """``field, n_changed`` (records whose field changed), most changed first."""
        if not len(self.changed):
            return pd.DataFrame({"field": pd.Series(dtype=object), "n_changed": []}).astype(
                {"n_changed": "int64"}
            )
        counts = self.changed.groupby("field", sort=False).size().rename("n_changed")
        order = {f: i for i, f in enumerate(self.fields)}
        frame = counts.reset_index()
        frame["_o"] = frame["field"].map(order)
        return (
            frame.sort_values(["n_changed", "_o"], ascending=[False, True])
            .drop(columns="_o")
            .reset_index(drop=True)
        )

    def to_frame(self) -> pd.DataFrame:
        """Every difference as one tidy table: ``change`` (added, removed, changed), the key
        columns, ``field``, ``old``, ``new``."""
        key = list(self.key)
        parts = []
        for change, frame in (("added", self.added), ("removed", self.removed)):
            part = frame[key].copy()
            part.insert(0, "change", change)
            part["field"] = None
            part["old"] = None
            part["new"] = None
            parts.append(part)
        changed = self.changed[[*key, "field", "old", "new"]].copy()
        changed.insert(0, "change", "changed")
        parts.append(changed)
        columns = ["change", *key, "field", "old", "new"]
        frames = [p.astype(object) for p in parts if len(p)]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return pd.concat(frames, ignore_index=True)[columns]


def _quote(name: str) -> str:
    if not _IDENT.match(name):
        raise StoreError(f"'{name}' is not a valid column name for the store.")
    return f'"{name}"'


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def _connect(path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, waiting (short backoff) while another process holds its lock."""
    import duckdb

    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise StoreError(f"{path}: cannot open the store ({exc}).") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pid = _LOCK_PID.search(str(exc))
                who = f"another process (PID {pid.group(1)})" if pid else "another process"
                raise StoreError(
                    f"{path}: the store is in use by {who}; waited {timeout:g} s for it to "
                    "finish. Try again when the other `pooled` command has ended."
                ) from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.5)
        except duckdb.Error as exc:
            raise StoreError(f"{path}: cannot open the store ({exc}).") from None


class Store:
    """A DuckDB file holding every version of every centre's harmonised records.

    Parameters
    ----------
    path : str or Path, default ``"pooled.db"``
        The database file; created on first ingest.
    read_only : bool, default False
        Open without write access (for analyses).
    timeout : float, default 60
        Seconds to wait while another process holds the store (DuckDB lets one writing
        process at a time open the file); then :class:`StoreError`.

    Examples
    --------
    >>> with Store("pooled.db") as store:  # doctest: +SKIP
    ...     result = store.ingest(tables, report, mapping=mapping, schema=schema,
    ...                           upload_path="uploads/ulm.xlsx")
    ...     latest = store.records("patients")
    """

    def __init__(
        self, path: str | Path = "pooled.db", *, read_only: bool = False, timeout: float = 60.0
    ) -> None:
        if timeout < 0:
            raise ValueError(f"Store: 'timeout' must be >= 0 seconds; got {timeout!r}.")
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(
                f"{self.path}: no such store; ingest uploads first with "
                f"`pooled ingest --store {self.path} --mapping M FILE`."
            )
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection = _connect(
            self.path, read_only=read_only, timeout=timeout
        )
        try:
            self._catalog = str(self._con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
            if read_only:
                self._shim_missing()
            else:
                self._upgrade()
        except Exception:
            self._con.close()
            raise

    def _upgrade(self) -> None:
        """Create the tables, and add what stores written by earlier releases lack."""
        self._con.execute(_UPLOADS_DDL)
        self._con.execute(_FINDINGS_DDL)
        self._con.execute("ALTER TABLE findings ADD COLUMN IF NOT EXISTS field VARCHAR")
        for column, kind in _UPLOADS_ADDED:
            self._con.execute(f"ALTER TABLE uploads ADD COLUMN IF NOT EXISTS {column} {kind}")
        for ddl in _EXTRA_DDL.values():
            self._con.execute(ddl)

    def _shim_missing(self) -> None:
        """Read-only on an older store: temporary stand-ins for what it lacks (empty/NULL)."""
        uploads = self._existing_columns("uploads")
        if uploads is None:
            self._con.execute(_UPLOADS_DDL.replace("CREATE TABLE", "CREATE TEMP TABLE"))
            uploads = self._temp_columns("uploads")
        missing = [(c, k) for c, k in _UPLOADS_ADDED if c not in uploads]
        if missing and self._existing_columns("uploads") is not None:
            extra = ", ".join(f"NULL::{k} AS {c}" for c, k in missing)
            catalog = self._catalog.replace('"', '""')
            self._con.execute(
                f'CREATE TEMP VIEW uploads AS SELECT *, {extra} FROM "{catalog}".main.uploads'
            )
        elif missing:
            for column, kind in missing:
                self._con.execute(f"ALTER TABLE temp.uploads ADD COLUMN {column} {kind}")
        if self._existing_columns("findings") is None:
            self._con.execute(_FINDINGS_DDL.replace("CREATE TABLE", "CREATE TEMP TABLE"))
        for table, ddl in _EXTRA_DDL.items():
            if self._existing_columns(table) is None:
                self._con.execute(ddl.replace("CREATE TABLE", "CREATE TEMP TABLE"))

    # -- context management -------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------
    def _existing_columns(self, table: str) -> list[str] | None:
        """Columns of ``table`` in the store file itself (not temporary stand-ins)."""
        rows = self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_catalog = ? ORDER BY ordinal_position",
            [table, self._catalog],
        ).fetchall()
        return [r[0] for r in rows] if rows else None

    def _temp_columns(self, table: str) -> list[str]:
        rows = self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_catalog = 'temp' ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return [r[0] for r in rows]

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

    def _keep_text(self, sha: str, kind: str, text: str) -> None:
        self._con.execute(
            "INSERT INTO texts SELECT ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM texts WHERE sha256 = ?)",
            [sha, kind, text, sha],
        )

    def _keep_file(self, sha: str, name: str, content: bytes) -> None:
        self._con.execute(
            "INSERT INTO files SELECT ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM files WHERE sha256 = ?)",
            [sha, name, content, sha],
        )

    def ingest(
        self,
        tables: Sequence[HarmonisedTable],
        report: ValidationReport | None = None,
        *,
        mapping_path: str = "",
        mapping: CentreMapping | None = None,
        schema: Schema | None = None,
        upload_path: str | Path | None = None,
        status: Status | None = None,
        ingested_at: _dt.datetime | None = None,
        allow_duplicate: bool = False,
        note: str = "",
    ) -> IngestResult:
        """Store one upload (all its tables) as the centre's next version.

        A version is identified by the upload's bytes, the mapping and the schema together:
        the same file read through a corrected mapping (or a changed schema) is a new version.

        Parameters
        ----------
        tables : sequence of HarmonisedTable
            The validated tables of one upload (e.g. patients and samples sheets).
        report : ValidationReport, optional
            Its findings, stored beside the records.
        mapping_path : str
            Where the mapping was read from (provenance); default ``mapping.path``.
        mapping : CentreMapping, optional
            The mapping used; its YAML text and sha256 are recorded (a mapping built from a
            dict has no text: nothing is recorded and it counts as "no mapping").
        schema : Schema, optional
            The schema used; its YAML text and sha256 are recorded, so an analysis can use
            it (:meth:`schema_for`).
        upload_path : str or Path, optional
            The upload file; its bytes and name are kept, so the version can be re-read and
            re-reported later. Must be the file the tables were read from.
        status : {"accepted", "rejected"}, optional
            Default ``"accepted"``. A rejected version is kept but never read by default.
        ingested_at : datetime, optional
            Default now (UTC); pass a fixed value for reproducible stores.
        allow_duplicate : bool, default False
            When the centre already has a version with the same upload, mapping and schema
            sha256, nothing is written and that version is returned in ``duplicate_of``;
            set True to store them again as a new version anyway.
        note : str
            Free text kept with the version (e.g. "corrected grade coding").

        Returns
        -------
        IngestResult

        Raises
        ------
        StoreError
            No tables, tables of several centres, a table the store does not hold, a mapping
            of another centre, or an ``upload_path`` whose bytes are not the upload's.

        Examples
        --------
        >>> checked = check_upload("ulm.xlsx", mapping, schema=schema)  # doctest: +SKIP
        >>> store.ingest(list(checked.tables), checked.report, mapping=mapping,
        ...              schema=schema, upload_path="ulm.xlsx")  # doctest: +SKIP
        """
        if not tables:
            raise StoreError("nothing to ingest: no harmonised tables were given.")
        centre = tables[0].centre
        sha = tables[0].sha256
        if any(t.centre != centre for t in tables):
            raise StoreError("one ingest takes the tables of one centre's upload only.")
        if status is not None and status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}; got {status!r}.")
        if mapping is not None and mapping.centre != centre:
            raise StoreError(
                f"the mapping is for centre '{mapping.centre}' but the tables are of centre "
                f"'{centre}'; pass the mapping the upload was read with."
            )
        content: bytes | None = None
        if upload_path is not None:
            try:
                content = Path(upload_path).read_bytes()
            except OSError as exc:
                raise StoreError(
                    f"cannot read the upload {upload_path}: {exc.strerror or exc}."
                ) from None
            if hashlib.sha256(content).hexdigest() != sha:
                raise StoreError(
                    f"{upload_path} is not the file these tables were read from (its sha256 "
                    f"differs from the tables' {sha[:12]}); pass the upload that was checked."
                )
        mapping_text = mapping.text if mapping is not None else ""
        mapping_sha = _sha_text(mapping_text) if mapping_text else ""
        schema_text = schema.text if schema is not None else ""
        schema_sha = _sha_text(schema_text) if schema_text else ""
        mapping_path = mapping_path or (mapping.path if mapping is not None else "")
        status = status or "accepted"
        if not allow_duplicate:
            hit = self._con.execute(
                "SELECT upload_id, version FROM uploads WHERE centre = ? AND sha256 = ? "
                "AND coalesce(mapping_sha256, '') = ? AND coalesce(schema_sha256, '') = ? "
                "ORDER BY version DESC LIMIT 1",
                [centre, sha, mapping_sha, schema_sha],
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
        when = ingested_at or _now()
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
                    "INSERT INTO uploads (upload_id, centre, version, table_name, file, sheet, "
                    "sha256, mapping, ingested_at, n_rows, n_blocking, n_errors, n_warnings, "
                    "status, mapping_sha256, schema_sha256, status_reason, status_changed_at, "
                    "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        upload_id, centre, version, table.table, table.file, table.sheet or "",
                        sha, mapping_path, when, len(data), n_blocking, n_errors, n_warnings,
                        status, mapping_sha or None, schema_sha or None, "", when, note,
                    ],
                )  # fmt: skip
            self._con.execute(
                "INSERT INTO status_history VALUES (?, ?, ?, ?, ?)",
                [centre, version, status, "ingested", when],
            )
            if mapping_sha:
                self._keep_text(mapping_sha, "mapping", mapping_text)
            if schema_sha:
                self._keep_text(schema_sha, "schema", schema_text)
            if content is not None and upload_path is not None:
                self._keep_file(sha, Path(upload_path).name, content)
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

    def set_status(
        self,
        centre: str,
        version: int,
        status: Status,
        reason: str = "",
        *,
        changed_at: _dt.datetime | None = None,
    ) -> None:
        """Accept or reject a stored version (e.g. after the centre's reply).

        The status, the reason and the time are recorded; :meth:`status_history` lists every
        change. A rejected version is kept but not read by default.

        Parameters
        ----------
        centre, version : the version.
        status : {"accepted", "rejected"}
        reason : str
            Why (shown by ``pooled store show``).
        changed_at : datetime, optional
            Default now (UTC).

        Examples
        --------
        >>> store.set_status("ulm", 2, "rejected", "grade coded 1-3 as 0-2")  # doctest: +SKIP
        """
        if status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}; got {status!r}.")
        self.version_row(centre, version)
        when = changed_at or _now()
        self._con.execute("BEGIN TRANSACTION")
        try:
            self._con.execute(
                "UPDATE uploads SET status = ?, status_reason = ?, status_changed_at = ? "
                "WHERE centre = ? AND version = ?",
                [status, reason, when, centre, version],
            )
            self._con.execute(
                "INSERT INTO status_history VALUES (?, ?, ?, ?, ?)",
                [centre, version, status, reason, when],
            )
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            raise

    # -- reading --------------------------------------------------------------------------
    def uploads(self) -> pd.DataFrame:
        """Every stored upload version, one row per (upload, table)."""
        return self._con.execute("SELECT * FROM uploads ORDER BY centre, version, table_name").df()

    def versions(self, centre: str | None = None) -> pd.DataFrame:
        """One row per stored centre version, with its provenance and counts.

        Parameters
        ----------
        centre : str, optional
            Only this centre's versions.

        Returns
        -------
        DataFrame
            Columns ``centre, version, status, status_reason, file, upload_sha256,
            mapping_path, mapping_sha256, schema_sha256, ingested_at, n_patients, n_samples,
            n_blocking, n_errors, n_warnings, n_info, note``; the hashes are missing for
            versions ingested without a mapping text or schema.

        Examples
        --------
        >>> store.versions("ulm")[["version", "status", "n_patients"]]  # doctest: +SKIP
        """
        if centre is None:
            query, params = _VERSIONS_SQL.format(where="TRUE"), []
        else:
            query, params = _VERSIONS_SQL.format(where="centre = ?"), [centre, centre]
        frame = self._con.execute(query + " ORDER BY u.centre, u.version", params).df()
        for column in ("version", "n_patients", "n_samples", "n_blocking", "n_errors",
                       "n_warnings", "n_info"):  # fmt: skip
            frame[column] = frame[column].astype("int64")
        return frame[list(VERSION_COLUMNS)]

    def version_row(self, centre: str, version: int) -> pd.Series:
        """One row of :meth:`versions`; :class:`StoreError` naming the stored versions when
        the centre has no such version."""
        frame = self.versions(centre)
        hit = frame.loc[frame["version"] == int(version)]
        if not len(hit):
            have = frame["version"].tolist()
            where = (
                f"stored versions: {have}"
                if have
                else (f"stored centres: {', '.join(self.centres()) or 'none'}")
            )
            raise StoreError(
                f"the store {self.path} has no version {version} of centre '{centre}'; {where}."
            )
        return hit.iloc[0]

    def latest_version(self, centre: str, *, status: Status | None = None) -> int:
        """The newest version of ``centre`` (of any status unless ``status`` is given)."""
        frame = self.versions(centre)
        if status is not None:
            frame = frame.loc[frame["status"] == status]
        if not len(frame):
            kind = f" {status}" if status else ""
            raise StoreError(
                f"centre '{centre}' has no{kind} version in {self.path}; stored centres: "
                f"{', '.join(self.centres()) or 'none'}."
            )
        return int(frame["version"].max())

    def _text(self, sha: Any) -> str | None:
        if sha is None or pd.isna(sha) or not sha:
            return None
        hit = self._con.execute("SELECT text FROM texts WHERE sha256 = ?", [sha]).fetchone()
        return None if hit is None else str(hit[0])

    def mapping_text(self, centre: str, version: int) -> str | None:
        """The mapping YAML the version was ingested with (None if it was not recorded)."""
        return self._text(self.version_row(centre, version)["mapping_sha256"])

    def schema_text(self, centre: str, version: int) -> str | None:
        """The schema YAML the version was ingested with (None if it was not recorded)."""
        return self._text(self.version_row(centre, version)["schema_sha256"])

    def upload_file(self, centre: str, version: int) -> tuple[str, bytes] | None:
        """``(file name, bytes)`` of the version's upload, or None if they were not kept."""
        row = self.version_row(centre, version)
        hit = self._con.execute(
            "SELECT name, content FROM files WHERE sha256 = ?", [row["upload_sha256"]]
        ).fetchone()
        if hit is None:
            return None
        name = str(row["file"]) if isinstance(row["file"], str) and row["file"] else str(hit[0])
        return name, bytes(hit[1])

    def status_history(self, centre: str, version: int) -> pd.DataFrame:
        """Every status the version was given: ``status, reason, changed_at`` (oldest first;
        empty for versions stored before the history was kept)."""
        self.version_row(centre, version)
        return self._con.execute(
            "SELECT status, coalesce(reason, '') AS reason, changed_at FROM status_history "
            "WHERE centre = ? AND version = ? ORDER BY changed_at, rowid",
            [centre, version],
        ).df()

    def schema_for(self, versions: Mapping[str, int]) -> Schema | None:
        """The schema the chosen versions were ingested with.

        Parameters
        ----------
        versions : mapping centre -> version
            E.g. :meth:`resolve_versions`.

        Returns
        -------
        Schema or None
            Compiled from the recorded text; None when no chosen version recorded one
            (versions without a recorded schema do not count against those with one).

        Raises
        ------
        StoreError
            The versions were ingested with different schemas (naming the centres of each),
            or a version does not exist.

        Examples
        --------
        >>> schema = store.schema_for(store.resolve_versions())  # doctest: +SKIP
        """
        from harmonization.schema import load_schema_text

        by_sha: dict[str, list[str]] = {}
        for centre, version in versions.items():
            sha = self.version_row(centre, version)["schema_sha256"]
            if isinstance(sha, str) and sha:
                by_sha.setdefault(sha, []).append(f"{centre} v{version}")
        if not by_sha:
            return None
        if len(by_sha) > 1:
            listed = "; ".join(f"{sha[:12]}: {', '.join(c)}" for sha, c in by_sha.items())
            raise StoreError(
                f"the chosen versions were ingested with different schemas ({listed}); pass "
                "--schema SCHEMA.yaml to choose the schema to use."
            )
        sha = next(iter(by_sha))
        text = self._text(sha)
        if text is None:
            raise StoreError(
                f"the store {self.path} records schema {sha[:12]} but not its text; pass "
                "--schema SCHEMA.yaml."
            )
        return load_schema_text(text, path=f"<schema {sha[:12]} recorded in {self.path}>")

    def validation_report(self, centre: str, version: int) -> ValidationReport:
        """The version's stored findings as a :class:`~harmonization.validate.ValidationReport`
        (``blocked_rows`` = its rows with blocking findings)."""
        from harmonization.validate import ValidationReport

        row = self.version_row(centre, version)
        frame = self._con.execute(
            "SELECT f.* EXCLUDE (upload_id) FROM findings f WHERE f.upload_id = "
            "(SELECT min(upload_id) FROM uploads WHERE centre = ? AND version = ?) "
            "ORDER BY rowid",
            [centre, version],
        ).df()
        findings = pd.DataFrame({c: frame[c].astype(object) if c in frame else None
                                 for c in FINDING_COLUMNS})  # fmt: skip
        findings = findings.where(findings.notna(), None)
        findings["row"] = pd.to_numeric(findings["row"], errors="coerce").astype("Int64")
        return ValidationReport(findings, blocked_rows=int(row["n_blocking"]))

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

    # -- comparing and re-checking ----------------------------------------------------------
    def _schema_of_version(self, centre: str, version: int) -> Schema | None:
        from harmonization.schema import load_schema_text

        text = self.schema_text(centre, version)
        return (
            None
            if text is None
            else load_schema_text(text, path=f"<schema of {centre} v{version}>")
        )

    def diff(
        self, centre: str, version_a: int, version_b: int, table: str = "patients"
    ) -> StoreDiff:
        """Compare two stored versions of a centre record by record.

        Records are matched by their key (``patient_id``; samples by ``patient_id`` and
        ``timepoint``; a key sent twice is matched by its order of appearance). The
        harmonised schema fields are compared (not provenance, derived or store columns);
        missing equals missing.

        Parameters
        ----------
        centre : str
        version_a, version_b : int
            The older and the newer version (``a`` -> ``b``).
        table : {"patients", "samples"}

        Returns
        -------
        StoreDiff

        Examples
        --------
        >>> d = store.diff("ulm", 1, 2)  # doctest: +SKIP
        >>> d.n_added, d.n_removed, d.n_changed  # doctest: +SKIP
        """
        from harmonization.schema import load_schema

        if table not in RECORD_TABLES:
            raise StoreError(
                f"no record table '{table}'; expected one of {', '.join(RECORD_TABLES)}."
            )
        a = self._version_records(centre, version_a, table)
        b = self._version_records(centre, version_b, table)
        schemas = [
            s for s in (self._schema_of_version(centre, v) for v in (version_a, version_b)) if s
        ] or [load_schema()]
        key: tuple[str, ...] = ()
        fields: list[str] = []
        for schema in schemas:
            spec = schema.tables.get(table)
            if spec is None:
                continue
            key = key or tuple(k for k in spec.key if k != "centre")
            fields += [f for f in spec.fields if f not in fields]
        key = key or _DEFAULT_KEYS[table]
        present = set(a.columns) | set(b.columns)
        fields = [f for f in fields if f in present and f not in key and f != "centre"]
        for frame in (a, b):
            for column in (*key, *fields):
                if column not in frame:
                    frame[column] = None
        a.index = pd.Index(_record_keys(a, key))
        b.index = pd.Index(_record_keys(b, key))
        in_a, in_b = set(a.index), set(b.index)
        both = [k for k in b.index if k in in_a]
        common_a, common_b = a.loc[both], b.loc[both]
        parts: list[pd.DataFrame] = []
        any_change = np.zeros(len(both), dtype=bool)
        for position, f in enumerate(fields):
            differs = ~_same(common_a[f], common_b[f])
            any_change |= differs
            if not differs.any():
                continue
            part = pd.DataFrame({c: _objects(common_b[c])[differs] for c in key})
            part["field"] = f
            part["old"] = _objects(common_a[f])[differs]
            part["new"] = _objects(common_b[f])[differs]
            part["_record"] = np.flatnonzero(differs)
            part["_field"] = position
            parts.append(part)
        columns = [*key, "field", "old", "new"]
        if parts:
            changed = (
                pd.concat(parts, ignore_index=True)
                .sort_values(["_record", "_field"], kind="stable")[columns]
                .reset_index(drop=True)
            )
        else:
            changed = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return StoreDiff(
            centre=centre,
            table=table,
            version_a=int(version_a),
            version_b=int(version_b),
            key=key,
            added=_key_frame(b.loc[[k for k in b.index if k not in in_a]], key),
            removed=_key_frame(a.loc[[k for k in a.index if k not in in_b]], key),
            changed=changed,
            fields=tuple(fields),
            n_changed=int(any_change.sum()),
        )

    def _version_records(self, centre: str, version: int, table: str) -> pd.DataFrame:
        self.version_row(centre, version)
        if self._existing_columns(table) is None:
            return pd.DataFrame()
        return self._con.execute(
            f"SELECT * FROM {_quote(table)} WHERE centre = ? AND upload_version = ? "
            "ORDER BY source_row",
            [centre, version],
        ).df()

    def harmonised_tables(self, versions: Mapping[str, int] | None = None) -> list[HarmonisedTable]:
        """The stored records of the chosen versions as validated tables.

        Parameters
        ----------
        versions : mapping centre -> version, optional
            Default: every centre's latest accepted version.

        Returns
        -------
        list of HarmonisedTable
            One per (centre, table), in the order the versions were ingested (the
            cross-centre duplicate rule names the later centre), with the harmonised and
            provenance columns (the store's own columns removed), the upload's file, sheet
            and sha256, and ``column_of`` from the recorded mapping; what
            :func:`~harmonization.validate.validate_consortium` takes.
        """
        from types import MappingProxyType

        from harmonization.validate import HarmonisedTable

        chosen = (
            self.resolve_versions(list(versions), versions)
            if versions is not None
            else self.resolve_versions()
        )
        uploads = self.uploads().sort_values(["upload_id", "table_name"], kind="stable")
        chosen_rows = uploads.loc[
            [chosen.get(c) == v for c, v in zip(uploads["centre"], uploads["version"], strict=True)]
        ]
        out: list[HarmonisedTable] = []
        in_order = dict.fromkeys(
            zip(chosen_rows["centre"].astype(str), chosen_rows["version"].astype(int), strict=True)
        )
        for centre, version in in_order:
            column_of = self._column_of(centre, version)
            mine = chosen_rows.loc[
                (chosen_rows["centre"] == centre) & (chosen_rows["version"] == version)
            ]
            for _, row in mine.iterrows():
                table = str(row["table_name"])
                data = self._version_records(centre, version, table)
                data = data.drop(columns=[c for c in STORE_COLUMNS if c in data])
                out.append(
                    HarmonisedTable(
                        centre=centre,
                        table=table,
                        data=data.reset_index(drop=True),
                        file=str(row["file"]),
                        sha256=str(row["sha256"]),
                        sheet=str(row["sheet"] or ""),
                        column_of=MappingProxyType(column_of.get(table, {})),
                    )
                )
        return out

    def _column_of(self, centre: str, version: int) -> dict[str, dict[str, str]]:
        """table -> (field -> upload header), from the recorded mapping ({} if none)."""
        from harmonization.errors import HarmonizationError
        from harmonization.mapping import CONSTANT, CentreMapping
        from harmonization.schema import load_schema
        from harmonization.yamlio import YamlProblem, load_yaml

        text = self.mapping_text(centre, version)
        if text is None:
            return {}
        try:
            schema = self._schema_of_version(centre, version) or load_schema()
            mapping = CentreMapping.from_dict(load_yaml(text), schema=schema, where="<stored>")
        except (HarmonizationError, YamlProblem):
            return {}
        return {
            source.table: {
                c.field: c.column if c.column is not None else CONSTANT for c in source.columns
            }  # fmt: skip
            for source in mapping.sources
        }

    def consortium_report(
        self, versions: Mapping[str, int] | None = None, *, schema: Schema | None = None
    ) -> ValidationReport:
        """The cross-centre rules over the chosen versions (default: latest accepted).

        Runs :func:`~harmonization.validate.validate_consortium` (event-rate and positivity
        outliers, the same patient sent by two centres) on :meth:`harmonised_tables`.

        Parameters
        ----------
        versions : mapping centre -> version, optional
        schema : Schema, optional
            Default the schema the versions were ingested with (:meth:`schema_for`), else
            ``configs/schema.yaml``.

        Returns
        -------
        ValidationReport

        Examples
        --------
        >>> store.consortium_report().findings[["centre", "rule", "message"]]  # doctest: +SKIP
        """
        from harmonization.schema import load_schema
        from harmonization.validate import validate_consortium

        chosen = (
            self.resolve_versions(list(versions), versions)
            if versions is not None
            else self.resolve_versions()
        )
        if schema is None:
            schema = self.schema_for(chosen) or load_schema()
        return validate_consortium(self.harmonised_tables(chosen), schema=schema)


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_keys(frame: pd.DataFrame, key: Sequence[str]) -> list[str]:
    """One text key per record: the key values plus their occurrence number, so an id sent
    twice is matched first-to-first and second-to-second."""
    seen: dict[str, int] = {}
    out = []
    for row in frame[list(key)].itertuples(index=False, name=None):
        text = "\x1f".join("" if _plain(v) is None else str(v) for v in row)
        n = seen.get(text, 0)
        seen[text] = n + 1
        out.append(f"{text}\x1e{n}")
    return out


def _key_frame(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: _objects(frame[c]) for c in key}, columns=list(key))


def _objects(series: pd.Series) -> np.ndarray:
    """Plain Python values (missing -> None) as an object array."""
    out = np.empty(len(series), dtype=object)
    out[:] = [_plain(v) for v in series.tolist()]
    return out


def _plain(value: Any) -> Any:
    """A cell as a plain Python value (missing -> None; numpy scalars unwrapped)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(old: pd.Series, new: pd.Series) -> np.ndarray:
    """Cell-wise equality, missing equal to missing."""
    a, b = _objects(old), _objects(new)
    missing_a = np.array([v is None for v in a], dtype=bool)
    missing_b = np.array([v is None for v in b], dtype=bool)
    equal = np.zeros(len(a), dtype=bool)
    present = ~missing_a & ~missing_b
    if present.any():
        equal[present] = np.array(
            [bool(x == y) for x, y in zip(a[present], b[present], strict=True)], dtype=bool
        )
    return equal | (missing_a & missing_b)


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
