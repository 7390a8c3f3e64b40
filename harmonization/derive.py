"""Derived fields, computed by documented rules parameterised by the schema.

The rules read their parameters from the schema's ``derived:`` and ``endpoints:`` blocks
(``configs/schema.yaml``); nothing here is centre-specific. Everything is vectorised and pure:
the input frame is never changed.

Rules
-----
Receptors
    ``er_status`` / ``pr_status`` where missing: positive if ``er_percent`` / ``pr_percent``
    >= ``derived.receptor_positive_percent`` (1 %), negative below it.
HER2
    ``her2_status`` where missing: positive if IHC 3+ or ISH amplified (IHC 2+ with
    amplification, or amplification alone); negative if IHC 0/1+ or ISH not amplified (and not
    positive); unknown for IHC 2+ without ISH.
Subtype (PADDY surrogate definitions)
    where ``subtype`` is not delivered: ``her2_positive`` if HER2+; hormone receptor (HR)
    positive = ER+ or PR+; ``triple_negative`` = ER- PR- HER2-; HR+ HER2-: ``luminal_b`` if
    grade 3 or Ki-67 >= ``derived.ki67_high_percent`` (20 %), ``luminal_a`` if grade 1-2 and
    Ki-67 below the threshold or unknown; otherwise unknown.
CTC per 7.5 ml
    ``ctc_per_7_5ml = ctc_count * 7.5 / ctc_blood_volume_ml`` (reference volume
    ``derived.ctc_reference_volume_ml``).
Endpoints
    for every definition in ``endpoints.definitions``: ``<endpoint>_event`` is true when any of
    its event dates is present (for a definition with ``death_cause``, a death counts only with
    that cause; other deaths censor at death); ``<endpoint>_months`` = (first event date, else
    the end of follow-up: ``death_date`` if present, else ``last_contact_date``) minus the time
    origin, in days / ``derived.days_per_month`` (30.4375). The origin is per setting
    (``endpoints.origin``: diagnosis date in early, sample date in metastatic disease) or one
    of ``diagnosis``, ``surgery``, ``sample`` for every row. Negative times are set missing.
    Where dates cannot give an endpoint, durations the centre delivers directly
    (``<endpoint>_months`` / ``<endpoint>_event``) are kept (or preferred, with
    ``prefer="durations"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from harmonization.schema import Schema, load_schema

Origin = Literal["diagnosis", "surgery", "sample"]
ORIGINS: tuple[str, ...] = ("diagnosis", "surgery", "sample")

__all__ = [
    "ORIGINS",
    "Origin",
    "derive_endpoints",
    "derive_fields",
    "derive_her2_status",
    "derive_receptor_status",
    "derive_subtype",
    "derived_field_names",
]


def derived_field_names(schema: Schema, table: str = "patients") -> tuple[str, ...]:
    """Columns :func:`derive_fields` adds to a table that the schema does not list."""
    fields = schema.table(table).fields
    names = ["ctc_per_7_5ml"]
    if table == "patients":
        for ep in schema.endpoint_names:
            names += [f"{ep}_months", f"{ep}_event"]
        names += ["endpoints_from", "time_origin"]
    return tuple(n for n in names if n not in fields)


def _param(schema: Schema, key: str, default: float) -> float:
    value = schema.derived.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def _float(values: pd.DataFrame, name: str) -> np.ndarray:
    if name not in values:
        return np.full(len(values), np.nan)
    return pd.to_numeric(values[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _text(values: pd.DataFrame, name: str) -> pd.Series:
    if name not in values:
        return pd.Series([None] * len(values), index=values.index, dtype=object)
    return values[name].astype(object).where(values[name].notna(), None)


def _dates(values: pd.DataFrame, name: str) -> pd.Series:
    if name not in values:
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    return pd.to_datetime(values[name], errors="coerce")


def derive_receptor_status(percent: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """``"positive"`` / ``"negative"`` / ``None`` from stained-nuclei percentages.

    Examples
    --------
    >>> derive_receptor_status(np.array([0.0, 1.0, np.nan])).tolist()
    ['negative', 'positive', None]
    """
    out = np.where(percent >= threshold, "positive", "negative").astype(object)
    out[np.isnan(percent)] = None
    return out


def derive_her2_status(ihc: pd.Series, ish: pd.Series) -> np.ndarray:
    """HER2 status from IHC score and ISH result (IHC 3+, or ISH amplified; see module doc).

    Examples
    --------
    >>> derive_her2_status(pd.Series(["3+", "2+", "2+", "1+"]),
    ...                    pd.Series([None, "amplified", None, None])).tolist()
    ['positive', 'positive', None, 'negative']
    """
    ihc_t = ihc.astype(object).to_numpy()
    ish_t = ish.astype(object).to_numpy()
    positive = (ihc_t == "3+") | (ish_t == "amplified")
    negative = ~positive & (np.isin(ihc_t, ["0", "1+"]) | (ish_t == "not_amplified"))
    out = np.full(len(ihc_t), None, dtype=object)
    out[positive] = "positive"
    out[negative] = "negative"
    return out


def derive_subtype(
    er: pd.Series | np.ndarray,
    pr: pd.Series | np.ndarray,
    her2: pd.Series | np.ndarray,
    grade: np.ndarray,
    ki67: np.ndarray,
    *,
    ki67_high: float = 20.0,
) -> np.ndarray:
    """Surrogate intrinsic subtype by the PADDY definitions (see module doc).

    Examples
    --------
    >>> derive_subtype(np.array(["positive", "negative", "positive"], dtype=object),
    ...                np.array(["negative", "negative", None], dtype=object),
    ...                np.array(["negative", "negative", "positive"], dtype=object),
    ...                np.array([2.0, 3.0, 1.0]), np.array([np.nan, 50.0, 5.0])).tolist()
    ['luminal_a', 'triple_negative', 'her2_positive']
    """
    er_a, pr_a, her2_a = (np.asarray(x, dtype=object) for x in (er, pr, her2))
    hr_pos = (er_a == "positive") | (pr_a == "positive")
    hr_neg = (er_a == "negative") & (pr_a == "negative")
    her2_pos = her2_a == "positive"
    her2_neg = her2_a == "negative"
    with np.errstate(invalid="ignore"):
        high = (grade == 3) | (ki67 >= ki67_high)
        low = np.isin(grade, (1.0, 2.0)) & ~(ki67 >= ki67_high)
    out = np.full(er_a.shape[0], None, dtype=object)
    out[hr_pos & her2_neg & low] = "luminal_a"
    out[hr_pos & her2_neg & high] = "luminal_b"
    out[hr_neg & her2_neg] = "triple_negative"
    out[her2_pos] = "her2_positive"
    return out


def _origin_names(
    values: pd.DataFrame, schema: Schema, origin: Origin | Mapping[str, str] | None
) -> np.ndarray:
    """The name of each row's time origin (``diagnosis``, ``surgery`` or ``sample``)."""
    if isinstance(origin, str):
        return np.full(len(values), origin, dtype=object)
    per_setting = dict(schema.origin)
    if origin is not None:
        per_setting.update(
            {k: (v if v.endswith("_date") else f"{v}_date") for k, v in origin.items()}
        )
    default = per_setting.get("early", "diagnosis_date")
    out = np.full(len(values), default.removesuffix("_date"), dtype=object)
    setting = _text(values, "setting").to_numpy(dtype=object)
    for name, field in per_setting.items():
        out[setting == name] = field.removesuffix("_date")
    return out


