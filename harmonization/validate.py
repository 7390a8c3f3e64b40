"""Validation a data manager can act on: ``validate(mapped) -> ValidationReport + HarmonisedTable``.

Validation is lazy: every rule runs on every row and every failure becomes one row of a
findings table (columns :data:`~harmonization.rules.FINDING_COLUMNS`), where ``row`` is the
row number the person sees in their own file and ``column`` their own header. The rules, their
severities and whether they block the row are the catalogue :data:`harmonization.rules.RULES`
(documented in ``docs/validation_rules.md``).

No row disappears: the :class:`HarmonisedTable` has one row per data row of the upload, with
the schema fields (cells failing ``type``/``code``/``integer``/``range`` set missing), the
derived fields (:mod:`harmonization.derive`), provenance (``source_file``, ``source_sheet``,
``source_row``) and ``blocking`` / ``reasons`` (semicolon-joined ids of the blocking rules
that fired on the row, e.g. ``"date_order;duplicate_id"``; see
:func:`harmonization.rules.reason_of`).

Every check is vectorised over columns (NumPy / pandas); Python loops run over fields and
rules, never over rows, except to word the messages of the rows that fail.

Three entry points:

- :func:`validate` for one mapped table of one upload (row-level, whole-upload and the
  centre-level rules that need only this centre's data);
- :func:`validate_samples` for the serial-samples table against its patients table;
- :func:`validate_consortium` for the cross-centre rules (outlying event and positivity
  rates, the same patient sent by two centres).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from harmonization.derive import derive_fields, derive_her2_status, derive_subtype
from harmonization.errors import MappingError
from harmonization.mapping import CONSTANT, CentreMapping, MappedTable
from harmonization.rules import FINDING_COLUMNS, RULES, SEVERITIES, RuleId, blocking_rules
from harmonization.schema import Schema, TableSpec, load_schema

__all__ = [
    "HarmonisedTable",
    "ValidationReport",
    "ValidationSpec",
    "reverse_km_followup",
    "validate",
    "validate_consortium",
    "validate_samples",
]

Today = _dt.date | _dt.datetime | pd.Timestamp | str | None

#: Event and contact dates checked against the time origin (rule ``date_order``).
FOLLOWUP_DATES: tuple[str, ...] = (
    "recurrence_date",
    "distant_recurrence_date",
    "progression_date",
    "treatment_failure_date",
    "death_date",
    "last_contact_date",
)
#: Event dates that cannot lie after the last contact of a living patient.
EVENT_DATES: tuple[str, ...] = (
    "recurrence_date",
    "distant_recurrence_date",
    "progression_date",
    "treatment_failure_date",
)
#: Event dates that cannot lie after death (rule ``death_before_recurrence``).
RECURRENCE_DATES: tuple[str, ...] = (
    "recurrence_date",
    "distant_recurrence_date",
    "progression_date",
)
#: Fields of the cross-centre fingerprint (rule ``cross_centre_duplicate``).
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "diagnosis_date",
    "surgery_date",
    "age",
    "tumour_size_mm",
    "positive_nodes",
    "grade",
    "er_status",
    "pr_status",
    "her2_status",
)
#: Fields that are empty by design for most patients (not checked by ``mostly_missing``).
SPARSE_BY_DESIGN: frozenset[str] = frozenset(
    {"death_cause", "her2_ish", "treatment_arm", "days_from_baseline"}
)
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "source_file",
    "source_sheet",
    "source_row",
    "blocking",
    "reasons",
)
_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    """Thresholds of the date, centre-level and cross-centre rules (documented defaults).

    Parameters
    ----------
    contact_after_death_days : a last contact this many days after death is an error.
    sample_before_diagnosis_days, sample_after_surgery_days : early disease sample window.
    mostly_missing_share : ``mostly_missing`` fires above this share of empty cells.
    completeness_min : Clark's completeness index below this warns.
    five_year_share_min : in early disease, a share of patients with >= 5 years of potential
        follow-up below this warns (with at least ``min_patients`` patients).
    patients_tolerance : relative patient-count difference from ``reported.patients``.
    events_tolerance : relative event-count difference from ``reported.events``.
    positivity_tolerance : absolute difference in positivity share from ``reported``.
    outlier_z : funnel-plot |z| above which a centre is an outlier.
    min_centres : centres (with ``min_patients`` each) needed for the outlier rules.
    min_patients : smallest centre (or setting) size for the centre-level statistics.
    ctc_threshold : CTC per 7.5 ml defining positivity, per setting.
    outlier_endpoints : endpoints compared across centres, per setting.
    """

    contact_after_death_days: int = 30
    sample_before_diagnosis_days: int = 365
    sample_after_surgery_days: int = 365
    mostly_missing_share: float = 0.5
    completeness_min: float = 0.8
    five_year_share_min: float = 0.5
    patients_tolerance: float = 0.02
    events_tolerance: float = 0.05
    positivity_tolerance: float = 0.05
    outlier_z: float = 3.0
    min_centres: int = 3
    min_patients: int = 20
    ctc_threshold: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"early": 1.0, "metastatic": 5.0})
    )
    outlier_endpoints: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType(
            {"early": ("os", "dfs"), "metastatic": ("os", "pfs")}
        )
    )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _empty_findings() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in FINDING_COLUMNS})
    frame["row"] = frame["row"].astype("Int64")
    return frame


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every finding of a validation, as one table.

    Attributes
    ----------
    findings : DataFrame with the columns ``centre, file, sheet, row, column, value, rule,
        severity, message, field`` (``row`` nullable integer: the row number in the person's
        file; missing for centre-level findings).

    Examples
    --------
    >>> report = ValidationReport.empty()
    >>> report.has_errors
    False
    """

    findings: pd.DataFrame
    blocked_rows: int = 0

    def __post_init__(self) -> None:
        missing = [c for c in FINDING_COLUMNS if c not in self.findings.columns]
        if missing:
            raise ValueError(
                f"ValidationReport: findings lack the column(s) {', '.join(missing)}; "
                f"expected {', '.join(FINDING_COLUMNS)}."
            )

    @classmethod
    def empty(cls) -> ValidationReport:
        """A report without findings."""
        return cls(_empty_findings())

    @property
    def n_findings(self) -> int:
        return int(len(self.findings))

    @property
    def counts_by_severity(self) -> dict[str, int]:
        """Number of findings per severity (every severity present, zeros included)."""
        counts = self.findings["severity"].value_counts()
        return {s: int(counts.get(s, 0)) for s in SEVERITIES}

    @property
    def counts_by_rule(self) -> pd.DataFrame:
        """``rule, severity, n`` for every rule that fired, most severe first."""
        if not len(self.findings):
            return pd.DataFrame({"rule": [], "severity": [], "n": []})
        counts = (
            self.findings.groupby(["rule", "severity"], sort=False).size().rename("n").reset_index()
        )
        order = {s: i for i, s in enumerate(SEVERITIES)}
        counts["_o"] = counts["severity"].map(order)
        return (
            counts.sort_values(["_o", "n", "rule"], ascending=[True, False, True])
            .drop(columns="_o")
            .reset_index(drop=True)
        )

    @property
    def n_errors(self) -> int:
        return self.counts_by_severity["error"]

    @property
    def n_warnings(self) -> int:
        return self.counts_by_severity["warning"]

    @property
    def has_errors(self) -> bool:
        return bool((self.findings["severity"] == "error").any())

    def to_frame(self) -> pd.DataFrame:
        """The findings table (a copy)."""
        return self.findings.copy()

    def merge(self, other: ValidationReport) -> ValidationReport:
        """Both reports' findings in one report (this one's first)."""
        blocked = self.blocked_rows + other.blocked_rows
        if not len(other.findings):
            return self if not other.blocked_rows else replace(self, blocked_rows=blocked)
        if not len(self.findings):
            return other if not self.blocked_rows else replace(other, blocked_rows=blocked)
        frame = pd.concat([self.findings, other.findings], ignore_index=True)
        frame["row"] = frame["row"].astype("Int64")
        return ValidationReport(frame, blocked_rows=blocked)


@dataclass(frozen=True, slots=True)
class HarmonisedTable:
    """One validated upload table on the schema, with derived fields and provenance.

    Attributes
    ----------
    centre, table, file, sheet, sha256 : where it came from.
    data : one row per data row of the upload: the schema fields of the table (in schema
        order), the derived fields, ``source_file``, ``source_sheet``, ``source_row``,
        ``blocking`` (bool) and ``reasons`` (semicolon-joined blocking rule ids).
    column_of : schema field -> the upload's header (``"(constant)"`` for constants).
    """

    centre: str
    table: str
    data: pd.DataFrame
    file: str
    sha256: str
    sheet: str = ""
    column_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def n_rows(self) -> int:
        return int(len(self.data))

    @property
    def n_blocking(self) -> int:
        return int(self.data["blocking"].sum())


# --------------------------------------------------------------------------------------------
# Collecting findings
# --------------------------------------------------------------------------------------------


