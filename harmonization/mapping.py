"""Centre mappings: ``CentreMapping.from_yaml`` and ``apply_mapping -> MappedTable``.

A centre mapping (one YAML file per centre, format in ``configs/centres/README.md``) says how
the centre's upload maps onto the schema. :func:`apply_mapping` renames, recodes, converts
units and parses types, vectorised over columns. It never drops a row and never raises for
bad *data*: a cell it cannot convert becomes missing in ``values`` and a row in ``issues``
(rule ``type``, ``code`` or ``integer``) that validation turns into a finding. Bad
*configuration* (a malformed mapping, a column that is not in the upload) raises
:class:`MappingError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from harmonization.errors import MappingError
from harmonization.io import RawUpload, read_upload
from harmonization.schema import FieldSpec, Schema, did_you_mean, load_schema
from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text

DEFAULT_MISSING_CODES: tuple[str, ...] = ("", "na", "n/a", "nan", "none", "null", ".")
BOOLEAN_WORDS: MappingProxyType[str, bool] = MappingProxyType(
    {
        "1": True, "0": False, "1.0": True, "0.0": False,
        "true": True, "false": False, "yes": True, "no": False, "y": True, "n": False,
        "ja": True, "nein": False, "j": True,
        "pos": True, "neg": False, "positive": True, "negative": False,
        "positiv": True, "negativ": False, "+": True, "-": False,
    }
)  # fmt: skip
UNIT_FACTORS: MappingProxyType[str, MappingProxyType[str, float]] = MappingProxyType(
    {
        "mm": MappingProxyType({"mm": 1.0, "cm": 10.0}),
        "months": MappingProxyType(
            {"months": 1.0, "days": 1 / 30.4375, "weeks": 7 / 30.4375, "years": 12.0}
        ),
        "days": MappingProxyType({"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}),
        "years": MappingProxyType({"years": 1.0, "months": 1 / 12}),
        "percent": MappingProxyType({"percent": 1.0, "fraction": 100.0}),
        "ml": MappingProxyType({"ml": 1.0}),
    }
)
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_DURATION_FIELDS_SUFFIX = "_months"
_TOP_KEYS = {
    "centre", "description", "missing_codes", "date_format", "decimal", "delivers",
    "duration_unit", "reported", "sources", "encoding", "delimiter",
}  # fmt: skip
_SOURCE_KEYS = {
    "table", "sheet", "header_row", "encoding", "delimiter", "columns", "missing_codes",
    "date_format", "decimal", "file",
}  # fmt: skip
_COLUMN_KEYS = {
    "column", "value", "codes", "unit", "scale", "date_format", "decimal", "missing_codes",
}  # fmt: skip
CONSTANT = "(constant)"


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How one schema field is obtained from an upload."""

    field: str
    column: str | None = None
    value: Any = None
    codes: MappingProxyType[str, Any] = dataclass_field(
        default_factory=lambda: MappingProxyType({})
    )
    unit: str | None = None
    scale: float | None = None
    date_format: str | None = None
    decimal: str | None = None
    missing_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """One table of an upload (a sheet of an xlsx, or a whole csv/sav/dta)."""

    table: str
    columns: tuple[ColumnMapping, ...]
    sheet: str | None = None
    header_row: int = 1
    encoding: str | None = None
    delimiter: str | None = None
    missing_codes: tuple[str, ...] = ()
    date_format: str = "iso"
    decimal: str = "."
    file: str | None = None

    def column_for(self, field_name: str) -> ColumnMapping | None:
        for column in self.columns:
            if column.field == field_name:
                return column
        return None