def _origin_dates(
    values: pd.DataFrame, schema: Schema, origin: Origin | Mapping[str, str] | None
) -> pd.Series:
    """The time origin of every row (NaT where its date is missing)."""
    if isinstance(origin, str):
        if origin not in ORIGINS:
            from harmonization.errors import SchemaError

            raise SchemaError(
                f"derive_endpoints: origin must be one of {', '.join(ORIGINS)}; got {origin!r}."
            )
        return _dates(values, f"{origin}_date")
    per_setting = dict(schema.origin)
    if origin is not None:
        per_setting.update(
            {k: (v if v.endswith("_date") else f"{v}_date") for k, v in origin.items()}
        )
    default = per_setting.get("early", "diagnosis_date")
    result = _dates(values, default)
    setting = _text(values, "setting")
    for name, field in per_setting.items():
        if field == default:
            continue
        rows = (setting == name).to_numpy()
        if rows.any():
            result = result.where(~rows, _dates(values, field))
    return result


def derive_endpoints(
    values: pd.DataFrame,
    schema: Schema | None = None,
    *,
    origin: Origin | Mapping[str, str] | None = None,
    prefer: Literal["dates", "durations"] = "dates",
    duration_origin: str | None = None,
) -> pd.DataFrame:
    """``<endpoint>_months`` and ``<endpoint>_event`` for every endpoint of the schema.

    Parameters
    ----------
    values : DataFrame
        One row per patient with (some of) the schema's date fields, ``setting``,
        ``death_cause`` and any delivered ``<endpoint>_months`` / ``<endpoint>_event``.
    schema : Schema, optional
        Default :func:`~harmonization.schema.load_schema`.
    origin : {"diagnosis", "surgery", "sample"} or mapping setting -> date field, optional
        The time origin; default per setting from the schema (``endpoints.origin``).
    prefer : {"dates", "durations"}
        Which source wins when a row has both usable dates and a delivered duration.
    duration_origin : {"diagnosis", "surgery", "sample"}, optional
        What delivered durations count from (the centre mapping's ``origin``); default the
        schema's origin for the row's setting.

    Returns
    -------
    DataFrame
        A copy of ``values`` in which, for each endpoint, ``<endpoint>_months`` (float) and
        ``<endpoint>_event`` (nullable boolean) are set. A row with any follow-up date (last
        contact, death or an event date) takes its endpoints from the dates (missing where
        the chosen origin is missing); a row without dates keeps its delivered durations.
        ``endpoints_from`` says which (``"dates"``, ``"durations"`` or missing) and
        ``time_origin`` what the times count from (``diagnosis``, ``surgery``, ``sample``).

    References
    ----------
    .. [1] Hudis CA, et al. Proposal for standardized definitions for efficacy end points in
       adjuvant breast cancer trials: the STEEP system. J Clin Oncol 2007;25:2127-32.

    Examples
    --------
    >>> df = pd.DataFrame({"setting": ["early"], "diagnosis_date": [pd.Timestamp("2010-01-01")],
    ...                    "last_contact_date": [pd.Timestamp("2011-01-01")],
    ...                    "death_date": [pd.NaT]})
    >>> float(derive_endpoints(df)["os_months"].iloc[0])  # doctest: +ELLIPSIS
    11.99...
    """
    schema = schema or load_schema()
    days_per_month = _param(schema, "days_per_month", 30.4375)
    start = _origin_dates(values, schema, origin)
    death = _dates(values, "death_date")
    end_of_followup = death.fillna(_dates(values, "last_contact_date"))
    cause = _text(values, "death_cause")
    dated = end_of_followup.notna().to_numpy().copy()
    for ep in schema.endpoints:
        for field in ep.event_dates:
            dated |= _dates(values, field).notna().to_numpy()
    out: dict[str, pd.Series] = {}
    took_durations = np.zeros(len(values), dtype=bool)
    for ep in schema.endpoints:
        first = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
        for field in ep.event_dates:
            date = _dates(values, field)
            if ep.death_cause is not None and field == "death_date":
                date = date.where((cause == ep.death_cause).to_numpy())
            first = first.where(first.notna() & ~(date < first), date)
        has_event = first.notna().to_numpy()
        stop = first.where(has_event, end_of_followup)
        days = (stop - start).dt.days.to_numpy(dtype="float64", na_value=np.nan)
        days[days < 0] = np.nan
        months = days / days_per_month
        months_s = pd.Series(months, index=values.index)
        event_s = pd.Series(has_event, index=values.index).astype("boolean").mask(np.isnan(months))
        m_name, e_name = f"{ep.name}_months", f"{ep.name}_event"
        if m_name in values and e_name in values:
            given_m = pd.to_numeric(values[m_name], errors="coerce").astype("float64")
            given_e = values[e_name].astype("boolean")
            usable = (given_m.notna() & given_e.notna()).to_numpy()
            take = usable & (~dated | (prefer == "durations"))
            took_durations |= take
            months_s = months_s.where(~take, given_m)
            event_s = event_s.where(~take, given_e)
        out[m_name] = months_s.astype("float64")
        out[e_name] = event_s.astype("boolean")
    result = values.copy()
    for name, column in out.items():
        result[name] = column
    has_time = np.zeros(len(values), dtype=bool)
    for ep in schema.endpoints:
        has_time |= result[f"{ep.name}_months"].notna().to_numpy()
    source = np.full(len(values), None, dtype=object)
    source[has_time & ~took_durations] = "dates"
    source[took_durations] = "durations"
    date_origin = _origin_names(values, schema, origin)
    delivered_origin = (
        np.full(len(values), duration_origin, dtype=object)
        if duration_origin
        else _origin_names(values, schema, None)
    )
    result["endpoints_from"] = pd.Series(source, index=values.index, dtype=object)
    time_origin = np.full(len(values), None, dtype=object)
    time_origin[has_time] = date_origin[has_time]
    time_origin[took_durations] = delivered_origin[took_durations]
    result["time_origin"] = pd.Series(time_origin, index=values.index, dtype=object)
    return result


