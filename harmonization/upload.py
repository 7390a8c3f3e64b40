"""One upload through the harmonisation stages: read -> map -> validate.

:func:`check_upload` is what ``pooled validate`` and ``pooled ingest`` run for one file. It
raises :class:`~harmonization.errors.HarmonizationError` only when the file or the mapping
cannot be used at all; every problem in the *data* is a finding in the report.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from harmonization.io import RawUpload
from harmonization.mapping import CentreMapping, apply_mapping, read_source
from harmonization.schema import Schema, load_schema
from harmonization.validate import HarmonisedTable, ValidationReport, validate


@dataclass(frozen=True, slots=True)
class CheckedUpload:
    """An upload read, mapped and validated: its tables, its report, and the raw sheets."""

    path: str
    mapping: CentreMapping
    raw: tuple[RawUpload, ...]
    tables: tuple[HarmonisedTable, ...]
    report: ValidationReport

    @property
    def centre(self) -> str:
        return self.mapping.centre

    @property
    def sha256(self) -> str:
        return self.raw[0].sha256


def check_upload(
    path: str | Path,
    mapping: CentreMapping,
    *,
    schema: Schema | None = None,
    today: _dt.date | None = None,
) -> CheckedUpload:
    """Read every source of ``mapping`` from ``path``, map it and validate it.

    Parameters
    ----------
    path : str or Path
        The centre's upload file.
    mapping : CentreMapping
        The centre's mapping (``CentreMapping.from_yaml``).
    schema : Schema, optional
        Default ``configs/schema.yaml``.
    today : date, optional
        The validation day (dates after it are ``future_date`` findings); default today.

    Returns
    -------
    CheckedUpload

    Raises
    ------
    UploadError, MappingError
        The file cannot be read, or the mapping does not fit it.

    Examples
    --------
    >>> mapping = CentreMapping.from_yaml("configs/centres/ulm.yaml")  # doctest: +SKIP
    >>> checked = check_upload("uploads/ulm.xlsx", mapping)  # doctest: +SKIP
    >>> checked.report.has_errors  # doctest: +SKIP
    """
    schema = schema or load_schema()
    raws: list[RawUpload] = []
    tables: list[HarmonisedTable] = []
    report: ValidationReport | None = None
    # patients first: samples are checked against the patients of the same upload
    ordered = sorted(mapping.sources, key=lambda s: s.table != "patients")
    patients: HarmonisedTable | None = None
    for source in ordered:
        raw = read_source(path, source)
        raws.append(raw)
        mapped = apply_mapping(raw, mapping, source, schema=schema)
        part, table = validate(mapped, mapping, schema=schema, today=today, patients=patients)
        if source.table == "patients":
            patients = table
        tables.append(table)
        report = part if report is None else report.merge(part)
    assert report is not None  # a mapping has at least one source
    return CheckedUpload(
        path=str(path), mapping=mapping, raw=tuple(raws), tables=tuple(tables), report=report
    )