@dataclass(frozen=True, slots=True)
class CentreMapping:
    """A centre's mapping onto the schema; build with :meth:`from_yaml`."""

    centre: str
    sources: tuple[SourceMapping, ...]
    description: str = ""
    delivers: str = "dates"
    duration_unit: str = "months"
    reported: MappingProxyType[str, Any] = dataclass_field(
        default_factory=lambda: MappingProxyType({})
    )
    path: str = ""
    text: str = dataclass_field(default="", compare=False, repr=False)

    @property
    def sha256(self) -> str:
        """Hash of the mapping's YAML text (``""`` for a mapping built from a dict)."""
        import hashlib

        return hashlib.sha256(self.text.encode("utf-8")).hexdigest() if self.text else ""

    @classmethod
    def from_yaml(cls, path: str | Path, schema: Schema | None = None) -> CentreMapping:
        """Load and check a centre mapping against the schema.

        Raises
        ------
        MappingError
            Naming the file, the key, what was expected and what was found.

        Examples
        --------
        >>> mapping = CentreMapping.from_yaml("configs/centres/ulm.yaml")  # doctest: +SKIP
        """
        path = Path(path)
        try:
            text = read_yaml_text(path)
        except OSError as exc:
            raise MappingError(
                f"cannot read the centre mapping {path}: {exc.strerror or exc}."
            ) from None
        except YamlProblem as exc:
            raise MappingError(f"{path}: {exc}.") from None
        try:
            doc = load_yaml(text)
        except YamlProblem as exc:
            line = f" line {exc.line}" if exc.line else ""
            raise MappingError(
                f"{path}{line}: {exc}; see configs/centres/README.md."
            ) from None
        from dataclasses import replace

        return replace(cls.from_dict(doc, schema=schema, where=str(path)), text=text)

    @classmethod
    def from_dict(
        cls, doc: Any, *, schema: Schema | None = None, where: str = "<mapping>"
    ) -> CentreMapping:
        """Build from an already parsed YAML document (see :meth:`from_yaml`)."""
        schema = schema or load_schema()
        if not isinstance(doc, dict):
            raise MappingError(
                f"{where}: expected a mapping with 'centre' and 'sources'; got {type(doc).__name__}."
            )
        _check_keys(doc, _TOP_KEYS, where)
        centre = doc.get("centre")
        if not isinstance(centre, str | int) or not str(centre).strip():
            raise MappingError(f"{where}: 'centre' must name the centre (e.g. 'centre: ulm').")
        sources_raw = doc.get("sources")
        if not isinstance(sources_raw, list) or not sources_raw:
            raise MappingError(f"{where}: 'sources' must be a list of at least one table.")
        delivers = doc.get("delivers", "dates")
        if delivers not in ("dates", "durations"):
            raise MappingError(
                f"{where}: 'delivers' must be 'dates' or 'durations'; got {delivers!r}."
            )
        duration_unit = doc.get("duration_unit", "months")
        if duration_unit not in UNIT_FACTORS["months"]:
            raise MappingError(
                f"{where}: 'duration_unit' must be one of "
                f"{', '.join(UNIT_FACTORS['months'])}; got {duration_unit!r}."
            )
        defaults = {
            "missing_codes": _codes_list(doc.get("missing_codes", []), f"{where}.missing_codes"),
            "date_format": str(doc.get("date_format", "iso")),
            "decimal": str(doc.get("decimal", ".")),
            "encoding": doc.get("encoding"),
            "delimiter": doc.get("delimiter"),
        }
        sources = tuple(
            _source(raw, schema, defaults, duration_unit, f"{where} sources[{i}]")
            for i, raw in enumerate(sources_raw)
        )
        reported = doc.get("reported", {}) or {}
        if not isinstance(reported, dict):
            raise MappingError(f"{where}: 'reported' must be a mapping; got {reported!r}.")
        return cls(
            centre=str(centre).strip(),
            sources=sources,
            description=str(doc.get("description", "")),
            delivers=delivers,
            duration_unit=duration_unit,
            reported=MappingProxyType(reported),
            path=where,
        )

    def source(self, table: str) -> SourceMapping | None:
        for source in self.sources:
            if source.table == table:
                return source
        return None