def _iso(dates: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(dates.astype("datetime64[D]"), unit="D")


def _num(value: float) -> str:
    return f"{value:g}"


class _Collector:
    """Findings of one table, kept by row position until the end."""

    def __init__(self, mapped: MappedTable, header_row: int | None) -> None:
        self.mapped = mapped
        self.header_row = header_row
        self.parts: list[pd.DataFrame] = []
        self.raw_text = {c: mapped.raw[c].to_numpy(dtype=object) for c in mapped.raw.columns}

    def header(self, name: str) -> str:
        return self.mapped.column_of.get(name, name)

    def cells(
        self,
        mask_or_positions: np.ndarray,
        name: str,
        rule: RuleId,
        message: Any,
        *,
        columns: Any = None,
        values: Any = None,
    ) -> np.ndarray:
        """One finding per selected row on the cell of field ``name`` (or, where
        ``columns`` is given, on those upload columns, e.g. an expression's input)."""
        arr = np.asarray(mask_or_positions)
        positions = np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64)
        if positions.size == 0:
            return positions
        raw = self.raw_text.get(name)
        if values is not None:
            value = np.asarray(list(values), dtype=object)
        else:
            value = raw[positions] if raw is not None else np.full(positions.size, "", dtype=object)
        messages = (
            np.full(positions.size, message, dtype=object)
            if isinstance(message, str)
            else np.asarray(list(message), dtype=object)
        )
        self.parts.append(
            pd.DataFrame(
                {
                    "_pos": positions,
                    "_group": 1,
                    "row": self.mapped.source_rows[positions],
                    "column": self.header(name) if columns is None else columns,
                    "value": value,
                    "rule": str(rule),
                    "message": messages,
                    "field": name,
                }
            )
        )
        return positions

    def other(
        self,
        rule: RuleId,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
        value: str = "",
        name: str | None = None,
        group: int = 0,
    ) -> None:
        """A finding not on one row (whole-upload: group 0; centre-level: group 2)."""
        self.parts.append(
            pd.DataFrame(
                {
                    "_pos": [-1],
                    "_group": [group],
                    "row": [row],
                    "column": [column],
                    "value": [value],
                    "rule": [str(rule)],
                    "message": [message],
                    "field": [name],
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        """The internal table (with ``_pos`` and ``_group``)."""
        if not self.parts:
            return pd.DataFrame(
                columns=["_pos", "_group", "row", "column", "value", "rule", "message", "field"]
            )
        return pd.concat(self.parts, ignore_index=True)


def _finish(
    internal: pd.DataFrame, centre: str, file: str, sheet: str, field_order: Sequence[str]
) -> pd.DataFrame:
    """Internal findings -> the contract's findings table, sorted as the person reads."""
    if not len(internal):
        return _empty_findings()
    frame = internal.copy()
    order = {name: i for i, name in enumerate(field_order)}
    frame["_field_order"] = frame["field"].map(order).fillna(len(order)).astype(int)
    frame = frame.sort_values(["_group", "_pos", "_field_order"], kind="stable")
    frame["centre"] = centre
    frame["file"] = file
    frame["sheet"] = sheet
    frame["severity"] = frame["rule"].map({str(k): r.severity for k, r in RULES.items()})
    frame["value"] = (
        frame["value"].astype(object).where(frame["value"].notna(), "").astype(str)
    ).str.replace(r"T00:00:00$", "", regex=True)
    out = frame[list(FINDING_COLUMNS)].reset_index(drop=True)
    out["row"] = pd.to_numeric(out["row"], errors="coerce").astype("Int64")
    return out


# --------------------------------------------------------------------------------------------
# Row-level rules
# --------------------------------------------------------------------------------------------


def _as_float(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _as_dates(values: pd.DataFrame, name: str) -> np.ndarray:
    if name not in values:
        return np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    return pd.to_datetime(values[name], errors="coerce").to_numpy(dtype="datetime64[ns]")


def _as_text(values: pd.DataFrame, name: str) -> np.ndarray:
    if name not in values:
        return np.full(len(values), None, dtype=object)
    series = values[name]
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)


def _conversion_issues(
    mapped: MappedTable, vals: pd.DataFrame, out: _Collector
) -> dict[str, np.ndarray]:
    """``type``/``code``/``integer`` from the mapping; the cells become missing."""
    failed: dict[str, np.ndarray] = {}
    issues = mapped.issues
    if not len(issues):
        return failed
    n = len(vals)
    unbound = issues["field"].isna()
    for _, item in issues.loc[unbound].iterrows():  # row checks: a finding on their column
        out.parts.append(
            pd.DataFrame(
                {
                    "_pos": [int(item["row"])], "_group": [1],
                    "row": [mapped.source_rows[int(item["row"])]], "column": [item["column"]],
                    "value": [item["value"]], "rule": [str(item["rule"])],
                    "message": [f"{item['message']}; got '{item['value']}'."], "field": [None],
                }
            )
        )  # fmt: skip
    issues = issues.loc[~unbound]
    if not len(issues):
        return failed
    column_col = issues["column"] if "column" in issues else pd.Series(None, index=issues.index)
    own = column_col.isna() | (column_col.astype(object) == issues["field"].map(mapped.column_of))
    for (name, rule, is_own), part in issues.assign(_own=own.to_numpy()).groupby(
        ["field", "rule", "_own"], sort=False
    ):
        positions = part["row"].to_numpy(dtype=np.int64)
        value = part["value"].astype(str).to_numpy()
        messages = [f"{m}; got '{v}'." for m, v in zip(part["message"], value, strict=True)]
        columns = None if is_own else part["column"].astype(str).to_numpy()
        out.cells(positions, str(name), RuleId(str(rule)), messages, columns=columns, values=value)
        if is_own and rule != RuleId.CENTRE_MISMATCH:  # the row is blocked, the centre kept
            mask = failed.setdefault(str(name), np.zeros(n, dtype=bool))
            mask[positions] = True
    for name, mask in failed.items():
        if name in vals:
            if vals[name].dtype == bool or str(vals[name].dtype) == "boolean":
                vals[name] = vals[name].astype("boolean").mask(mask)
            else:
                vals[name] = vals[name].mask(mask)
    return failed


def _range_rules(
    spec: TableSpec, vals: pd.DataFrame, out: _Collector, failed: dict[str, np.ndarray]
) -> None:
    """``range`` (error, cell set missing) and ``plausible_range`` (warning)."""
    n = len(vals)
    for name, fs in spec.fields.items():
        if fs.type not in ("integer", "number") or name not in vals:
            continue
        x = _as_float(vals[name])
        unit = (
            f" {fs.unit}"
            if fs.unit and fs.unit not in ("percent",)
            else (" %" if fs.unit == "percent" else "")
        )
        with np.errstate(invalid="ignore"):
            low = x < fs.min if fs.min is not None else np.zeros(n, dtype=bool)
            high = x > fs.max if fs.max is not None else np.zeros(n, dtype=bool)
        bad = low | high
        if bad.any():
            limits = (
                f"between {_num(fs.min)} and {_num(fs.max)}{unit}"
                if fs.min is not None and fs.max is not None
                else (f"at least {_num(fs.min)}{unit}" if fs.min is not None
                      else f"at most {_num(fs.max)}{unit}")  # type: ignore[arg-type]
            )  # fmt: skip
            values = x[bad]
            out.cells(
                bad, name, RuleId.RANGE,
                (f"'{name}' must be {limits}; got {_num(v)}{unit}. The value is treated as "
                 "missing; check the cell and the unit." for v in values),
            )  # fmt: skip
            vals[name] = vals[name].mask(bad)
            failed.setdefault(name, np.zeros(n, dtype=bool))[bad] = True
        if fs.warn_min is None and fs.warn_max is None:
            continue
        with np.errstate(invalid="ignore"):
            wlow = x < fs.warn_min if fs.warn_min is not None else np.zeros(n, dtype=bool)
            whigh = x > fs.warn_max if fs.warn_max is not None else np.zeros(n, dtype=bool)
        warn = (wlow | whigh) & ~bad
        if warn.any():
            lo = _num(fs.warn_min) if fs.warn_min is not None else "-"
            hi = _num(fs.warn_max) if fs.warn_max is not None else "-"
            out.cells(
                warn, name, RuleId.PLAUSIBLE_RANGE,
                (f"'{name}' = {_num(v)}{unit} is outside the plausible range {lo} to {hi}"
                 f"{unit}; please confirm the value." for v in x[warn]),
            )  # fmt: skip


def _required_rules(
    spec: TableSpec,
    mapped: MappedTable,
    vals: pd.DataFrame,
    out: _Collector,
    failed: dict[str, np.ndarray],
) -> np.ndarray:
    """``required_missing`` on empty required cells; returns rows missing a required value."""
    n = len(vals)
    missing_any = np.zeros(n, dtype=bool)
    for name, fs in spec.fields.items():
        if not fs.required or name not in vals:
            continue
        empty = vals[name].isna().to_numpy()
        missing_any |= empty
        delivered_empty = empty & ~failed.get(name, np.zeros(n, dtype=bool))
        if delivered_empty.any():
            out.cells(
                delivered_empty, name, RuleId.REQUIRED_MISSING,
                f"'{name}' is required but empty; the row is excluded until it is filled in.",
            )  # fmt: skip
    return missing_any


def _duplicate_rule(spec: TableSpec, vals: pd.DataFrame, out: _Collector) -> np.ndarray:
    """``duplicate_id`` on every occurrence after the first; returns all occurrences."""
    n = len(vals)
    key_fields = [k for k in spec.key if k != "centre" and k in vals]
    if "patient_id" not in key_fields:
        return np.zeros(n, dtype=bool)
    parts = [vals[k].astype(object) for k in key_fields]
    valid = np.logical_and.reduce([p.notna().to_numpy() for p in parts])
    key = parts[0].astype(str).str.strip()
    for p in parts[1:]:
        key = key + "\x1f" + p.astype(str)
    key = key.where(valid)
    every = key.duplicated(keep=False).to_numpy() & valid
    if not every.any():
        return every
    later = key.duplicated(keep="first").to_numpy() & valid
    codes, _ = pd.factorize(key)
    first = pd.Series(np.arange(n)).groupby(codes).transform("min").to_numpy()
    first_rows = out.mapped.source_rows[first[later]]
    ids = vals["patient_id"].astype(str).to_numpy()[later]
    what = "patient id" if len(key_fields) == 1 else "patient id and time point"
    out.cells(
        later, "patient_id", RuleId.DUPLICATE_ID,
        (f"{what} '{pid}' already occurs on row {r} (first occurrence); every occurrence is "
         "excluded until the duplicate is resolved." for pid, r in zip(ids, first_rows, strict=True)),
    )  # fmt: skip
    return every


def _date_rules(
    schema: Schema,
    vals: pd.DataFrame,
    out: _Collector,
    today: np.datetime64,
    spec: ValidationSpec,
) -> None:
    """``future_date``, ``date_order``, ``contact_after_death``, ``death_before_recurrence``,
    ``event_after_last_contact``. A flagged date is left out of the rules that follow."""
    table = schema.table(out.mapped.table)
    date_fields = [f for f, fs in table.fields.items() if fs.type == "date" and f in vals]
    if not date_fields:
        return
    d = {f: _as_dates(vals, f) for f in date_fields}
    delivered = {f: ~np.isnat(v) for f, v in d.items()}

    def get(name: str) -> np.ndarray:
        if name in d:
            return d[name]
        return np.full(len(vals), np.datetime64("NaT"), dtype="datetime64[ns]")

    def drop(name: str, mask: np.ndarray) -> None:
        d[name] = np.where(mask, np.datetime64("NaT"), d[name])

    h = out.header
    # future dates
    for f in date_fields:
        future = d[f] > today
        if future.any():
            out.cells(
                future, f, RuleId.FUTURE_DATE,
                (f"'{f}' {x} is after the day of validation ({_iso(np.array([today]))[0]}); "
                 "check the year." for x in _iso(d[f][future])),
            )  # fmt: skip
            drop(f, future)
    if out.mapped.table != "patients":
        return
    n = len(vals)
    setting = _as_text(vals, "setting")
    diagnosis, surgery = get("diagnosis_date"), get("surgery_date")
    # surgery before diagnosis
    bad = surgery < diagnosis
    if bad.any():
        out.cells(
            bad, "surgery_date", RuleId.DATE_ORDER,
            (f"surgery date {s} is before the diagnosis date {x} (column '{h('diagnosis_date')}')."
             for s, x in zip(_iso(surgery[bad]), _iso(diagnosis[bad]), strict=True)),
        )  # fmt: skip
        drop("surgery_date", bad)
    # event and contact dates before the origin
    origin_field = np.full(n, schema.origin.get("early", "diagnosis_date"), dtype=object)
    for name, f in schema.origin.items():
        origin_field[setting == name] = f
    origin = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    for f in set(origin_field):
        rows = origin_field == f
        origin[rows] = get(str(f))[rows]
    for f in FOLLOWUP_DATES:
        if f not in d:
            continue
        bad = d[f] < origin
        if bad.any():
            of = origin_field[bad]
            out.cells(
                bad, f, RuleId.DATE_ORDER,
                (f"'{f}' {x} is before the time origin, {o} {y} (column '{h(str(o))}')."
                 for x, o, y in zip(_iso(d[f][bad]), of, _iso(origin[bad]), strict=True)),
            )  # fmt: skip
            drop(f, bad)
    # sample date window in early disease
    if "sample_date" in d:
        early = setting == "early"
        sample = d["sample_date"]
        before = early & (sample < diagnosis - spec.sample_before_diagnosis_days * _DAY)
        after = early & (sample > get("surgery_date") + spec.sample_after_surgery_days * _DAY)
        after &= ~before
        if before.any():
            out.cells(
                before, "sample_date", RuleId.DATE_ORDER,
                (f"sample date {s} is more than {spec.sample_before_diagnosis_days} days before "
                 f"the diagnosis date {x} (column '{h('diagnosis_date')}')."
                 for s, x in zip(_iso(sample[before]), _iso(diagnosis[before]), strict=True)),
            )  # fmt: skip
        if after.any():
            out.cells(
                after, "sample_date", RuleId.DATE_ORDER,
                (f"sample date {s} is more than {spec.sample_after_surgery_days} days after the "
                 f"surgery date {x} (column '{h('surgery_date')}')."
                 for s, x in zip(_iso(sample[after]), _iso(get("surgery_date")[after]),
                                 strict=True)),
            )  # fmt: skip
        drop("sample_date", before | after)
    death, contact = get("death_date"), get("last_contact_date")
    # last contact long after death
    bad = contact > death + spec.contact_after_death_days * _DAY
    if bad.any():
        out.cells(
            bad, "last_contact_date", RuleId.CONTACT_AFTER_DEATH,
            (f"last contact {c} is more than {spec.contact_after_death_days} days after the "
             f"death date {x} (column '{h('death_date')}')."
             for c, x in zip(_iso(contact[bad]), _iso(death[bad]), strict=True)),
        )  # fmt: skip
        contact = np.where(bad, np.datetime64("NaT"), contact)
    # death before a recurrence / distant recurrence / progression: one finding per row
    later_names = np.full(n, "", dtype=object)
    for f in RECURRENCE_DATES:
        if f in d:
            after_death = d[f] > death
            later_names[after_death] = (
                later_names[after_death]
                + np.where(later_names[after_death] == "", "", ", ")
                + f"'{f}' ({h(f)})"
            )
    bad = later_names != ""
    if bad.any():
        out.cells(
            bad, "death_date", RuleId.DEATH_BEFORE_RECURRENCE,
            (f"death date {x} is before {names}; correct the death or the event date."
             for x, names in zip(_iso(death[bad]), later_names[bad], strict=True)),
        )  # fmt: skip
    # events after the last contact of a living patient (or after death, for treatment failure)
    dead = delivered.get("death_date", np.zeros(n, dtype=bool))
    for f in EVENT_DATES:
        if f not in d:
            continue
        alive_bad = ~dead & (d[f] > contact)
        dead_bad = dead & (d[f] > death) if f not in RECURRENCE_DATES else np.zeros(n, dtype=bool)
        if alive_bad.any():
            out.cells(
                alive_bad, f, RuleId.EVENT_AFTER_LAST_CONTACT,
                (f"'{f}' {x} is after the last contact {c} (column '{h('last_contact_date')}') "
                 "of a patient not recorded dead; update the last contact date."
                 for x, c in zip(_iso(d[f][alive_bad]), _iso(contact[alive_bad]), strict=True)),
            )  # fmt: skip
        if dead_bad.any():
            out.cells(
                dead_bad, f, RuleId.EVENT_AFTER_LAST_CONTACT,
                (f"'{f}' {x} is after the death date {c} (column '{h('death_date')}')."
                 for x, c in zip(_iso(d[f][dead_bad]), _iso(death[dead_bad]), strict=True)),
            )  # fmt: skip


def _event_flag_rule(
    schema: Schema, mapped: MappedTable, vals: pd.DataFrame, out: _Collector
) -> None:
    """``event_flag``: a delivered ``<endpoint>_event`` contradicting the delivered dates."""
    n = len(vals)
    provided = mapped.column_of
    cause = _as_text(vals, "death_cause")
    for ep in schema.endpoints:
        flag_name = f"{ep.name}_event"
        if flag_name not in vals or flag_name not in provided:
            continue
        dates_mapped = [f for f in ep.event_dates if f in provided and f in vals]
        if not dates_mapped:
            continue
        flag = vals[flag_name].astype("boolean")
        is_true = flag.fillna(False).to_numpy(dtype=bool)
        is_false = (~flag).fillna(False).to_numpy(dtype=bool)
        presence = {f: ~np.isnat(_as_dates(vals, f)) for f in dates_mapped}
        if ep.death_cause is not None:
            death = presence.get("death_date", np.zeros(n, dtype=bool))
            has_event = death & (cause == ep.death_cause)
            for f, present in presence.items():
                if f != "death_date":
                    has_event |= present
            other_cause = (cause != None) & (cause != ep.death_cause) & (cause != "unknown")  # noqa: E711
            no_event_known = ~has_event & (~death | other_cause)
            checkable = "death_date" in presence
        else:
            has_event = np.logical_or.reduce(list(presence.values()))
            no_event_known = ~has_event
            checkable = len(dates_mapped) == len(ep.event_dates)
        bad_false = is_false & has_event
        bad_true = is_true & no_event_known & checkable
        bad = bad_false | bad_true
        if not bad.any():
            continue
        dates_text = " or ".join(f"'{f}'" for f in ep.event_dates)
        messages = np.where(
            bad_false[bad],
            f"'{flag_name}' is 0 but the patient has {dates_text}"
            + (f" with cause {ep.death_cause}" if ep.death_cause else "")
            + "; correct the flag or the date.",
            f"'{flag_name}' is 1 but there is no {dates_text}"
            + (f" with cause {ep.death_cause}" if ep.death_cause else "")
            + "; add the event date or correct the flag.",
        )
        out.cells(bad, flag_name, RuleId.EVENT_FLAG, messages)


def _receptor_rule(schema: Schema, vals: pd.DataFrame, out: _Collector) -> None:
    """``receptor_consistency`` on er/pr/her2 status and the delivered subtype."""
    n = len(vals)
    threshold = float(schema.derived.get("receptor_positive_percent", 1.0))
    flagged = np.zeros(n, dtype=bool)
    effective: dict[str, np.ndarray] = {}
    for status, percent in (("er_status", "er_percent"), ("pr_status", "pr_percent")):
        given = _as_text(vals, status)
        pct = _as_float(vals[percent]) if percent in vals else np.full(n, np.nan)
        from_pct = np.where(pct >= threshold, "positive", "negative").astype(object)
        from_pct[np.isnan(pct)] = None
        bad = (given != None) & (from_pct != None) & (given != from_pct)  # noqa: E711
        if bad.any():
            out.cells(
                bad, status, RuleId.RECEPTOR_CONSISTENCY,
                (f"'{status}' is {g} but '{percent}' is {_num(p)} % (positive at >= "
                 f"{_num(threshold)} %, column '{out.header(percent)}')."
                 for g, p in zip(given[bad], pct[bad], strict=True)),
            )  # fmt: skip
            flagged |= bad
        effective[status] = np.where(given != None, given, from_pct)  # noqa: E711
    given_her2 = _as_text(vals, "her2_status")
    her2 = derive_her2_status(
        pd.Series(_as_text(vals, "her2_ihc")), pd.Series(_as_text(vals, "her2_ish"))
    )
    bad = (given_her2 != None) & (her2 != None) & (given_her2 != her2)  # noqa: E711
    if bad.any():
        ihc, ish = _as_text(vals, "her2_ihc"), _as_text(vals, "her2_ish")
        out.cells(
            bad, "her2_status", RuleId.RECEPTOR_CONSISTENCY,
            (f"'her2_status' is {g} but IHC {i or 'missing'} / ISH {s or 'missing'} means "
             f"{e} (positive: IHC 3+, or 2+ with ISH amplification)."
             for g, i, s, e in zip(given_her2[bad], ihc[bad], ish[bad], her2[bad], strict=True)),
        )  # fmt: skip
        flagged |= bad
    given_subtype = _as_text(vals, "subtype")
    if not (given_subtype != None).any():  # noqa: E711
        return
    derived = derive_subtype(
        effective["er_status"],
        effective["pr_status"],
        np.where(given_her2 != None, given_her2, her2),  # noqa: E711
        _as_float(vals["grade"]) if "grade" in vals else np.full(n, np.nan),
        _as_float(vals["ki67_percent"]) if "ki67_percent" in vals else np.full(n, np.nan),
        ki67_high=float(schema.derived.get("ki67_high_percent", 20.0)),
    )
    bad = (given_subtype != None) & (derived != None) & (given_subtype != derived) & ~flagged  # noqa: E711
    if bad.any():
        out.cells(
            bad, "subtype", RuleId.RECEPTOR_CONSISTENCY,
            (f"'subtype' is {g} but ER/PR/HER2, grade and Ki-67 give {e} (PADDY definition)."
             for g, e in zip(given_subtype[bad], derived[bad], strict=True)),
        )  # fmt: skip


def _read_notes(mapped: MappedTable, out: _Collector) -> None:
    """What the reader saw (ragged rows, stray quotes, data without a header, headers written
    twice, formulas without a saved value) as findings at the row and column."""
    if not mapped.notes:
        return
    position = {int(r): i for i, r in enumerate(mapped.source_rows)}
    field_of = {h: f for f, h in mapped.column_of.items() if h != CONSTANT}
    row_column = mapped.column_of.get("patient_id")
    row_column = None if row_column == CONSTANT else row_column
    for note in mapped.notes:
        rule = RuleId(note.kind)
        column = note.column if note.column is not None else row_column
        name = field_of.get(column) if column is not None else None
        pos = position.get(int(note.row)) if note.row is not None else None
        if RULES[rule].scope != "cell" or pos is None:
            out.other(rule, note.message, row=note.row, column=column, value=note.value,
                      name=name)  # fmt: skip
            continue
        out.parts.append(
            pd.DataFrame(
                {
                    "_pos": [pos], "_group": [1], "row": [note.row], "column": [column],
                    "value": [note.value], "rule": [str(rule)], "message": [note.message],
                    "field": [name],
                }
            )
        )  # fmt: skip


def _plausible_dates(
    schema: Schema, vals: pd.DataFrame, out: _Collector, failed: dict[str, np.ndarray]
) -> None:
    """``implausible_date``: dates before the schema's earliest plausible date (missing)."""
    if not schema.earliest_date:
        return
    earliest = np.datetime64(schema.earliest_date, "ns")
    table = schema.table(out.mapped.table)
    n = len(vals)
    for name, fs in table.fields.items():
        if fs.type != "date" or name not in vals:
            continue
        dates = _as_dates(vals, name)
        bad = dates < earliest
        if not bad.any():
            continue
        out.cells(
            bad, name, RuleId.IMPLAUSIBLE_DATE,
            (f"'{name}' {x} is before {schema.earliest_date}, the earliest plausible date in the "
             "schema; is it a year typed into a date cell, or the wrong century? The date is "
             "treated as missing." for x in _iso(dates[bad])),
        )  # fmt: skip
        vals[name] = vals[name].mask(bad)
        failed.setdefault(name, np.zeros(n, dtype=bool))[bad] = True


#: Endpoints whose events include death from any cause (their event follows a death).
def _death_endpoints(schema: Schema) -> tuple[str, ...]:
    return tuple(
        ep.name
        for ep in schema.endpoints
        if "death_date" in ep.event_dates and ep.death_cause is None and ep.name != "os"
    )


def _endpoint_consistency(
    schema: Schema, mapped: MappedTable, vals: pd.DataFrame, out: _Collector
) -> None:
    """``endpoint_consistency``: delivered endpoint flags and times that contradict each other
    under the schema's definitions (compared with the delivered overall survival)."""
    provided = {f for f, h in mapped.column_of.items() if f in vals}
    if not {"os_months", "os_event"} <= provided:
        return
    tolerance = 1.0 / float(schema.derived.get("days_per_month", 30.4375))
    os_event = vals["os_event"].astype("boolean")
    dead = os_event.fillna(False).to_numpy(dtype=bool)
    alive = (~os_event).fillna(False).to_numpy(dtype=bool)
    os_months = _as_float(vals["os_months"])
    for ep in schema.endpoints:
        if ep.name == "os":
            continue
        months, event = f"{ep.name}_months", f"{ep.name}_event"
        if event in provided:
            flag = vals[event].astype("boolean")
            is_false = (~flag).fillna(False).to_numpy(dtype=bool)
            is_true = flag.fillna(False).to_numpy(dtype=bool)
            if ep.name in _death_endpoints(schema):
                bad = dead & is_false
                out.cells(
                    bad, event, RuleId.ENDPOINT_CONSISTENCY,
                    f"'{event}' is 0 but 'os_event' is 1 (column '{out.header('os_event')}'): "
                    f"{ep.name.upper()} counts death as an event, so a patient who died has "
                    "had one. Correct the flag or the death.",
                )  # fmt: skip
            elif ep.death_cause is not None:
                bad = alive & is_true
                out.cells(
                    bad, event, RuleId.ENDPOINT_CONSISTENCY,
                    f"'{event}' is 1 (death from {ep.death_cause.replace('_', ' ')}) but "
                    f"'os_event' is 0 (column '{out.header('os_event')}'); correct one of them.",
                )  # fmt: skip
        if months in provided:
            x = _as_float(vals[months])
            with np.errstate(invalid="ignore"):
                if ep.death_cause is not None:
                    bad = np.abs(x - os_months) > tolerance
                    text = "differs from"
                else:
                    bad = x > os_months + tolerance
                    text = "is beyond"
            out.cells(
                bad, months, RuleId.ENDPOINT_CONSISTENCY,
                (f"'{months}' = {_num(a)} {text} 'os_months' = {_num(b)} (column "
                 f"'{out.header('os_months')}'); {ep.name.upper()} ends at the latest with death "
                 "or last contact. Check both times." for a, b in zip(x[bad], os_months[bad],
                                                                      strict=True)),
            )  # fmt: skip


def _derived_ranges(
    schema: Schema, mapped: MappedTable, data: pd.DataFrame, out: _Collector, skip: np.ndarray
) -> None:
    """``derived_range``: survival times computed from dates outside the schema's range for
    that time (one finding per row, on the date that ends the time); those endpoints are set
    missing on the row (``data`` is changed in place). Rows in ``skip`` (already blocked)
    are left alone."""
    table = schema.table(mapped.table)
    if "endpoints_from" not in data:
        return
    from_dates = (data["endpoints_from"] == "dates").to_numpy() & ~skip
    if not from_dates.any():
        return
    n = len(data)
    texts = np.full(n, "", dtype=object)
    end_of = np.full(n, "", dtype=object)
    for ep in schema.endpoints:
        months, event = f"{ep.name}_months", f"{ep.name}_event"
        fs = table.fields.get(months)
        if fs is None or months not in data:
            continue
        x = data[months].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = from_dates & (
                ((x > fs.max) if fs.max is not None else np.zeros(n, dtype=bool))
                | ((x < fs.min) if fs.min is not None else np.zeros(n, dtype=bool))
            )
        if not bad.any():
            continue
        # the date that ends the time: the first event date, else death / last contact
        ended_by_death = data["death_date"].notna().to_numpy() if "death_date" in data else None
        end_field = np.where(
            data[event].fillna(False).to_numpy(dtype=bool),
            _first_event_field(data, ep.event_dates),
            "last_contact_date" if ended_by_death is None
            else np.where(ended_by_death, "death_date", "last_contact_date"),
        )  # fmt: skip
        first = bad & (end_of == "")
        end_of[first] = end_field[first]
        limit = f"{_num(fs.min or 0)} to {_num(fs.max) if fs.max is not None else '-'}"
        texts[bad] = [
            t + ("; " if t else "") + f"{months} {_num(v)} (range {limit})"
            for t, v in zip(texts[bad], x[bad], strict=True)
        ]
        data.loc[bad, months] = np.nan
        data[event] = data[event].astype("boolean").mask(bad)
    flagged = texts != ""
    for field_name in sorted(set(end_of[flagged])):
        rows = flagged & (end_of == field_name)
        out.cells(
            rows, str(field_name), RuleId.DERIVED_RANGE,
            (f"survival times computed from the dates fall outside the schema's range: {t}; "
             "check this date and the time origin. These endpoints are treated as missing."
             for t in texts[rows]),
            columns=out.header(str(field_name)),
        )  # fmt: skip


def _first_event_field(data: pd.DataFrame, fields: Sequence[str]) -> np.ndarray:
    """Per row, the name of the earliest of ``fields`` present (``""`` where none)."""
    n = len(data)
    best = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    name = np.full(n, "", dtype=object)
    for f in fields:
        d = _as_dates(data, f)
        better = ~np.isnat(d) & (np.isnat(best) | (d < best))
        best = np.where(better, d, best)
        name[better] = f
    return name


# --------------------------------------------------------------------------------------------
# Centre-level rules on one table
# --------------------------------------------------------------------------------------------


def reverse_km_followup(
    months: np.ndarray, event: np.ndarray, probs: Sequence[float] = (0.25, 0.5, 0.75)
) -> tuple[float, ...]:
    """Quantiles of follow-up by the reverse Kaplan-Meier method.

    Censoring is the "event" and deaths are censored (``survfit(Surv(time, 1 - event) ~ 1)``);
    quantiles follow R's ``quantile.survfit`` (the first time the curve falls to ``1 - p``,
    the midpoint where it is flat at exactly ``1 - p``).

    Parameters
    ----------
    months : array of follow-up times.
    event : array of event indicators (1 = event, 0 = censored).
    probs : quantiles wanted (0.5 = median follow-up).

    Returns
    -------
    tuple of float
        One value per ``probs`` (NaN where the curve never reaches ``1 - p``).

    References
    ----------
    .. [1] Schemper M, Smith TL. A note on quantifying follow-up in studies of failure time.
       Control Clin Trials 1996;17:343-6.

    Examples
    --------
    >>> reverse_km_followup(np.array([10, 20, 30, 40, 50.]), np.array([0, 1, 0, 0, 1]))[1]
    40.0
    """
    time = np.asarray(months, dtype="float64")
    status = 1.0 - np.asarray(event, dtype="float64")
    ok = ~(np.isnan(time) | np.isnan(status))
    time, status = time[ok], status[ok]
    if time.size == 0:
        return tuple(float("nan") for _ in probs)
    order = np.argsort(time, kind="stable")
    time, status = time[order], status[order]
    unique, start = np.unique(time, return_index=True)
    n_risk = time.size - start
    n_event = np.add.reduceat(status, start)
    surv = np.cumprod(1.0 - n_event / n_risk)
    changes = n_event > 0
    t_ev, s_ev = unique[changes], surv[changes]
    tmax = float(unique[-1])
    tol = float(np.sqrt(np.finfo(float).eps))
    result = []
    for p in probs:
        target = 1.0 - p
        hit = np.flatnonzero(s_ev <= target + tol)
        if hit.size == 0:
            result.append(float("nan"))
            continue
        k = int(hit[0])
        if abs(s_ev[k] - target) < tol:
            following = t_ev[k + 1] if k + 1 < t_ev.size else tmax
            result.append(float((t_ev[k] + following) / 2.0))
        else:
            result.append(float(t_ev[k]))
    return tuple(result)


def _centre_rules(
    schema: Schema,
    mapped: MappedTable,
    mapping: CentreMapping,
    data: pd.DataFrame,
    empty_delivered: Mapping[str, np.ndarray],
    out: _Collector,
    spec: ValidationSpec,
) -> None:
    """``mostly_missing``, ``followup_completeness``, ``median_followup``, ``reported_*``."""
    table = schema.table(mapped.table)
    n = len(data)
    if n == 0:
        return
    setting = _as_text(data, "setting")
    event_dates = {f for ep in schema.endpoints for f in ep.event_dates}
    for name, header in mapped.column_of.items():
        fs = table.fields.get(name)
        if header == CONSTANT or fs is None or name in event_dates or name in SPARSE_BY_DESIGN:
            continue
        rows = np.isin(setting, list(fs.settings)) if fs.settings else np.ones(n, dtype=bool)
        if rows.sum() < 1:
            continue
        share = float(empty_delivered[name][rows].mean())
        if share > spec.mostly_missing_share:
            out.other(
                RuleId.MOSTLY_MISSING,
                f"'{name}' is empty in {share:.0%} of {int(rows.sum())} rows"
                + (f" ({', '.join(fs.settings)} disease)" if fs.settings else "")
                + "; please complete it if the data exist.",
                column=header, name=name, value=f"{share:.3f}", group=2,
            )  # fmt: skip
    if mapped.table != "patients":
        return
    _followup_rules(schema, data, out, spec)
    _reported_rules(schema, mapped, mapping, data, out, spec)


def _origin(schema: Schema, data: pd.DataFrame) -> np.ndarray:
    setting = _as_text(data, "setting")
    origin = _as_dates(data, schema.origin.get("early", "diagnosis_date"))
    for name, f in schema.origin.items():
        rows = setting == name
        origin = np.where(rows, _as_dates(data, f), origin)
    return origin


def _followup_rules(
    schema: Schema, data: pd.DataFrame, out: _Collector, spec: ValidationSpec
) -> None:
    ok = ~data["blocking"].to_numpy(dtype=bool)
    if "os_months" in data:
        months = data["os_months"].to_numpy(dtype="float64", na_value=np.nan)[ok]
        event = data["os_event"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)[ok]
        usable = ~(np.isnan(months) | np.isnan(event))
        if usable.sum() >= 1:
            q1, median, q3 = reverse_km_followup(months[usable], event[usable])
            out.other(
                RuleId.MEDIAN_FOLLOWUP,
                f"median follow-up {median:.1f} months (IQR {q1:.1f} to {q3:.1f}) by reverse "
                f"Kaplan-Meier, {int(usable.sum())} patients, {int(event[usable].sum())} deaths.",
                value=f"{median:.6g}", name="os_months", group=2,
            )  # fmt: skip
    if "last_contact_date" not in data or data["last_contact_date"].isna().all():
        return
    origin = _origin(schema, data)
    death = _as_dates(data, "death_date")
    contact = _as_dates(data, "last_contact_date")
    end = np.where(np.isnat(death), contact, death)
    usable_end = end[ok & ~np.isnat(end)]
    if usable_end.size == 0:
        return
    cutoff = usable_end.max()
    observed = (end - origin) / _DAY
    potential = (np.where(np.isnat(death), cutoff, death) - origin) / _DAY
    use = ok & ~np.isnan(observed) & ~np.isnan(potential) & (observed >= 0) & (potential > 0)
    if use.sum() < spec.min_patients:
        return
    clark = float(np.minimum(observed[use], potential[use]).sum() / potential[use].sum())
    early = use & (_as_text(data, "setting") == "early")
    five = float(np.mean(potential[early] >= 5 * 365.25)) if early.sum() else float("nan")
    low_c = clark < spec.completeness_min
    low_five = early.sum() >= spec.min_patients and five < spec.five_year_share_min
    if low_c or low_five:
        cut = _iso(np.array([cutoff]))[0]
        parts = [f"Clark's completeness index {clark:.2f} (threshold {spec.completeness_min:g})"]
        if early.sum():
            parts.append(
                f"{five:.0%} of early patients with >= 5 years of potential follow-up "
                f"(threshold {spec.five_year_share_min:.0%})"
            )
        out.other(
            RuleId.FOLLOWUP_COMPLETENESS,
            "follow-up up to the data cut-off " + cut + ": " + "; ".join(parts)
            + ". Please update the last contact dates.",
            column=out.header("last_contact_date"), name="last_contact_date",
            value=f"{clark:.4f}", group=2,
        )  # fmt: skip


def _positive(data: pd.DataFrame, marker: str, threshold: float | None, spec: ValidationSpec):
    """Marker positivity (True/False, NaN where unknown) per row."""
    n = len(data)
    if marker == "ctc_positive":
        x = data["ctc_per_7_5ml"].to_numpy(dtype="float64", na_value=np.nan)
        if threshold is None:
            setting = _as_text(data, "setting")
            cut = np.array([spec.ctc_threshold.get(str(s), np.nan) for s in setting], dtype=float)
        else:
            cut = np.full(n, threshold)
    elif marker == "dtc_positive":
        x = _as_float(data["dtc_count"]) if "dtc_count" in data else np.full(n, np.nan)
        cut = np.full(n, 1.0 if threshold is None else threshold)
    else:
        return None
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(x) | np.isnan(cut), np.nan, (x >= cut).astype(float))


def _reported_rules(
    schema: Schema,
    mapped: MappedTable,
    mapping: CentreMapping,
    data: pd.DataFrame,
    out: _Collector,
    spec: ValidationSpec,
) -> None:
    """PRISMA-IPD integrity: ``reported_patients``, ``reported_events``, ``reported_positivity``."""
    reported = mapping.reported
    if not reported:
        return
    where = f"{mapping.path}: reported"
    pid = data["patient_id"] if "patient_id" in data else pd.Series([], dtype=object)
    first = ~pid.duplicated(keep="first").to_numpy() & pid.notna().to_numpy()
    n_patients = int(first.sum())
    if "patients" in reported:
        expected = _number(reported["patients"], f"{where}.patients")
        diff = n_patients - expected
        if expected > 0 and abs(diff) / expected > spec.patients_tolerance:
            out.other(
                RuleId.REPORTED_PATIENTS,
                f"the upload has {n_patients} patients but the centre reported "
                f"{_num(expected)} ({diff:+.0f}, {diff / expected:+.1%}; tolerance "
                f"{spec.patients_tolerance:.0%}). Send the missing patients or explain the "
                "difference.",
                column=out.header("patient_id"), name="patient_id", value=str(n_patients),
                group=2,
            )  # fmt: skip
    events = reported.get("events") or {}
    if not isinstance(events, Mapping):
        raise MappingError(f"{where}.events: expected endpoint: count pairs; got {events!r}.")
    for ep, value in events.items():
        expected = _number(value, f"{where}.events.{ep}")
        column = f"{ep}_event"
        if column not in data:
            raise MappingError(
                f"{where}.events: '{ep}' is not an endpoint of the schema; endpoints are "
                f"{', '.join(schema.endpoint_names)}."
            )
        got = int(data[column].astype("boolean").fillna(False).to_numpy(dtype=bool)[first].sum())
        diff = got - expected
        if abs(diff) > max(1.0, spec.events_tolerance * expected):
            out.other(
                RuleId.REPORTED_EVENTS,
                f"the upload has {got} {ep} events but the centre reported {_num(expected)} "
                f"({diff:+.0f}; tolerance {spec.events_tolerance:.0%}). Check event dates and "
                "follow-up.",
                column=out.header(column), name=column, value=str(got), group=2,
            )  # fmt: skip
    positivity = reported.get("positivity") or {}
    if not isinstance(positivity, Mapping):
        raise MappingError(f"{where}.positivity: expected marker: share pairs; got {positivity!r}.")
    for marker, value in positivity.items():
        threshold = None
        if isinstance(value, Mapping):
            threshold = value.get("threshold")
            value = value.get("share")
        share = _number(value, f"{where}.positivity.{marker}")
        positive = _positive(
            data, str(marker), None if threshold is None else float(threshold), spec
        )
        if positive is None:
            raise MappingError(
                f"{where}.positivity: '{marker}' is not a known marker; use ctc_positive or "
                "dtc_positive (optionally {share: 0.3, threshold: 5})."
            )
        known = first & ~np.isnan(positive)
        if not known.any():
            continue
        got_share = float(positive[known].mean())
        if abs(got_share - share) > spec.positivity_tolerance:
            source = "ctc_count" if marker == "ctc_positive" else "dtc_count"
            out.other(
                RuleId.REPORTED_POSITIVITY,
                f"{got_share:.1%} of {int(known.sum())} patients are {marker.replace('_', ' ')} but "
                f"the centre reported {share:.1%} (tolerance "
                f"{spec.positivity_tolerance * 100:g} percentage points).",
                column=out.header(source), name=source, value=f"{got_share:.4f}", group=2,
            )  # fmt: skip


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(f"{where}: expected a number; got {value!r}.")
    return float(value)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def _today(today: Today) -> np.datetime64:
    stamp = pd.Timestamp(today) if today is not None else pd.Timestamp.today()
    return stamp.normalize().to_datetime64().astype("datetime64[ns]")


def _header_row(mapped: MappedTable, mapping: CentreMapping) -> int | None:
    row = getattr(mapped, "header_row", None)
    if row is not None:
        return int(row)
    if mapped.file.lower().endswith((".sav", ".zsav", ".dta")):
        return 0
    source = mapping.source(mapped.table)
    return source.header_row if source is not None else 1


def _schema_frame(spec: TableSpec, vals: pd.DataFrame) -> pd.DataFrame:
    """All schema fields of the table, in schema order, with their types."""
    n = len(vals)
    columns: dict[str, Any] = {}
    for name, fs in spec.fields.items():
        if name in vals:
            column = vals[name]
        elif fs.type == "date":
            column = pd.Series(pd.NaT, index=vals.index, dtype="datetime64[ns]")
        elif fs.type == "boolean":
            column = pd.Series(pd.NA, index=vals.index, dtype="boolean")
        elif fs.type in ("integer", "number"):
            column = pd.Series(np.full(n, np.nan), index=vals.index)
        else:
            column = pd.Series([None] * n, index=vals.index, dtype=object)
        columns[name] = column
    return pd.DataFrame(columns, index=vals.index)


def _finalise_types(spec: TableSpec, data: pd.DataFrame) -> pd.DataFrame:
    for name, fs in spec.fields.items():
        if fs.type == "integer":
            data[name] = pd.to_numeric(data[name], errors="coerce").round().astype("Int64")
        elif fs.type == "boolean":
            data[name] = data[name].astype("boolean")
    return data


def _blocking(
    internal: pd.DataFrame, n: int, extra: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """``blocking`` and ``reasons`` per row from blocking findings plus extra masks."""
    blocking_ids = blocking_rules()
    pairs = []
    if len(internal):
        cell = internal[(internal["_pos"] >= 0) & internal["rule"].isin(blocking_ids)]
        pairs.append(cell[["_pos", "rule"]].rename(columns={"_pos": "pos"}))
    for rule_id, mask in extra.items():
        if mask.any():
            pairs.append(pd.DataFrame({"pos": np.flatnonzero(mask), "rule": rule_id}))
    blocking = np.zeros(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    if pairs:
        both = pd.concat(pairs, ignore_index=True).drop_duplicates()
        if len(both):
            joined = both.sort_values(["pos", "rule"]).groupby("pos")["rule"].agg(";".join)
            positions = joined.index.to_numpy(dtype=np.int64)
            blocking[positions] = True
            reasons[positions] = joined.to_numpy(dtype=object)
    return blocking, reasons


def validate(
    mapped: MappedTable,
    mapping: CentreMapping,
    *,
    schema: Schema | None = None,
    today: Today = None,
    patients: HarmonisedTable | None = None,
    spec: ValidationSpec | None = None,
) -> tuple[ValidationReport, HarmonisedTable]:
    """Validate one mapped upload table and build its harmonised table.

    Runs every row-level rule, the whole-upload rules and the centre-level rules that need
    only this centre's data (see ``docs/validation_rules.md``), lazily: every failure is a
    finding, none stops the run.

    Parameters
    ----------
    mapped : MappedTable
        From :func:`harmonization.mapping.apply_mapping`.
    mapping : CentreMapping
        The centre's mapping (its ``reported:`` block feeds the integrity checks).
    schema : Schema, optional
        Default :func:`~harmonization.schema.load_schema`.
    today : date, optional
        The validation day (later dates are ``future_date`` findings); default today.
    patients : HarmonisedTable, optional
        For a samples table: the centre's validated patients table (rule ``orphan_sample``).
    spec : ValidationSpec, optional
        Thresholds; default :class:`ValidationSpec`.

    Returns
    -------
    report : ValidationReport
    table : HarmonisedTable
        One row per upload data row (none dropped), blocking rows flagged with reasons.

    References
    ----------
    .. [1] Stewart LA, et al. Preferred reporting items for a systematic review and
       meta-analysis of individual participant data: the PRISMA-IPD statement. JAMA
       2015;313:1657-65.
    .. [2] Clark TG, Altman DG, De Stavola BL. Quantification of the completeness of follow-up.
       Lancet 2002;359:1309-10.

    Examples
    --------
    >>> from harmonization.mapping import read_and_map  # doctest: +SKIP
    >>> mapped = read_and_map("ulm.xlsx", mapping)[0]  # doctest: +SKIP
    >>> report, table = validate(mapped, mapping)  # doctest: +SKIP
    >>> report.counts_by_severity  # doctest: +SKIP
    {'error': 3, 'warning': 5, 'info': 2}
    """
    schema = schema or load_schema()
    spec = spec or ValidationSpec()
    table_spec = schema.table(mapped.table)
    n = mapped.n_rows
    header_row = _header_row(mapped, mapping)
    out = _Collector(mapped, header_row)
    vals = mapped.values.copy()
    # whole-upload rules
    for name in mapped.missing_required:
        out.other(
            RuleId.REQUIRED_COLUMN,
            f"required field '{name}' is not mapped: add it to the centre mapping (a column, or "
            f"a constant such as '{name}: {{value: ...}}'). Every row is excluded until then.",
            row=header_row, column=name, name=name,
        )  # fmt: skip
    for header in mapped.unmapped_columns:
        out.other(
            RuleId.UNMAPPED_COLUMN,
            f"column '{header}' is not mapped to any schema field and was not read.",
            row=header_row, column=header,
        )  # fmt: skip
    if n == 0:
        out.other(
            RuleId.NO_DATA_ROWS,
            f"the table has a header (row {header_row}) but no data rows; check the sheet and "
            "the header row in the mapping, or ask the centre to resend the data.",
            row=header_row,
        )  # fmt: skip
    _read_notes(mapped, out)
    if mapped.blank_rows:
        out.other(
            RuleId.BLANK_ROWS,
            f"{mapped.blank_rows} blank row(s) between data rows were skipped.",
            row=header_row, value=str(mapped.blank_rows),
        )  # fmt: skip
    # row-level rules
    failed = _conversion_issues(mapped, vals, out)
    empty_delivered = {
        name: vals[name].isna().to_numpy() & ~failed.get(name, np.zeros(n, dtype=bool))
        for name in vals.columns
    }
    _range_rules(table_spec, vals, out, failed)
    _plausible_dates(schema, vals, out, failed)
    required_gone = _required_rules(table_spec, mapped, vals, out, failed)
    duplicates = _duplicate_rule(table_spec, vals, out)
    _date_rules(schema, vals, out, _today(today), spec)
    if mapped.table == "patients":
        _event_flag_rule(schema, mapped, vals, out)
        _endpoint_consistency(schema, mapped, vals, out)
        _receptor_rule(schema, vals, out)
    internal = out.frame()
    extra = {
        str(RuleId.DUPLICATE_ID): duplicates,
        str(RuleId.REQUIRED_MISSING): required_gone,
        str(RuleId.REQUIRED_COLUMN): np.full(n, bool(mapped.missing_required)),
    }
    blocking, reasons = _blocking(internal, n, extra)
    data = _schema_frame(table_spec, vals)
    data = derive_fields(
        data, schema, table=mapped.table,
        prefer="durations" if mapped.delivers == "durations" else "dates",
        duration_origin=mapped.origin,
    )  # fmt: skip
    if mapped.table == "patients":
        _derived_ranges(schema, mapped, data, out, blocking)
    data = _finalise_types(table_spec, data)
    data["source_file"] = mapped.file
    data["source_sheet"] = mapped.sheet
    data["source_row"] = np.asarray(mapped.source_rows, dtype=np.int64)
    data["blocking"] = blocking
    data["reasons"] = reasons
    _centre_rules(schema, mapped, mapping, data, empty_delivered, out, spec)
    internal = out.frame()
    findings = _finish(internal, mapped.centre, mapped.file, mapped.sheet, list(vals.columns))
    harmonised = HarmonisedTable(
        centre=mapped.centre,
        table=mapped.table,
        data=data,
        file=mapped.file,
        sha256=mapped.sha256,
        sheet=mapped.sheet,
        column_of=mapped.column_of,
    )
    report = ValidationReport(findings)
    if patients is not None and mapped.table == "samples":
        more, harmonised = validate_samples(harmonised, patients)
        report = report.merge(more)
    # rows excluded until corrected, first occurrences of duplicate ids included
    return replace(report, blocked_rows=int(harmonised.data["blocking"].sum())), harmonised


def validate_samples(
    samples: HarmonisedTable, patients: HarmonisedTable | Sequence[HarmonisedTable]
) -> tuple[ValidationReport, HarmonisedTable]:
    """Check a serial-samples table against the centre's patients (rule ``orphan_sample``).

    Parameters
    ----------
    samples : HarmonisedTable
        The validated samples table (``table == "samples"``).
    patients : HarmonisedTable or sequence of them
        The centre's validated patients table(s).

    Returns
    -------
    report : ValidationReport
        One ``orphan_sample`` finding per sample whose patient id is not a patient's.
    samples : HarmonisedTable
        The same table with those rows blocking and ``orphan_sample`` in their reasons.

    Examples
    --------
    >>> report, samples = validate_samples(samples, patients)  # doctest: +SKIP
    """
    tables = [patients] if isinstance(patients, HarmonisedTable) else list(patients)
    known = (
        pd.concat(
            [t.data["patient_id"] for t in tables if t.centre == samples.centre]
            or [pd.Series([], dtype=object)],
            ignore_index=True,
        )
        .dropna()
        .astype(str)
        .str.strip()
    )
    data = samples.data
    pid = data["patient_id"]
    orphan = (pid.notna() & ~pid.astype(str).str.strip().isin(set(known))).to_numpy()
    if not orphan.any():
        return ValidationReport.empty(), samples
    header = samples.column_of.get("patient_id", "patient_id")
    findings = pd.DataFrame(
        {
            "centre": samples.centre,
            "file": samples.file,
            "sheet": samples.sheet,
            "row": pd.array(data["source_row"].to_numpy()[orphan], dtype="Int64"),
            "column": header,
            "value": pid[orphan].astype(str).to_numpy(),
            "rule": str(RuleId.ORPHAN_SAMPLE),
            "severity": RULES[RuleId.ORPHAN_SAMPLE].severity,
            "message": [
                f"patient id '{p}' is not in the patients table of centre {samples.centre}; "
                "the sample is excluded until the patient is sent or the id corrected."
                for p in pid[orphan].astype(str)
            ],
            "field": "patient_id",
        }
    )
    new = data.copy()
    old = new["reasons"].to_numpy(dtype=object)
    tag = str(RuleId.ORPHAN_SAMPLE)
    new.loc[orphan, "reasons"] = [
        ";".join(sorted(set(filter(None, str(r).split(";"))) | {tag})) for r in old[orphan]
    ]
    new["blocking"] = new["blocking"].to_numpy(dtype=bool) | orphan
    updated = HarmonisedTable(
        centre=samples.centre,
        table=samples.table,
        data=new,
        file=samples.file,
        sha256=samples.sha256,
        sheet=samples.sheet,
        column_of=samples.column_of,
    )
    return ValidationReport(findings[list(FINDING_COLUMNS)]), updated


# --------------------------------------------------------------------------------------------
# Cross-centre rules
# --------------------------------------------------------------------------------------------


def _consortium_finding(
    rule: RuleId,
    centre: str,
    message: str,
    *,
    column: str | None = None,
    value: str = "",
    name: str | None = None,
    file: str = "",
    sheet: str = "",
) -> dict[str, Any]:
    return {
        "centre": centre, "file": file, "sheet": sheet, "row": None, "column": column,
        "value": value, "rule": str(rule), "severity": RULES[rule].severity,
        "message": message, "field": name,
    }  # fmt: skip


def _funnel(
    observed: np.ndarray, exposure: np.ndarray, kind: str, threshold: float, min_centres: int
) -> tuple[np.ndarray, np.ndarray]:
    """Funnel-plot z-scores of each centre against the pooled rate of the *other* centres,
    with a forward search: the most extreme centre beyond ``threshold`` is flagged and left
    out of every reference, and the search repeats, so one far-off centre cannot make the
    others look like outliers."""
    k = observed.shape[0]
    flagged = np.zeros(k, dtype=bool)
    while True:
        z = np.full(k, np.nan)
        rate = np.full(k, np.nan)
        for i in range(k):
            ref = ~flagged
            ref[i] = False
            o, e = observed[ref].sum(), exposure[ref].sum()
            if e <= 0:
                continue
            r = o / e
            rate[i] = r
            with np.errstate(divide="ignore", invalid="ignore"):
                if kind == "poisson":
                    expected = r * exposure[i]
                    z[i] = (observed[i] - expected) / np.sqrt(expected)
                else:
                    z[i] = (observed[i] / exposure[i] - r) / np.sqrt(r * (1 - r) / exposure[i])
        candidates = np.where(~flagged & np.isfinite(z), np.abs(z), -np.inf)
        worst = int(np.argmax(candidates))
        if candidates[worst] <= threshold or (~flagged).sum() - 1 < min_centres - 1:
            return z, rate
        flagged[worst] = True


def validate_consortium(
    tables: Sequence[HarmonisedTable],
    mappings: Sequence[CentreMapping] | Mapping[str, CentreMapping] | None = None,
    *,
    schema: Schema | None = None,
    spec: ValidationSpec | None = None,
) -> ValidationReport:
    """The cross-centre rules over the validated tables of several centres.

    ``event_rate_outlier`` (per setting and endpoint: Poisson funnel z-score of the centre's
    events per person-time against the other centres' pooled rate), ``positivity_outlier``
    (binomial funnel z-score of CTC / DTC positivity) and ``cross_centre_duplicate`` (the
    same fingerprint of dates and tumour characteristics at two centres). Rows with blocking
    findings are left out of the rates. The centre-level rules that need one centre only run
    in :func:`validate`.

    Parameters
    ----------
    tables : sequence of HarmonisedTable
        Validated tables (patients tables are used; others are ignored).
    mappings : sequence or mapping of CentreMapping, optional
        Not needed by the cross-centre rules; accepted for symmetry with :func:`validate`.
    schema : Schema, optional
        Default :func:`~harmonization.schema.load_schema`.
    spec : ValidationSpec, optional
        Thresholds (``outlier_z``, ``min_centres``, ``min_patients``).

    Returns
    -------
    ValidationReport
        Findings with empty ``row``.

    References
    ----------
    .. [1] Spiegelhalter DJ. Funnel plots for comparing institutional performance. Stat Med
       2005;24:1185-202.

    Examples
    --------
    >>> report = validate_consortium([ulm_patients, tue_patients, muc_patients])  # doctest: +SKIP
    """
    del mappings  # the cross-centre rules need only the harmonised data
    schema = schema or load_schema()
    spec = spec or ValidationSpec()
    patients = [t for t in tables if t.table == "patients" and len(t.data)]
    rows: list[dict[str, Any]] = []
    if not patients:
        return ValidationReport.empty()
    frames = []
    for t in patients:
        d = t.data
        frame = pd.DataFrame(
            {
                "centre": t.centre,
                "file": t.file,
                "sheet": t.sheet,
                "source_row": d["source_row"].to_numpy(),
                "patient_id": d["patient_id"].astype(object).to_numpy(),
                "id_header": t.column_of.get("patient_id", "patient_id"),
                "setting": _as_text(d, "setting"),
                "blocking": d["blocking"].to_numpy(dtype=bool),
            }
        )
        for ep in schema.endpoint_names:
            frame[f"{ep}_months"] = d[f"{ep}_months"].to_numpy(dtype="float64", na_value=np.nan)
            frame[f"{ep}_event"] = (
                d[f"{ep}_event"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
            )
        for marker in ("ctc_positive", "dtc_positive"):
            frame[marker] = _positive(d, marker, None, spec)
        for f in FINGERPRINT_FIELDS:
            frame["fp_" + f] = d[f].to_numpy() if f in d else None
        frames.append(frame)
    pooled = pd.concat(frames, ignore_index=True)
    rows += _outlier_rows(pooled, spec)
    rows += _duplicate_rows(pooled)
    if not rows:
        return ValidationReport.empty()
    findings = pd.DataFrame(rows)[list(FINDING_COLUMNS)]
    findings["row"] = findings["row"].astype("Int64")
    return ValidationReport(findings)


def _outlier_rows(pooled: pd.DataFrame, spec: ValidationSpec) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    usable = pooled.loc[~pooled["blocking"]]
    for setting, group in usable.groupby("setting", sort=True):
        endpoints = spec.outlier_endpoints.get(str(setting), ("os",))
        for ep in endpoints:
            months, event = f"{ep}_months", f"{ep}_event"
            if months not in group:
                continue
            ok = group[months].notna() & group[event].notna()
            agg = (
                group.loc[ok]
                .groupby("centre", sort=True)
                .agg(n=(event, "size"), events=(event, "sum"), time=(months, "sum"))
            )
            agg = agg.loc[(agg["n"] >= spec.min_patients) & (agg["time"] > 0)]
            if len(agg) < spec.min_centres or agg["events"].sum() == 0:
                continue
            z, rate = _funnel(
                agg["events"].to_numpy(float),
                agg["time"].to_numpy(float) / 12.0,
                "poisson",
                spec.outlier_z,
                spec.min_centres,
            )
            for (centre, r), zi, ri in zip(agg.iterrows(), z, rate, strict=True):
                if np.isfinite(zi) and abs(zi) > spec.outlier_z:
                    own = r["events"] / (r["time"] / 12.0) * 100
                    rows.append(
                        _consortium_finding(
                            RuleId.EVENT_RATE_OUTLIER, str(centre),
                            f"{ep.upper()} in {setting} disease: {int(r['events'])} events in "
                            f"{r['time'] / 12.0:.0f} person-years ({own:.2f} per 100 "
                            f"person-years) against {ri * 100:.2f} in the other centres; "
                            f"funnel z = {zi:.2f}. Check event dates and follow-up.",
                            column=event, value=f"{zi:.4f}", name=event,
                        )
                    )  # fmt: skip
        for marker in ("ctc_positive", "dtc_positive"):
            ok = group[marker].notna()
            agg = (
                group.loc[ok]
                .groupby("centre", sort=True)
                .agg(n=(marker, "size"), positive=(marker, "sum"))
            )
            agg = agg.loc[agg["n"] >= spec.min_patients]
            if len(agg) < spec.min_centres:
                continue
            z, rate = _funnel(
                agg["positive"].to_numpy(float),
                agg["n"].to_numpy(float),
                "binomial",
                spec.outlier_z,
                spec.min_centres,
            )
            source = "ctc_count" if marker == "ctc_positive" else "dtc_count"
            for (centre, r), zi, ri in zip(agg.iterrows(), z, rate, strict=True):
                if np.isfinite(zi) and abs(zi) > spec.outlier_z:
                    rows.append(
                        _consortium_finding(
                            RuleId.POSITIVITY_OUTLIER, str(centre),
                            f"{marker.replace('_', ' ')} in {setting} disease: "
                            f"{r['positive'] / r['n']:.1%} of {int(r['n'])} patients against "
                            f"{ri:.1%} in the other centres; funnel z = {zi:.2f}. Check the "
                            "counts, the blood volume and the unit.",
                            column=source, value=f"{zi:.4f}", name=source,
                        )
                    )  # fmt: skip
    return rows


def fingerprint_keys(frame: pd.DataFrame, *, prefix: str = "") -> pd.Series:
    """One text key per row from the fingerprint fields (``prefix + field`` columns; a
    missing column counts as empty): the same key at two centres is probably one patient."""
    key = pd.Series("", index=frame.index)
    for f in FINGERPRINT_FIELDS:
        if prefix + f not in frame:
            key = key + "|"
            continue
        col = frame[prefix + f]
        if f.endswith("_date"):
            text = pd.to_datetime(col, errors="coerce").dt.strftime("%Y-%m-%d")
        elif f in ("age", "tumour_size_mm"):
            text = pd.to_numeric(col, errors="coerce").round(1).astype(str)
        else:
            text = col.astype(object).astype(str)
        key = key + "|" + text.fillna("")
    return key


def _duplicate_rows(pooled: pd.DataFrame) -> list[dict[str, Any]]:
    need = pooled["fp_diagnosis_date"].notna() & pooled["fp_age"].notna()
    if pooled["centre"].nunique() < 2 or not need.any():
        return []
    part = pooled.loc[need]
    part = part.assign(_key=fingerprint_keys(part, prefix="fp_").to_numpy())
    centres_per_key = part.groupby("_key")["centre"].nunique()
    shared = centres_per_key.index[centres_per_key > 1]
    if not len(shared):
        return []
    hits = part.loc[part["_key"].isin(shared)]
    rows: list[dict[str, Any]] = []
    for _, group in hits.groupby("_key", sort=False):
        first = group.iloc[0]
        for _, r in group.drop_duplicates("centre").iloc[1:].iterrows():
            if r["centre"] == first["centre"]:
                continue
            rows.append(
                _consortium_finding(
                    RuleId.CROSS_CENTRE_DUPLICATE, str(r["centre"]),
                    f"patient '{r['patient_id']}' (row {r['source_row']}) has the same diagnosis "
                    f"and surgery dates, age, tumour size, nodes, grade and receptors as patient "
                    f"'{first['patient_id']}' of centre {first['centre']} (file {first['file']}, "
                    f"row {first['source_row']}); is it the same patient?",
                    column=str(r["id_header"]), value=str(r["patient_id"]), name="patient_id",
                    file=str(r["file"]), sheet=str(r["sheet"]),
                )
            )  # fmt: skip
    return rows