def derive_fields(
    values: pd.DataFrame,
    schema: Schema | None = None,
    *,
    origin: Origin | Mapping[str, str] | None = None,
    prefer: Literal["dates", "durations"] = "dates",
    table: str = "patients",
    duration_origin: str | None = None,
) -> pd.DataFrame:
    """Add the derived fields to a harmonised table (a new frame; ``values`` is unchanged).

    Fills ``er_status``, ``pr_status``, ``her2_status`` and ``subtype`` where missing, and adds
    ``ctc_per_7_5ml`` and, for the patients table, ``<endpoint>_months`` /
    ``<endpoint>_event`` (see :func:`derive_endpoints`). The rules are in the module doc.

    Parameters
    ----------
    values : DataFrame
        Typed schema fields (as in :attr:`harmonization.mapping.MappedTable.values`).
    schema : Schema, optional
        Default :func:`~harmonization.schema.load_schema`.
    origin : {"diagnosis", "surgery", "sample"} or mapping, optional
        Time origin of the endpoints; default per setting from the schema.
    prefer : {"dates", "durations"}
        Endpoint source when both exist (the centre mapping's ``delivers``).
    table : str
        ``"patients"`` (default) or ``"samples"`` (only ``ctc_per_7_5ml``).

    Returns
    -------
    DataFrame

    References
    ----------
    .. [1] Goldhirsch A, et al. Personalizing the treatment of women with early breast cancer:
       St Gallen consensus 2013. Ann Oncol 2013;24:2206-23.
    .. [2] Janni WJ, et al. Pooled analysis of the prognostic relevance of circulating tumor
       cells in primary breast cancer. Clin Cancer Res 2016;22:2583-93.

    Examples
    --------
    >>> df = pd.DataFrame({"er_percent": [50.0], "pr_percent": [0.0], "her2_ihc": ["1+"],
    ...                    "grade": [2.0], "ctc_count": [2.0], "ctc_blood_volume_ml": [15.0]})
    >>> derive_fields(df)[["er_status", "subtype"]].iloc[0].tolist()
    ['positive', 'luminal_a']
    >>> float(derive_fields(df)["ctc_per_7_5ml"].iloc[0])
    1.0
    """
    schema = schema or load_schema()
    out = values.copy()
    reference = _param(schema, "ctc_reference_volume_ml", 7.5)
    count = _float(values, "ctc_count")
    volume = _float(values, "ctc_blood_volume_ml")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(volume > 0, count * reference / volume, np.nan)
    out["ctc_per_7_5ml"] = per
    if table != "patients":
        return out
    threshold = _param(schema, "receptor_positive_percent", 1.0)
    for status, percent in (("er_status", "er_percent"), ("pr_status", "pr_percent")):
        given = _text(values, status)
        derived = derive_receptor_status(_float(values, percent), threshold)
        out[status] = given.where(given.notna(), pd.Series(derived, index=values.index))
    given_her2 = _text(values, "her2_status")
    her2 = derive_her2_status(_text(values, "her2_ihc"), _text(values, "her2_ish"))
    out["her2_status"] = given_her2.where(given_her2.notna(), pd.Series(her2, index=values.index))
    subtype = derive_subtype(
        out["er_status"],
        out["pr_status"],
        out["her2_status"],
        _float(values, "grade"),
        _float(values, "ki67_percent"),
        ki67_high=_param(schema, "ki67_high_percent", 20.0),
    )
    given_subtype = _text(values, "subtype")
    out["subtype"] = given_subtype.where(
        given_subtype.notna(), pd.Series(subtype, index=values.index)
    )
    return derive_endpoints(
        out, schema, origin=origin, prefer=prefer, duration_origin=duration_origin
    )