def _check_keys(doc: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        key = unknown[0]
        raise MappingError(
            f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; "
            f"allowed keys are {', '.join(sorted(allowed))}."
        )


def _codes_list(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MappingError(f"{where}: expected a list of codes; got {raw!r}.")
    return tuple(_text(v) for v in raw)


def _text(value: Any) -> str:
    """Canonical text of a cell or code for comparisons: trimmed, lower case, 1.0 -> 1."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _source(
    raw: Any, schema: Schema, defaults: dict[str, Any], duration_unit: str, where: str
) -> SourceMapping:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping with 'table' and 'columns'.")
    _check_keys(raw, _SOURCE_KEYS, where)
    table_name = raw.get("table", "patients")
    if table_name not in schema.tables:
        raise MappingError(
            f"{where}: 'table' must be one of {', '.join(schema.tables)}; got {table_name!r}"
            f"{did_you_mean(table_name, schema.tables)}."
        )
    table = schema.tables[table_name]
    header_row = raw.get("header_row", 1)
    if not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 1:
        raise MappingError(
            f"{where}: 'header_row' must be a whole number >= 1; got {header_row!r}."
        )
    columns_raw = raw.get("columns")
    if not isinstance(columns_raw, dict) or not columns_raw:
        raise MappingError(f"{where}: 'columns' must map schema fields to upload columns.")
    columns = []
    for name, spec in columns_raw.items():
        if name not in table.fields:
            raise MappingError(
                f"{where}.columns: '{name}' is not a field of table '{table_name}' in "
                f"{schema.path or 'the schema'}{did_you_mean(name, table.fields)}."
            )
        columns.append(
            _column(name, spec, table.fields[name], duration_unit, f"{where}.columns.{name}")
        )
    return SourceMapping(
        table=table_name,
        columns=tuple(columns),
        sheet=None if raw.get("sheet") is None else str(raw["sheet"]),
        header_row=header_row,
        encoding=raw.get("encoding", defaults["encoding"]),
        delimiter=raw.get("delimiter", defaults["delimiter"]),
        missing_codes=defaults["missing_codes"]
        + _codes_list(raw.get("missing_codes", []), f"{where}.missing_codes"),
        date_format=str(raw.get("date_format", defaults["date_format"])),
        decimal=str(raw.get("decimal", defaults["decimal"])),
        file=raw.get("file"),
    )


def _column(
    name: str, spec: Any, field_spec: FieldSpec, duration_unit: str, where: str
) -> ColumnMapping:
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        spec = {"column": str(spec)}
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected an upload column name or a mapping; got {spec!r}.")
    _check_keys(spec, _COLUMN_KEYS, where)
    if ("column" in spec) == ("value" in spec):
        raise MappingError(f"{where}: give exactly one of 'column' (upload header) or 'value'.")
    codes = spec.get("codes", {}) or {}
    if not isinstance(codes, dict):
        raise MappingError(f"{where}.codes: expected upload value -> schema code pairs.")
    unit = spec.get("unit")
    if unit is None and name.endswith(_DURATION_FIELDS_SUFFIX) and field_spec.unit == "months":
        unit = duration_unit
    if unit is not None:
        factors = UNIT_FACTORS.get(field_spec.unit or "")
        if factors is None or unit not in factors:
            allowed = ", ".join(factors) if factors else "none (the field has no unit)"
            raise MappingError(
                f"{where}.unit: '{unit}' cannot be converted to {field_spec.unit or 'this field'}; "
                f"allowed: {allowed}."
            )
    scale = spec.get("scale")
    if scale is not None and (not isinstance(scale, int | float) or isinstance(scale, bool)):
        raise MappingError(f"{where}.scale: expected a number; got {scale!r}.")
    return ColumnMapping(
        field=name,
        column=None if "column" not in spec else str(spec["column"]),
        value=spec.get("value"),
        codes=MappingProxyType({_text(k): v for k, v in codes.items()}),
        unit=unit,
        scale=None if scale is None else float(scale),
        date_format=spec.get("date_format"),
        decimal=spec.get("decimal"),
        missing_codes=_codes_list(spec.get("missing_codes", []), f"{where}.missing_codes"),
    )


@dataclass(frozen=True, slots=True)
class MappedTable:
    """An upload table on the schema's field names, before validation.

    Attributes
    ----------
    centre, table, file, sheet : where it came from.
    values : DataFrame with one column per mapped schema field, typed (string and category as
        text, integer and number as float, boolean as pandas ``boolean``, date as
        ``datetime64``); cells that could not be converted are missing here.
    raw : the original cell text for the same fields (for findings), ``""`` where empty.
    source_rows : row numbers as the person sees them in their file, one per row.
    column_of : schema field -> the upload's header (or ``"(constant)"``).
    issues : cells that could not be converted: ``row`` (position), ``field``, ``value``,
        ``rule`` (``type``, ``code``, ``integer``), ``message``.
    unmapped_columns : upload headers that no field maps.
    missing_required : required schema fields the mapping does not provide.
    blank_rows : fully blank rows in the upload (counted, not data).
    sha256 : the upload's hash.
    """

    centre: str
    table: str
    file: str
    sheet: str
    values: pd.DataFrame
    raw: pd.DataFrame
    source_rows: np.ndarray
    column_of: MappingProxyType[str, str]
    issues: pd.DataFrame
    unmapped_columns: tuple[str, ...]
    missing_required: tuple[str, ...]
    blank_rows: int
    sha256: str
    delivers: str = "dates"
    header_row: int = 1

    @property
    def n_rows(self) -> int:
        return int(len(self.values))


ISSUE_COLUMNS = ("row", "field", "value", "rule", "message")


def _resolve_column(raw: RawUpload, wanted: str, where: str) -> str:
    if wanted in raw.columns:
        return wanted
    folded = {c.strip().lower(): c for c in raw.columns}
    if wanted.strip().lower() in folded:
        return folded[wanted.strip().lower()]
    sheet = f", sheet '{raw.sheet}'" if raw.sheet else ""
    raise MappingError(
        f"{where}: the upload {raw.file}{sheet} has no column '{wanted}'"
        f"{did_you_mean(wanted, raw.columns)}. Its columns are: "
        f"{', '.join(raw.columns[:30])}{' ...' if len(raw.columns) > 30 else ''}. "
        "Fix the column name in the centre mapping."
    )


def _cell_text(series: pd.Series) -> pd.Series:
    """Original cell text for reports: ``""`` for empty, 1.0 written as 1, dates as ISO."""

    def one(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)

    return series.map(one).astype(object)


def apply_mapping(
    raw: RawUpload,
    mapping: CentreMapping,
    source: SourceMapping | None = None,
    *,
    schema: Schema | None = None,
) -> MappedTable:
    """Map one upload table onto the schema.

    Parameters
    ----------
    raw : RawUpload
        The table as read by :func:`harmonization.io.read_upload`.
    mapping : CentreMapping
        The centre's mapping.
    source : SourceMapping, optional
        Which of the mapping's sources this table is; default the first.
    schema : Schema, optional
        Default :func:`harmonization.schema.load_schema`.

    Returns
    -------
    MappedTable
        Every row of ``raw``, in order; conversion problems listed in ``issues``.

    Raises
    ------
    MappingError
        The mapping names a column the upload does not have.

    Examples
    --------
    >>> mapped = apply_mapping(read_upload("ulm.xlsx", sheet="Patienten"), mapping)  # doctest: +SKIP
    """
    schema = schema or load_schema()
    source = source or mapping.sources[0]
    table = schema.table(source.table)
    where = f"{mapping.path} (table {source.table})"
    n = raw.n_rows
    values: dict[str, Any] = {}
    raws: dict[str, pd.Series] = {}
    column_of: dict[str, str] = {}
    issues: list[pd.DataFrame] = []
    used: set[str] = set()
    for column in source.columns:
        spec = table.fields[column.field]
        if column.column is not None:
            header = _resolve_column(raw, column.column, where)
            used.add(header)
            cells = raw.cells[header].reset_index(drop=True)
            column_of[column.field] = header
        else:
            cells = pd.Series([column.value] * n, dtype=object)
            column_of[column.field] = CONSTANT
        raws[column.field] = _cell_text(cells)
        converted, problems = _convert(cells, column, spec, source)
        values[column.field] = converted
        if problems is not None and len(problems):
            issues.append(problems)
    frame = pd.DataFrame(values, index=pd.RangeIndex(n))
    frame.insert(0, "centre", pd.Series([mapping.centre] * n, dtype=object))
    column_of["centre"] = CONSTANT
    raws["centre"] = pd.Series([mapping.centre] * n, dtype=object)
    raw_frame = pd.DataFrame(raws, index=pd.RangeIndex(n))
    issue_frame = (
        pd.concat(issues, ignore_index=True)
        if issues
        else pd.DataFrame({c: pd.Series(dtype=object) for c in ISSUE_COLUMNS})
    )
    provided = set(column_of)
    missing_required = tuple(
        name for name, spec in table.fields.items() if spec.required and name not in provided
    )
    return MappedTable(
        centre=mapping.centre,
        table=source.table,
        file=raw.file,
        sheet=raw.sheet,
        values=frame,
        raw=raw_frame,
        source_rows=raw.source_rows,
        column_of=MappingProxyType(column_of),
        issues=issue_frame,
        unmapped_columns=tuple(c for c in raw.columns if c not in used),
        missing_required=missing_required,
        blank_rows=raw.blank_rows,
        sha256=raw.sha256,
        delivers=mapping.delivers,
        header_row=raw.header_row,
    )


def read_and_map(
    path: str | Path, mapping: CentreMapping, *, schema: Schema | None = None
) -> list[MappedTable]:
    """Read every source of ``mapping`` from the upload at ``path`` and map it."""
    schema = schema or load_schema()
    return [
        apply_mapping(read_source(path, source), mapping, source, schema=schema)
        for source in mapping.sources
    ]


def read_source(path: str | Path, source: SourceMapping) -> RawUpload:
    """Read the sheet (or csv/sav/dta table) a mapping source names, as its options say."""
    return read_upload(
        path,
        sheet=source.sheet,
        header_row=source.header_row,
        encoding=source.encoding,
        delimiter=source.delimiter,
    )


def _problems(
    mask: np.ndarray, cells: pd.Series, name: str, rule: str, message: str
) -> pd.DataFrame:
    rows = np.flatnonzero(mask)
    return pd.DataFrame(
        {
            "row": rows,
            "field": name,
            "value": _cell_text(cells.iloc[rows]).to_numpy(),
            "rule": rule,
            "message": message,
        }
    )


def _convert(
    cells: pd.Series, column: ColumnMapping, spec: FieldSpec, source: SourceMapping
) -> tuple[pd.Series, pd.DataFrame | None]:
    """Convert one column of cells to the field's type; return values and problems."""
    text = cells.map(_text)
    missing_codes = (
        set(DEFAULT_MISSING_CODES) | set(source.missing_codes) | set(column.missing_codes)
    )
    missing = text.isin(missing_codes).to_numpy()
    if column.codes:
        coded = text.map(lambda t: column.codes.get(t, _UNSET))
        hit = (coded != _UNSET).to_numpy() & ~missing
        cells = cells.where(~hit, coded)
        # a code mapped to null means missing
        null_code = hit & cells.isna().to_numpy()
        missing |= null_code
        text = cells.map(_text)
    present = ~missing
    kind = spec.type
    if kind in ("string", "category"):
        out = _where_present(present, cells.map(_plain_text))
        if kind == "category":
            allowed = {c.lower(): c for c in spec.codes}
            canon = text.map(lambda t: allowed.get(t))
            out = _where_present(present, canon)
            bad = present & canon.isna().to_numpy()
            if bad.any():
                out[bad] = None
                return out, _problems(
                    bad, cells, spec.name, "code",
                    f"'{spec.name}' must be one of {', '.join(spec.codes)}"
                    + (" (add the centre's code under 'codes' in its mapping)"),
                )  # fmt: skip
        return out, None
    if kind == "boolean":
        words = dict(BOOLEAN_WORDS)
        flags = text.map(lambda t: words.get(t))
        bad = present & flags.isna().to_numpy()
        out = _where_present(present & ~bad, flags).astype("boolean")
        problems = (
            _problems(bad, cells, spec.name, "code",
                      f"'{spec.name}' must be yes/no (1/0, ja/nein, pos/neg, true/false)")
            if bad.any() else None
        )  # fmt: skip
        return out, problems
    if kind in ("integer", "number"):
        numbers = _to_number(cells, column.decimal or source.decimal)
        bad = present & np.isnan(numbers)
        numbers = np.where(present & ~bad, numbers, np.nan)
        factor = 1.0
        if column.unit is not None and spec.unit is not None:
            factor = UNIT_FACTORS[spec.unit][column.unit]
        if column.scale is not None:
            factor *= column.scale
        found: list[pd.DataFrame] = []
        if bad.any():
            found.append(
                _problems(bad, cells, spec.name, "type", f"'{spec.name}' must be a number")
            )
        if kind == "integer":
            fractional = ~np.isnan(numbers) & (np.abs(numbers - np.round(numbers)) > 1e-9)
            if fractional.any():
                found.append(
                    _problems(fractional, cells, spec.name, "integer",
                              f"'{spec.name}' must be a whole number")
                )  # fmt: skip
        if factor != 1.0:
            numbers = numbers * factor
        out = pd.Series(numbers, dtype="float64")
        return out, (pd.concat(found, ignore_index=True) if found else None)
    if kind == "date":
        fmt = column.date_format or source.date_format
        dates = _to_date(cells, fmt)
        bad = present & dates.isna().to_numpy()
        out = dates.where(pd.Series(present & ~bad), pd.NaT)
        example = {"excel": "an Excel date or serial number", "iso": "2019-12-31"}.get(
            fmt, pd.Timestamp("2019-12-31").strftime(fmt)
        )
        problems = (
            _problems(bad, cells, spec.name, "type",
                      f"'{spec.name}' must be a date like {example}")
            if bad.any() else None
        )  # fmt: skip
        return out, problems
    raise AssertionError(f"unhandled field type {kind}")  # the schema loader forbids this


def _where_present(present: np.ndarray, values: pd.Series) -> pd.Series:
    """``values`` as an object Series (fresh index) with ``None`` where not ``present``."""
    out = pd.Series(values.to_numpy(dtype=object), dtype=object)
    out[~present] = None
    return out


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _plain_text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _to_number(cells: pd.Series, decimal: str) -> np.ndarray:
    """Numbers from cells: numeric cells as they are, text parsed with the decimal sign."""
    numeric = pd.to_numeric(cells.where(cells.map(_is_number)), errors="coerce")
    text_mask = cells.map(lambda v: isinstance(v, str)).to_numpy()
    if text_mask.any():
        text = cells[text_mask].astype(str).str.strip().str.replace(" ", "", regex=False)
        if decimal != ".":
            text = text.str.replace(".", "", regex=False).str.replace(decimal, ".", regex=False)
        numeric[text_mask] = pd.to_numeric(text, errors="coerce")
    return numeric.to_numpy(dtype="float64")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _to_date(cells: pd.Series, fmt: str) -> pd.Series:
    """Dates from datetime cells, Excel serials or text in the given format."""
    out = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[ns]")
    is_datetime = cells.map(lambda v: hasattr(v, "year") and hasattr(v, "month")).to_numpy()
    if is_datetime.any():
        out[is_datetime] = pd.to_datetime(cells[is_datetime].astype(object), errors="coerce")
    is_number = cells.map(_is_number).to_numpy()
    if is_number.any():
        serial = pd.to_numeric(cells[is_number], errors="coerce").astype(float)
        ok = (serial > 0) & (serial < 2958466)  # Excel's range: 1900-01-01 .. 9999-12-31
        days = pd.to_timedelta(serial.where(ok).round(), unit="D")
        out[is_number] = (EXCEL_EPOCH + days).to_numpy()
        # 1900 leap-year bug: serials below 61 are one day off in Excel; not realistic here.
    is_text = cells.map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy()
    if is_text.any():
        text = cells[is_text].astype(str).str.strip()
        if fmt == "excel":
            serial = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
            ok = (serial > 0) & (serial < 2958466)
            parsed = EXCEL_EPOCH + pd.to_timedelta(serial.where(ok).round(), unit="D")
            fallback = pd.to_datetime(text, format="ISO8601", errors="coerce")
            out[is_text] = parsed.fillna(fallback).to_numpy()
        elif fmt == "iso":
            out[is_text] = pd.to_datetime(text, format="ISO8601", errors="coerce").to_numpy()
        else:
            out[is_text] = pd.to_datetime(text, format=fmt, errors="coerce").to_numpy()
    return out
