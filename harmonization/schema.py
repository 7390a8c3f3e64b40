"""The consortium schema: ``configs/schema.yaml`` compiled into frozen objects.

The schema is data. :func:`load_schema` parses it once into a :class:`Schema`; everything
downstream (mapping, validation, the store) works from that object and never sees the raw
YAML. The :class:`Reason` enum names every reason a row can leave the pipeline, so the
exclusion flow can always be produced.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import enum
import functools
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from harmonization.errors import SchemaError
from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text

FieldType = Literal["string", "integer", "number", "boolean", "category", "date"]
FIELD_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "category", "date")
_FIELD_KEYS = {
    "type",
    "required",
    "codes",
    "min",
    "max",
    "warn_min",
    "warn_max",
    "unit",
    "settings",
    "description",
}

DEFAULT_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "configs" / "schema.yaml"


class Reason(enum.StrEnum):
    """Why a row (or patient) leaves the pipeline. Feeds the exclusion flow."""

    BLOCKING_ERROR = "blocking validation error"
    DUPLICATE_ID = "duplicate patient id"
    SUPERSEDED = "superseded by a later upload version"
    CENTRE_NOT_SELECTED = "centre not selected"
    SETTING = "outside the cohort's setting"
    MISSING_MARKER = "marker missing"
    MISSING_ENDPOINT = "endpoint missing"
    MISSING_COVARIATE = "covariate missing (complete-case)"
    COHORT_RULE = "excluded by a cohort rule"
    NO_BASELINE_SAMPLE = "no baseline sample"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a schema table."""

    name: str
    type: FieldType
    required: bool = False
    codes: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    warn_min: float | None = None
    warn_max: float | None = None
    unit: str | None = None
    settings: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A schema table: its key and its fields in order."""

    name: str
    key: tuple[str, ...]
    fields: MappingProxyType[str, FieldSpec]

    def field(self, name: str) -> FieldSpec:
        """Return the field ``name``; raise :class:`SchemaError` suggesting a close name."""
        try:
            return self.fields[name]
        except KeyError:
            raise SchemaError(
                f"'{name}' is not a field of table '{self.name}'{did_you_mean(name, self.fields)}."
            ) from None


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """How ``<name>_months`` / ``<name>_event`` derive from dates."""

    name: str
    event_dates: tuple[str, ...]
    death_cause: str | None = None


@dataclass(frozen=True, slots=True)
class Schema:
    """The compiled consortium schema."""

    name: str
    version: int
    tables: MappingProxyType[str, TableSpec]
    derived: MappingProxyType[str, Any]
    origin: MappingProxyType[str, str]
    endpoints: tuple[EndpointSpec, ...]
    path: str = ""
    sha256: str = field(default="", compare=False)
    text: str = field(default="", compare=False, repr=False)
    earliest_date: str | None = None

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(
                f"the schema has no table '{name}'{did_you_mean(name, self.tables)}; "
                f"tables are {', '.join(self.tables)}."
            ) from None

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.endpoints)


def did_you_mean(name: str, choices: Any) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{where}: expected a number, got {value!r}.")
    return float(value)


def _field(name: str, raw: Any, where: str) -> FieldSpec:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: expected a mapping of field keys, got {raw!r}.")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise SchemaError(
            f"{where}: unknown key '{key}'{did_you_mean(key, _FIELD_KEYS)}; "
            f"allowed keys are {', '.join(sorted(_FIELD_KEYS))}."
        )
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        raise SchemaError(
            f"{where}: 'type' must be one of {', '.join(FIELD_TYPES)}; got {ftype!r}."
        )
    codes = tuple(str(c) for c in raw.get("codes", ()) or ())
    if ftype == "category" and not codes:
        raise SchemaError(f"{where}: a category field needs 'codes' (its allowed values).")
    return FieldSpec(
        name=name,
        type=ftype,
        required=bool(raw.get("required", False)),
        codes=codes,
        min=_number(raw.get("min"), f"{where}.min"),
        max=_number(raw.get("max"), f"{where}.max"),
        warn_min=_number(raw.get("warn_min"), f"{where}.warn_min"),
        warn_max=_number(raw.get("warn_max"), f"{where}.warn_max"),
        unit=raw.get("unit"),
        settings=tuple(raw.get("settings", ()) or ()),
        description=str(raw.get("description", "")),
    )


def load_schema(path: str | Path | None = None) -> Schema:
    """Load and compile the consortium schema.

    Parameters
    ----------
    path : str or Path, optional
        The schema YAML; default ``configs/schema.yaml`` of this checkout.

    Returns
    -------
    Schema
        Frozen; raises :class:`~harmonization.errors.SchemaError` naming the offending key.

    Examples
    --------
    >>> schema = load_schema()
    >>> schema.table("patients").field("ctc_count").type
    'integer'
    """
    path = Path(path) if path is not None else DEFAULT_SCHEMA_PATH
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise SchemaError(f"cannot read the schema file {path}: {exc.strerror}.") from None
    return _load_schema(str(path), stamp)


@functools.lru_cache(maxsize=16)
def _load_schema(name: str, stamp: int) -> Schema:
    """Parse a schema file once per (path, modification time): the Schema is immutable."""
    path = Path(name)
    try:
        text = read_yaml_text(path)
    except OSError as exc:
        raise SchemaError(f"cannot read the schema file {path}: {exc.strerror}.") from None
    except YamlProblem as exc:
        raise SchemaError(f"{path}: {exc}.") from None
    return parse_schema(text, path=str(path))


def load_schema_text(text: str, *, path: str = "<schema>") -> Schema:
    """Compile a schema from its YAML text (e.g. the text a store recorded at ingest).

    Examples
    --------
    >>> from harmonization.schema import DEFAULT_SCHEMA_PATH
    >>> schema = load_schema_text(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8"))
    >>> "ctc_count" in schema.table("patients").fields
    True
    """
    return _parse_schema_cached(text, path)


@functools.lru_cache(maxsize=16)
def _parse_schema_cached(text: str, path: str) -> Schema:
    return parse_schema(text, path=path)


def parse_schema(text: str, *, path: str = "<schema>") -> Schema:
    """Compile schema YAML text into a :class:`Schema` (see :func:`load_schema`)."""
    import hashlib

    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        line = f" line {exc.line}" if exc.line else ""
        raise SchemaError(f"{path}{line}: {exc}.") from None
    if not isinstance(doc, dict) or "tables" not in doc:
        raise SchemaError(f"{path}: expected a mapping with a 'tables' key.")
    if not isinstance(doc["tables"], dict):
        raise SchemaError(f"{path}: 'tables' must map table names to their fields.")
    tables: dict[str, TableSpec] = {}
    for tname, traw in doc["tables"].items():
        where = f"{path} tables.{tname}"
        if not isinstance(traw, dict) or "fields" not in traw:
            raise SchemaError(f"{where}: expected 'key' and 'fields'.")
        fields = {
            fname: _field(fname, fraw, f"{where}.fields.{fname}")
            for fname, fraw in traw["fields"].items()
        }
        key = tuple(traw.get("key", ()))
        for k in key:
            if k not in fields:
                raise SchemaError(f"{where}.key: '{k}' is not a field of the table.")
        tables[tname] = TableSpec(name=tname, key=key, fields=MappingProxyType(fields))
    endpoints_raw = doc.get("endpoints", {}) or {}
    endpoints = tuple(
        EndpointSpec(
            name=name,
            event_dates=tuple(spec.get("events", ())),
            death_cause=spec.get("death_cause"),
        )
        for name, spec in (endpoints_raw.get("definitions", {}) or {}).items()
    )
    patients = tables.get("patients")
    for ep in endpoints:
        for date_field in ep.event_dates:
            if patients is None or date_field not in patients.fields:
                raise SchemaError(
                    f"{path} endpoints.definitions.{ep.name}: '{date_field}' is not a "
                    "field of table 'patients'."
                )
    dates_raw = doc.get("dates", {}) or {}
    if not isinstance(dates_raw, dict) or set(dates_raw) - {"earliest"}:
        raise SchemaError(f"{path} dates: expected 'earliest: YYYY-MM-DD' only; got {dates_raw!r}.")
    earliest = dates_raw.get("earliest")
    if earliest is not None:
        try:
            earliest = str(_dt.date.fromisoformat(str(earliest)))
        except ValueError:
            raise SchemaError(
                f"{path} dates.earliest: expected a date like 1950-01-01; got {earliest!r}."
            ) from None
    return Schema(
        name=str(doc.get("name", "")),
        version=int(doc.get("version", 1)),
        tables=MappingProxyType(tables),
        derived=MappingProxyType(dict(doc.get("derived", {}) or {})),
        origin=MappingProxyType(dict(endpoints_raw.get("origin", {}) or {})),
        endpoints=endpoints,
        path=str(path),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        text=text,
        earliest_date=earliest,
    )
