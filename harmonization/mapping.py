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
from harmonization.io import RawUpload, ReadNote, read_upload
from harmonization.schema import FieldSpec, Schema, did_you_mean, load_schema
from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text

DEFAULT_MISSING_CODES: tuple[str, ...] = ("", "na", "n/a", "nan", "none", "null", ".")
BOOLEAN_WORDS: MappingProxyType[str, bool] = MappingProxyType(
    {
        "1": True, "0": False, "1.0": True, "0.0": False,
        "true": True, "false": False, "yes": True, "no": False, "y": True, "n": False,
        "ja": True, "nein": False, "j": True, "nee": False,
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
    "duration_unit", "reported", "sources", "encoding", "delimiter", "origin",
}  # fmt: skip
_SOURCE_KEYS = {
    "table", "sheet", "header_row", "encoding", "delimiter", "columns", "missing_codes",
    "date_format", "decimal", "file", "checks",
}  # fmt: skip
_CHECK_KEYS = {"expr", "message", "severity", "types"}
_COLUMN_KEYS = {
    "column", "value", "expr", "types", "codes", "unit", "scale", "date_format", "decimal",
    "missing_codes",
}  # fmt: skip
#: How an expression may be told to read one of its input columns (``types:``).
INPUT_TYPES: tuple[str, ...] = ("number", "text", "date")
#: Accepted spellings of the decimal sign.
DECIMAL_SIGNS: MappingProxyType[str, str] = MappingProxyType(
    {".": ".", "point": ".", "dot": ".", "period": ".", ",": ",", "comma": ","}
)
#: Time origins a centre's delivered durations may count from.
DURATION_ORIGINS: tuple[str, ...] = ("diagnosis", "surgery", "sample")
CONSTANT = "(constant)"


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How one schema field is obtained from an upload."""

    field: str
    column: str | None = None
    value: Any = None
    expr: str | None = None
    types: MappingProxyType[str, str] = dataclass_field(
        default_factory=lambda: MappingProxyType({})
    )
    codes: MappingProxyType[str, Any] = dataclass_field(
        default_factory=lambda: MappingProxyType({})
    )
    unit: str | None = None
    scale: float | None = None
    date_format: str | None = None
    decimal: str | None = None
    missing_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowCheck:
    """A consistency rule the mapping's author knows for this centre's columns: an expression
    on the upload's columns that must be true (or missing) on every row; a row where it is
    false gets a ``mapping_check`` finding on the expression's first column."""

    expr: str
    message: str
    severity: str = "warning"
    types: MappingProxyType[str, str] = dataclass_field(
        default_factory=lambda: MappingProxyType({})
    )


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
    checks: tuple[RowCheck, ...] = ()

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
    origin: str | None = None
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
        origin = doc.get("origin")
        if origin is not None and origin not in DURATION_ORIGINS:
            raise MappingError(
                f"{where}: 'origin' (what the delivered durations count from) must be one of "
                f"{', '.join(DURATION_ORIGINS)}; got {origin!r}"
                f"{did_you_mean(str(origin), DURATION_ORIGINS)}."
            )
        defaults = {
            "missing_codes": _codes_list(doc.get("missing_codes", []), f"{where}.missing_codes"),
            "date_format": _date_format(doc.get("date_format", "iso"), f"{where}.date_format"),
            "decimal": _decimal(doc.get("decimal", "."), f"{where}.decimal"),
            "encoding": _encoding(doc.get("encoding"), f"{where}.encoding"),
            "delimiter": _delimiter(doc.get("delimiter"), f"{where}.delimiter"),
        }
        sources = tuple(
            _source(raw, schema, defaults, duration_unit, f"{where} sources[{i}]")
            for i, raw in enumerate(sources_raw)
        )
        reported = doc.get("reported", {}) or {}
        if not isinstance(reported, dict):
            raise MappingError(f"{where}: 'reported' must be a mapping; got {reported!r}.")
        _check_reported(reported, schema, f"{where}: reported")
        return cls(
            centre=str(centre).strip(),
            sources=sources,
            description=str(doc.get("description", "")),
            delivers=delivers,
            duration_unit=duration_unit,
            origin=origin,
            reported=MappingProxyType(reported),
            path=where,
        )

    def source(self, table: str) -> SourceMapping | None:
        for source in self.sources:
            if source.table == table:
                return source
        return None


_REPORTED_KEYS = {"patients", "events", "positivity"}
_MARKERS = ("ctc_positive", "dtc_positive")


def _check_reported(reported: dict[str, Any], schema: Schema, where: str) -> None:
    """The ``reported:`` block: numbers where numbers belong, known endpoints and markers."""

    def number(value: Any, at: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise MappingError(f"{at}: expected a number >= 0; got {value!r}.")

    _check_keys(reported, _REPORTED_KEYS, where)
    if "patients" in reported:
        number(reported["patients"], f"{where}.patients")
    events = reported.get("events") or {}
    if not isinstance(events, dict):
        raise MappingError(f"{where}.events: expected endpoint: count pairs; got {events!r}.")
    for ep, value in events.items():
        if ep not in schema.endpoint_names:
            raise MappingError(
                f"{where}.events: '{ep}' is not an endpoint of the schema"
                f"{did_you_mean(str(ep), schema.endpoint_names)}; endpoints are "
                f"{', '.join(schema.endpoint_names)}."
            )
        number(value, f"{where}.events.{ep}")
    positivity = reported.get("positivity") or {}
    if not isinstance(positivity, dict):
        raise MappingError(
            f"{where}.positivity: expected marker: share pairs; got {positivity!r}."
        )
    for marker, value in positivity.items():
        if marker not in _MARKERS:
            raise MappingError(
                f"{where}.positivity: '{marker}' is not a known marker; use ctc_positive or "
                "dtc_positive (optionally {share: 0.3, threshold: 5})."
            )
        share = value.get("share") if isinstance(value, dict) else value
        number(share, f"{where}.positivity.{marker}")
        if float(share or 0) > 1:
            raise MappingError(
                f"{where}.positivity.{marker}: a share is between 0 and 1; got {share!r}."
            )


def _check_keys(doc: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        key = unknown[0]
        raise MappingError(
            f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; "
            f"allowed keys are {', '.join(sorted(allowed))}."
        )


def _decimal(raw: Any, where: str) -> str:
    """The decimal sign: ``.`` or ``,`` (also written ``point``, ``dot``, ``comma``)."""
    sign = DECIMAL_SIGNS.get(str(raw).strip().lower()) if raw is not None else None
    if sign is None:
        raise MappingError(
            f"{where}: the decimal sign must be '.' or ',' (or 'point' / 'comma'); got {raw!r}."
        )
    return sign


def _encoding(raw: Any, where: str) -> str | None:
    import codecs

    if raw is None:
        return None
    try:
        return codecs.lookup(str(raw)).name
    except LookupError:
        raise MappingError(
            f"{where}: unknown text encoding {raw!r}; use e.g. utf-8, latin-1, cp1252 or utf-16."
        ) from None


def _delimiter(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    text = str(raw)
    if text.lower() in ("tab", "\\t"):
        return "\t"
    if len(text) != 1 or text in ('"', "\r", "\n") or text.isalnum():
        raise MappingError(
            f"{where}: the csv delimiter must be one character such as ';', ',', '|' or 'tab'; "
            f"got {raw!r}."
        )
    return text


def _date_format(raw: Any, where: str) -> str:
    """``iso``, ``excel`` or a strftime pattern that reads back the date it writes."""
    import datetime as _dt

    if not isinstance(raw, str) or not raw.strip():
        raise MappingError(f"{where}: expected 'iso', 'excel' or a pattern such as '%d.%m.%Y'.")
    fmt = raw.strip()
    if fmt in ("iso", "excel"):
        return fmt
    probe = _dt.datetime(2019, 12, 31)
    try:
        back = _dt.datetime.strptime(probe.strftime(fmt), fmt)
    except (ValueError, TypeError):
        back = None
    if back is None or (back.year, back.month) != (2019, 12) or "%" not in fmt:
        raise MappingError(
            f"{where}: {raw!r} is not a date pattern that can be read back (use strftime codes "
            "such as '%d.%m.%Y', '%Y-%m-%d' or '%d/%m/%Y', or 'iso' / 'excel')."
        )
    return fmt


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
    if table_name == "patients":
        _check_endpoint_pairs({c.field for c in columns}, schema, f"{where}.columns")
    checks = _row_checks(raw.get("checks"), f"{where}.checks")
    return SourceMapping(
        table=table_name,
        columns=tuple(columns),
        sheet=None if raw.get("sheet") is None else str(raw["sheet"]),
        header_row=header_row,
        encoding=_encoding(raw["encoding"], f"{where}.encoding")
        if "encoding" in raw
        else defaults["encoding"],
        delimiter=_delimiter(raw["delimiter"], f"{where}.delimiter")
        if "delimiter" in raw
        else defaults["delimiter"],
        missing_codes=defaults["missing_codes"]
        + _codes_list(raw.get("missing_codes", []), f"{where}.missing_codes"),
        date_format=_date_format(raw["date_format"], f"{where}.date_format")
        if "date_format" in raw
        else defaults["date_format"],
        decimal=_decimal(raw["decimal"], f"{where}.decimal") if "decimal" in raw else defaults["decimal"],
        file=raw.get("file"),
        checks=checks,
    )


def _row_checks(raw: Any, where: str) -> tuple[RowCheck, ...]:
    """The source's ``checks:``: each ``{expr, message, severity: warning|error, types}``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MappingError(f"{where}: expected a list of {{expr, message}} checks.")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise MappingError(f"{at}: expected {{expr: ..., message: ...}}; got {item!r}.")
        _check_keys(item, _CHECK_KEYS, at)
        expr, message = item.get("expr"), item.get("message")
        if not isinstance(expr, str) or not expr.strip():
            raise MappingError(f"{at}.expr: expected an expression that is true on good rows.")
        if not isinstance(message, str) or not message.strip():
            raise MappingError(f"{at}.message: say what a failing row means and how to fix it.")
        severity = item.get("severity", "warning")
        if severity not in ("warning", "error"):
            raise MappingError(f"{at}.severity: 'warning' or 'error'; got {severity!r}.")
        compiled = _compile(expr, f"{at}.expr")
        types = item.get("types") or {}
        if not isinstance(types, dict) or any(
            str(k) not in compiled.names or v not in INPUT_TYPES for k, v in types.items()
        ):
            raise MappingError(
                f"{at}.types: columns the expression reads ({', '.join(compiled.names)}) "
                f"mapped to {', '.join(INPUT_TYPES)}; got {types!r}."
            )
        out.append(
            RowCheck(expr=expr, message=message.strip(), severity=severity,
                     types=MappingProxyType({str(k): str(v) for k, v in types.items()}))
        )  # fmt: skip
    return tuple(out)


def _check_endpoint_pairs(mapped: set[str], schema: Schema, where: str) -> None:
    """A delivered event flag needs its time and a time needs its flag (else dropped)."""
    for ep in schema.endpoints:
        months, event = f"{ep.name}_months", f"{ep.name}_event"
        dates = [d for d in ep.event_dates if d in mapped]
        if event in mapped and months not in mapped and not dates:
            raise MappingError(
                f"{where}: '{event}' is mapped but '{months}' is not, so the flag could be "
                f"neither analysed nor checked against dates; map '{months}' too (or the "
                f"endpoint's dates: {', '.join(ep.event_dates)})."
            )
        if months in mapped and event not in mapped:
            raise MappingError(
                f"{where}: '{months}' is mapped but '{event}' is not; a time without its event "
                f"flag cannot be analysed. Map '{event}' too."
            )


def _target_ok(value: Any, field_spec: FieldSpec) -> bool:
    """Whether a recode target or constant is a value the schema field accepts."""
    if value is None:
        return True
    if isinstance(value, dict | list | tuple | set):
        return False
    kind = field_spec.type
    if kind == "category":
        return _text(value) in {c.lower() for c in field_spec.codes}
    if kind == "boolean":
        return isinstance(value, bool) or _text(value) in BOOLEAN_WORDS
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            return False
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        if not np.isfinite(number):
            return False
        if kind == "integer" and not float(number).is_integer():
            return False
        lo, hi = field_spec.min, field_spec.max
        return (lo is None or number >= lo) and (hi is None or number <= hi)
    if kind == "date":
        if hasattr(value, "year"):
            return True
        try:
            pd.Timestamp(str(value))
        except (ValueError, TypeError):
            return False
        return True
    return True


def _allowed_text(field_spec: FieldSpec) -> str:
    if field_spec.type == "category":
        return "one of " + ", ".join(field_spec.codes)
    if field_spec.type == "boolean":
        return "true or false"
    if field_spec.type in ("integer", "number"):
        limits = [f">= {field_spec.min:g}" if field_spec.min is not None else "",
                  f"<= {field_spec.max:g}" if field_spec.max is not None else ""]  # fmt: skip
        word = "a whole number" if field_spec.type == "integer" else "a number"
        return word + (" " + " and ".join(x for x in limits if x) if any(limits) else "")
    if field_spec.type == "date":
        return "a date like 2019-12-31"
    return "a text"


def _column(
    name: str, spec: Any, field_spec: FieldSpec, duration_unit: str, where: str
) -> ColumnMapping:
    if isinstance(spec, str | int) and not isinstance(spec, bool):
        spec = {"column": str(spec)}
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected an upload column name or a mapping; got {spec!r}.")
    _check_keys(spec, _COLUMN_KEYS, where)
    given = [k for k in ("column", "value", "expr") if k in spec]
    if len(given) != 1:
        raise MappingError(
            f"{where}: give exactly one of 'column' (upload header), 'value' (a constant) or "
            f"'expr' (an expression on upload columns); got {', '.join(given) or 'none'}."
        )
    codes = spec.get("codes", {}) or {}
    if not isinstance(codes, dict):
        raise MappingError(f"{where}.codes: expected upload value -> schema code pairs.")
    for key, target in codes.items():
        if not _target_ok(target, field_spec):
            raise MappingError(
                f"{where}.codes: '{key}' is recoded to {target!r}, which '{name}' does not "
                f"accept (expected {_allowed_text(field_spec)}"
                f"{did_you_mean(str(target), field_spec.codes) if field_spec.codes else ''}); "
                "fix the mapping."
            )
    if "value" in spec and not _target_ok(spec["value"], field_spec):
        raise MappingError(
            f"{where}.value: {spec['value']!r} is not a value '{name}' accepts (expected "
            f"{_allowed_text(field_spec)}); fix the mapping."
        )
    expr = None
    types: dict[str, str] = {}
    if "expr" in spec:
        expr = spec["expr"]
        if not isinstance(expr, str) or not expr.strip():
            raise MappingError(f"{where}.expr: expected an expression text; got {expr!r}.")
        compiled = _compile(expr, where + ".expr")
        raw_types = spec.get("types") or {}
        if not isinstance(raw_types, dict):
            raise MappingError(f"{where}.types: expected column: number|text|date pairs.")
        for column_name, kind in raw_types.items():
            if str(column_name) not in compiled.names:
                raise MappingError(
                    f"{where}.types: '{column_name}' is not a column the expression reads "
                    f"({', '.join(compiled.names) or 'none'})."
                )
            if kind not in INPUT_TYPES:
                raise MappingError(
                    f"{where}.types.{column_name}: must be one of {', '.join(INPUT_TYPES)}; "
                    f"got {kind!r}."
                )
            types[str(column_name)] = str(kind)
    elif "types" in spec:
        raise MappingError(f"{where}.types: only an 'expr' entry reads its columns by type.")
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
    if scale is not None and (
        not isinstance(scale, int | float) or isinstance(scale, bool) or not np.isfinite(scale)
    ):
        raise MappingError(f"{where}.scale: expected a number; got {scale!r}.")
    return ColumnMapping(
        field=name,
        column=None if "column" not in spec else str(spec["column"]),
        value=spec.get("value"),
        expr=expr,
        types=MappingProxyType(types),
        codes=MappingProxyType({_text(k): v for k, v in codes.items()}),
        unit=unit,
        scale=None if scale is None else float(scale),
        date_format=_date_format(spec["date_format"], f"{where}.date_format")
        if "date_format" in spec
        else None,
        decimal=_decimal(spec["decimal"], f"{where}.decimal") if "decimal" in spec else None,
        missing_codes=_codes_list(spec.get("missing_codes", []), f"{where}.missing_codes"),
    )


def _compile(text: str, where: str) -> Any:
    """Compile a mapping expression (names are the upload's columns, checked when applied)."""
    from harmonization.errors import ExpressionError
    from harmonization.expressions import compile_expression

    try:
        return compile_expression(text, where=where)
    except ExpressionError as exc:
        raise MappingError(str(exc)) from None


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
    notes: tuple[ReadNote, ...] = ()
    origin: str | None = None
    records: int = -1

    @property
    def n_rows(self) -> int:
        return int(len(self.values))


#: Columns of :attr:`MappedTable.issues`; ``column`` (optional) names the upload header of a
#: cell when it is not the field's own column (e.g. an input of an expression).
ISSUE_COLUMNS = ("row", "field", "value", "rule", "message", "column")


def _resolve_columns(raw: RawUpload, wanted: str, where: str) -> tuple[str, ...]:
    """The header(s) a mapping names: exact, then ignoring case and spaces; every copy of a
    header written twice."""
    header = None
    if wanted in raw.columns:
        header = wanted
    else:
        folded = {c.strip().lower(): c for c in reversed(raw.columns)}
        header = folded.get(wanted.strip().lower())
    if header is None:
        sheet = f", sheet '{raw.sheet}'" if raw.sheet else ""
        raise MappingError(
            f"{where}: the upload {raw.file}{sheet} has no column '{wanted}'"
            f"{did_you_mean(wanted, raw.columns)}. Its columns are: "
            f"{', '.join(raw.columns[:30])}{' ...' if len(raw.columns) > 30 else ''}. "
            "Fix the column name in the centre mapping."
        )
    return raw.duplicates.get(header, (header,))


def _combine_copies(
    raw: RawUpload, headers: tuple[str, ...], field_name: str
) -> tuple[pd.Series, pd.DataFrame | None]:
    """One column from a header written several times: the value where the copies agree or
    only one has a value; a finding (and no value) where they disagree."""
    first = raw.cells[headers[0]].reset_index(drop=True)
    if len(headers) == 1:
        return first, None
    copies = [raw.cells[h].reset_index(drop=True) for h in headers]
    texts = [_cell_text(c).str.strip() for c in copies]
    out = first.copy()
    conflict = np.zeros(len(first), dtype=bool)
    chosen = texts[0].copy()
    for cells, text in zip(copies[1:], texts[1:], strict=True):
        empty_now = chosen == ""
        has = text != ""
        take = empty_now.to_numpy() & has.to_numpy()
        out[take] = cells[take]
        chosen[take] = text[take]
        conflict |= (~empty_now & has & (text != chosen)).to_numpy()
    if not conflict.any():
        return out, None
    rows = np.flatnonzero(conflict)
    letters = [raw.letter(h) or h for h in headers]
    values = [" | ".join(t.iloc[r] for t in texts) for r in rows]
    out[conflict] = None
    problems = pd.DataFrame(
        {
            "row": rows,
            "field": field_name,
            "value": values,
            "rule": "copies_disagree",
            "message": [
                f"the columns headed '{headers[0]}' ({', '.join(letters)}) disagree on this row "
                f"({v}); the value is not read until one copy is corrected or deleted."
                for v in values
            ],
            "column": headers[0],
        }
    )
    return out, problems


def _expression_cells(
    raw: RawUpload,
    column: ColumnMapping,
    source: SourceMapping,
    mapping: CentreMapping | None,
    where: str,
) -> tuple[pd.Series, list[str], list[pd.DataFrame]]:
    """The cells of a field given by an expression on upload columns.

    Each column the expression names is read once: as dates when most of its filled cells
    are dates, as numbers when most are numbers (the centre's decimal sign and missing
    codes apply), else as text (trimmed). A filled cell that does not fit its column's type
    becomes missing with a finding on that cell. The result goes through the field's usual
    conversion (unit, codes, range) like a column would.
    """
    from harmonization.errors import ExpressionError

    at = f"{where} columns.{column.field}.expr"
    expr = _compile(column.expr or "", at)
    n = raw.n_rows
    missing_codes = (
        set(DEFAULT_MISSING_CODES) | set(source.missing_codes) | set(column.missing_codes)
    )
    decimal = column.decimal or source.decimal
    fmt = column.date_format or source.date_format
    inputs: dict[str, pd.Series] = {}
    headers_used: list[str] = []
    problems: list[pd.DataFrame] = []
    for name in expr.names:
        headers = _resolve_columns(raw, name, at)
        headers_used.extend(h for h in headers if h not in headers_used)
        cells, conflicts = _combine_copies(raw, headers, column.field)
        if conflicts is not None:
            problems.append(conflicts)
        typed, bad = _typed_input(
            cells, missing_codes, decimal, fmt, raw.epoch, column.types.get(name)
        )
        inputs[name] = typed
        for mask, rule, message in bad:
            found = _problems(mask, cells.reset_index(drop=True), column.field, rule, message)
            found["column"] = headers[0]
            problems.append(found)
    try:
        result = expr.evaluate(inputs, index=pd.RangeIndex(n))
    except ExpressionError as exc:
        read_as = ", ".join(
            f"'{k}' as {_kind_of(v)}" for k, v in inputs.items()
        )  # fmt: skip
        raise MappingError(
            f"{exc} (upload {raw.file}: read {read_as}; where a column's type was guessed "
            f"wrongly, say it under 'types:', e.g. types: {{'{expr.names[0]}': number}})"
        ) from None
    values = result.astype(object).where(result.notna(), None)
    return values.reset_index(drop=True), headers_used, problems


def _kind_of(values: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(values):
        return "dates"
    return "numbers" if pd.api.types.is_float_dtype(values) else "text"


def _typed_input(
    cells: pd.Series,
    missing_codes: set[str],
    decimal: str,
    fmt: str,
    epoch: str,
    kind: str | None = None,
) -> tuple[pd.Series, list[tuple[np.ndarray, str, str]]]:
    """An upload column typed for an expression (see :func:`_expression_cells`), and the
    filled cells that could not be read as that type (mask, rule, message).

    ``kind`` (the mapping's ``types:``) says how to read it; otherwise dates when most filled
    cells are dates, numbers when at least half are numbers, else text.
    """
    cells = cells.reset_index(drop=True)
    text = cells.map(_text)
    present = ~text.isin(missing_codes).to_numpy()
    n_present = int(present.sum())
    is_datetime = cells.map(lambda v: hasattr(v, "year") and hasattr(v, "month")).to_numpy()
    if kind == "date" or (kind is None and n_present and (is_datetime & present).sum() * 2 > n_present):
        dates, _years = _to_date(cells, fmt, epoch)
        dates = dates.where(pd.Series(present), pd.NaT)
        bad = present & dates.isna().to_numpy()
        return dates, ([(bad, "type", "the cell must be a date")] if bad.any() else [])
    numbers, ambiguous = _to_number(cells, decimal)
    with np.errstate(invalid="ignore"):
        numeric = present & np.isfinite(numbers)
    if kind == "number" or (
        kind is None and (n_present == 0 or (numeric | ambiguous).sum() * 2 >= n_present)
    ):
        values = pd.Series(np.where(numeric, numbers, np.nan), dtype="float64")
        found: list[tuple[np.ndarray, str, str]] = []
        bad = present & ~numeric & ~ambiguous
        if bad.any():
            found.append((bad, "type", "the cell must be a number"))
        if (present & ambiguous).any():
            sign = "comma" if decimal == "," else "point"
            found.append(
                (present & ambiguous, "ambiguous_decimal",
                 f"the number is written with another decimal sign than the centre's ({sign}) "
                 "and is not read")
            )  # fmt: skip
        return values, found
    out = cells.map(_plain_text).astype(object)
    out[~present] = None
    return out, []


def _row_check(
    raw: RawUpload, check: RowCheck, source: SourceMapping, where: str, index: int
) -> tuple[pd.DataFrame | None, list[str], list[pd.DataFrame]]:
    """Rows where a mapping's ``checks:`` expression is false, as ``mapping_check`` issues on
    the expression's first column (a missing result is not a failure)."""
    column = ColumnMapping(field=f"check {index + 1}", expr=check.expr, types=check.types)
    result, names, problems = _expression_cells(raw, column, source, None, where)
    for frame in problems:  # input cells that could not be read stay findings of their own
        frame["field"] = None
    ok = result.map(lambda v: None if v is None else bool(v))
    failed = (ok == False).to_numpy()  # noqa: E712 - None (missing) is not a failure
    if not failed.any() or not names:
        return None, names, problems
    first = names[0]
    rows = np.flatnonzero(failed)
    cells = raw.cells[first].reset_index(drop=True)
    return (
        pd.DataFrame(
            {
                "row": rows,
                "field": None,
                "value": _cell_text(cells.iloc[rows]).to_numpy(),
                "rule": "mapping_check_error" if check.severity == "error" else "mapping_check",
                "message": f"{check.message} (mapping check: {check.expr})",
                "column": first,
            }
        ),
        names,
        problems,
    )


def _centre_problems(cells: pd.Series, centre: str) -> pd.DataFrame | None:
    """Rows whose own centre column names another centre than the mapping's."""
    text = cells.map(_text)
    other = ((text != "") & (text != centre.strip().lower())).to_numpy()
    if not other.any():
        return None
    return _problems(
        other, cells, "centre", "centre_mismatch",
        f"the row names another centre than this mapping's '{centre}'",
    )  # fmt: skip


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
        inputs_issues: list[pd.DataFrame] = []
        if column.column is not None:
            headers = _resolve_columns(raw, column.column, where)
            used.update(headers)
            cells, conflicts = _combine_copies(raw, headers, column.field)
            if conflicts is not None:
                inputs_issues.append(conflicts)
            column_of[column.field] = headers[0]
        elif column.expr is not None:
            cells, names, expr_problems = _expression_cells(raw, column, source, mapping, where)
            used.update(names)
            inputs_issues.extend(expr_problems)
            column_of[column.field] = ", ".join(names) if names else CONSTANT
        else:
            cells = pd.Series([column.value] * n, dtype=object)
            column_of[column.field] = CONSTANT
        raws[column.field] = _cell_text(cells)
        converted, problems = _convert(cells, column, spec, source, epoch=raw.epoch)
        if column.field == "centre":
            problems = _centre_problems(cells, mapping.centre)
            converted = pd.Series([mapping.centre] * n, dtype=object)
        values[column.field] = converted
        issues.extend(inputs_issues)
        if problems is not None and len(problems):
            issues.append(problems)
    for i, check in enumerate(source.checks):
        failed_rows, names, check_problems = _row_check(raw, check, source, where, i)
        used.update(names)
        issues.extend(check_problems)
        if failed_rows is not None:
            issues.append(failed_rows)
    frame = pd.DataFrame(values, index=pd.RangeIndex(n))
    if "centre" not in frame:
        frame.insert(0, "centre", pd.Series([mapping.centre] * n, dtype=object))
        column_of["centre"] = CONSTANT
        raws["centre"] = pd.Series([mapping.centre] * n, dtype=object)
    raw_frame = pd.DataFrame(raws, index=pd.RangeIndex(n))
    issue_frame = (
        pd.concat([i.reindex(columns=list(ISSUE_COLUMNS)) for i in issues], ignore_index=True)
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
        notes=raw.notes,
        origin=mapping.origin,
        records=raw.records,
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
    cells: pd.Series,
    column: ColumnMapping,
    spec: FieldSpec,
    source: SourceMapping,
    *,
    epoch: str = "1900",
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
        decimal = column.decimal or source.decimal
        numbers, ambiguous = _to_number(cells, decimal)
        with np.errstate(invalid="ignore", over="ignore"):
            bad = present & ~np.isfinite(numbers) & ~ambiguous
        ambiguous &= present
        numbers = np.where(present & ~bad & ~ambiguous, numbers, np.nan)
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
        if ambiguous.any():
            sign = "comma" if decimal == "," else "point"
            other = "point" if decimal == "," else "comma"
            found.append(
                _problems(
                    ambiguous, cells, spec.name, "ambiguous_decimal",
                    f"'{spec.name}' is written with a decimal {other} (or a thousands "
                    f"separator) but the centre's decimal sign is a {sign}, so the number is "
                    f"ambiguous and is not read; write it with a {sign} (or fix 'decimal' in "
                    "the mapping)",
                )
            )  # fmt: skip
        if kind == "integer":
            with np.errstate(invalid="ignore"):
                huge = ~np.isnan(numbers) & (np.abs(numbers) > 2.0**53)
                fractional = (
                    ~np.isnan(numbers) & ~huge & (np.abs(numbers - np.round(numbers)) > 1e-9)
                )
            if huge.any():
                found.append(
                    _problems(huge, cells, spec.name, "range",
                              f"'{spec.name}' is too large to be a count")
                )  # fmt: skip
                numbers = np.where(huge, np.nan, numbers)
            if fractional.any():
                found.append(
                    _problems(fractional, cells, spec.name, "integer",
                              f"'{spec.name}' must be a whole number")
                )  # fmt: skip
                numbers = np.where(fractional, np.nan, numbers)
        if factor != 1.0:
            with np.errstate(over="ignore", invalid="ignore"):
                numbers = numbers * factor
            overflow = ~np.isnan(numbers) & ~np.isfinite(numbers)
            if overflow.any():
                found.append(
                    _problems(overflow, cells, spec.name, "type",
                              f"'{spec.name}' is too large to be converted to {spec.unit}")
                )  # fmt: skip
                numbers = np.where(overflow, np.nan, numbers)
        out = pd.Series(numbers, dtype="float64")
        return out, (pd.concat(found, ignore_index=True) if found else None)
    if kind == "date":
        fmt = column.date_format or source.date_format
        dates, year_like = _to_date(cells, fmt, epoch)
        year_like &= present
        bad = present & dates.isna().to_numpy() & ~year_like
        out = dates.where(pd.Series(present & ~bad & ~year_like), pd.NaT)
        example = {"excel": "an Excel date or serial number", "iso": "2019-12-31"}.get(
            fmt, pd.Timestamp("2019-12-31").strftime(fmt)
        )
        found = []
        if bad.any():
            found.append(
                _problems(bad, cells, spec.name, "type",
                          f"'{spec.name}' must be a date like {example}")
            )  # fmt: skip
        if year_like.any():
            found.append(
                _problems(
                    year_like, cells, spec.name, "type",
                    f"'{spec.name}' holds a number that looks like a year, not a date (a "
                    "year typed into a date cell reads as a day in 1905); type the full date",
                )
            )  # fmt: skip
        return out, (pd.concat(found, ignore_index=True) if found else None)
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


_SPACES = r"[\s\u00a0\u2009\u202f']"
_THOUSANDS = {
    ",": __import__("re").compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$"),
    ".": __import__("re").compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"),
}


def _to_number(cells: pd.Series, decimal: str) -> tuple[np.ndarray, np.ndarray]:
    """Numbers from cells, and which text cells are ambiguous for the decimal sign.

    Numeric cells are taken as they are. Text is read with the centre's decimal sign; a
    thousands separator is accepted only together with the decimal sign in its place
    (``1.234,5`` with a comma, ``1,234.5`` with a point). Text that has only the *other*
    sign (``56.5`` where the centre writes ``56,5``) is ambiguous and not read.
    """
    numeric = pd.to_numeric(cells.where(cells.map(_is_number)), errors="coerce").astype("float64")
    ambiguous = np.zeros(len(cells), dtype=bool)
    text_mask = cells.map(lambda v: isinstance(v, str)).to_numpy()
    if text_mask.any():
        text = cells[text_mask].astype(str).str.replace(_SPACES, "", regex=True)
        other = "." if decimal == "," else ","
        has_other = text.str.contains(other, regex=False)
        has_own = text.str.contains(decimal, regex=False)
        grouped = text.str.match(_THOUSANDS[decimal])
        as_other = pd.to_numeric(
            text.str.replace(",", "", regex=False) if other == "." else
            text.str.replace(",", ".", regex=False), errors="coerce"
        )  # fmt: skip
        only_other = (has_other & ~has_own & as_other.notna()).to_numpy()
        canonical = text.where(~grouped, text.str.replace(other, "", regex=False))
        if decimal == ",":
            canonical = canonical.str.replace(",", ".", regex=False)
        parsed = pd.to_numeric(canonical.where(~has_other | grouped), errors="coerce")
        numeric[text_mask] = parsed.to_numpy(dtype="float64")
        ambiguous[np.flatnonzero(text_mask)[only_other & ~grouped.to_numpy()]] = True
    return numeric.to_numpy(dtype="float64"), ambiguous


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


EXCEL_EPOCHS: MappingProxyType[str, pd.Timestamp] = MappingProxyType(
    {"1900": pd.Timestamp("1899-12-30"), "1904": pd.Timestamp("1904-01-01")}
)


def _serial_dates(serial: pd.Series, epoch: str) -> tuple[pd.Series, pd.Series]:
    """Dates from Excel serial numbers, and which serials are whole numbers 1900..2100 (a
    year typed into a date cell)."""
    serial = serial.astype(float)
    year_like = (serial >= 1900) & (serial <= 2100) & (serial == serial.round())
    ok = (serial > 0) & (serial < 2958466) & ~year_like  # Excel's range up to 9999-12-31
    days = pd.to_timedelta(serial.where(ok).round(), unit="D")
    return EXCEL_EPOCHS.get(epoch, EXCEL_EPOCH) + days, year_like
    # 1900 leap-year bug: serials below 61 are one day off in Excel; not realistic here.


def _to_date(cells: pd.Series, fmt: str, epoch: str = "1900") -> tuple[pd.Series, np.ndarray]:
    """Dates from datetime cells, Excel serials (in the workbook's date system) or text in
    the given format; and which cells look like a year rather than a date."""
    out = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[ns]")
    year_like = np.zeros(len(cells), dtype=bool)
    is_datetime = cells.map(lambda v: hasattr(v, "year") and hasattr(v, "month")).to_numpy()
    if is_datetime.any():
        parsed = pd.to_datetime(cells[is_datetime].astype(object), errors="coerce")
        # a year typed into a date-formatted cell: serial 1900..2100 -> 1905-03-14..1905-07-23
        base = EXCEL_EPOCHS.get(epoch, EXCEL_EPOCH)
        serial = (parsed - base).dt.total_seconds() / 86400.0
        typed_year = ((serial >= 1900) & (serial <= 2100) & (serial == serial.round())).to_numpy()
        year_like[np.flatnonzero(is_datetime)[typed_year]] = True
        out[is_datetime] = parsed.where(~typed_year).to_numpy()
    is_number = cells.map(_is_number).to_numpy()
    if is_number.any():
        with np.errstate(invalid="ignore", over="ignore"):
            serial = pd.to_numeric(cells[is_number], errors="coerce").astype(float)
            dates, years = _serial_dates(serial, epoch)
        out[is_number] = dates.to_numpy()
        year_like[np.flatnonzero(is_number)[years.to_numpy()]] = True
    is_text = cells.map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy()
    if is_text.any():
        text = cells[is_text].astype(str).str.strip()
        try:
            if fmt == "excel":
                serial = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
                parsed, years = _serial_dates(serial, epoch)
                fallback = pd.to_datetime(text, format="ISO8601", errors="coerce")
                out[is_text] = parsed.fillna(fallback).to_numpy()
                year_like[np.flatnonzero(is_text)[years.to_numpy()]] = True
            elif fmt == "iso":
                out[is_text] = pd.to_datetime(text, format="ISO8601", errors="coerce").to_numpy()
            else:
                out[is_text] = pd.to_datetime(text, format=fmt, errors="coerce").to_numpy()
        except (ValueError, TypeError, OverflowError):
            out[is_text] = pd.NaT  # each such cell becomes a 'type' finding
    return out, year_like
