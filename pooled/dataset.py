"""Analysis datasets built from the store, with the exclusion flow that accounts for every row.

``build_analysis_dataset(store, ...) -> AnalysisDataset`` reads the chosen version of each
centre (latest accepted by default, or pinned), drops rows with blocking validation errors
*counting each by its reason*, and returns one row per patient with the schema and derived
fields. Later stages (an analysis config's cohort rules, complete-case handling) exclude
through :meth:`AnalysisDataset.exclude`, which adds a step to the same flow, so the flow per
centre (received, excluded by reason, analysed) always reconciles with the data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harmonization.schema import Reason
from pooled.errors import DataError, PooledWarning

if TYPE_CHECKING:  # pragma: no cover
    from harmonization.store import Store

FLOW_COLUMNS = ("step", "centre", "reason", "detail", "n")


@dataclass(frozen=True, slots=True)
class ExclusionFlow:
    """Per centre: rows received, excluded at each step with its reason, and analysed.

    ``received`` maps centre -> rows received; ``steps`` has one row per (step, centre) with
    columns ``step, centre, reason, detail, n``.
    """

    received: dict[str, int]
    steps: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({c: pd.Series(dtype=object) for c in FLOW_COLUMNS})
    )

    @classmethod
    def start(cls, centres: pd.Series, *, every: Iterable[str] = ()) -> ExclusionFlow:
        """The flow of rows received, one entry per centre of ``centres`` and of ``every``
        (centres whose chosen version holds no rows appear with 0, never vanish)."""
        counts = centres.astype(str).value_counts()
        names = sorted(set(counts.index.astype(str)) | {str(c) for c in every})
        return cls(received={c: int(counts.get(c, 0)) for c in names})

    def add(self, centres: pd.Series, reason: Reason | str, detail: str = "") -> ExclusionFlow:
        """A new flow with one more step: the excluded rows' centres, and why."""
        step = int(self.steps["step"].max()) + 1 if len(self.steps) else 1
        counts = centres.astype(str).value_counts()
        rows = pd.DataFrame(
            {
                "step": step,
                "centre": list(self.received),
                "reason": str(reason),
                "detail": detail,
                "n": [int(counts.get(c, 0)) for c in self.received],
            }
        )
        steps = rows if self.steps.empty else pd.concat([self.steps, rows], ignore_index=True)
        return replace(self, steps=steps)

    def excluded(self) -> pd.Series:
        """Rows excluded per centre, all steps."""
        if self.steps.empty:
            return pd.Series(0, index=list(self.received), dtype=int)
        return self.steps.groupby("centre")["n"].sum().reindex(list(self.received), fill_value=0)

    def analysed(self) -> pd.Series:
        """Rows remaining per centre."""
        received = pd.Series(dict(self.received), dtype=int)
        return received - self.excluded()

    def to_frame(self) -> pd.DataFrame:
        """Wide table: ``centre, received, <one column per step>, analysed`` plus a total row."""
        table = pd.DataFrame(
            {"centre": list(self.received), "received": list(self.received.values())}
        )
        for (_step, reason, detail), group in self.steps.groupby(
            ["step", "reason", "detail"], sort=True
        ):
            label = f"excluded: {reason}" + (f" ({detail})" if detail else "")
            table[label] = group.set_index("centre")["n"].reindex(table["centre"]).to_numpy()
        table["analysed"] = self.analysed().reindex(table["centre"]).to_numpy()
        total = {"centre": "total", **{c: table[c].sum() for c in table.columns if c != "centre"}}
        return pd.concat([table, pd.DataFrame([total])], ignore_index=True)

    def check(self, data: pd.DataFrame) -> None:
        """Raise :class:`DataError` unless the flow's analysed counts equal ``data``'s rows."""
        actual = data["centre"].astype(str).value_counts()
        expected = self.analysed()
        for centre, n in expected.items():
            if int(actual.get(centre, 0)) != int(n):
                raise DataError(
                    f"exclusion flow does not reconcile for centre '{centre}': the flow says "
                    f"{n} analysed but the data has {int(actual.get(centre, 0))} rows."
                )


@dataclass(frozen=True, slots=True)
class AnalysisDataset:
    """One row per patient with schema and derived fields, and the flow that led to it.

    Attributes
    ----------
    patients : DataFrame
        Schema fields, derived fields and provenance columns.
    samples : DataFrame
        Serial samples of the included patients (empty when no centre sent any).
    flow : ExclusionFlow
        Received, excluded by reason, analysed, per centre.
    versions : mapping centre -> upload version read.
    provenance : mapping with the store path, upload sha256 per centre and the origin.
    sample_flow : the same accounting for the serial samples (``None`` without samples):
        samples received, excluded with their own blocking errors or with their patient.
    """

    patients: pd.DataFrame
    samples: pd.DataFrame
    flow: ExclusionFlow
    versions: dict[str, int]
    provenance: dict[str, Any]
    sample_flow: ExclusionFlow | None = None

    def exclude(
        self, mask: pd.Series | np.ndarray, reason: Reason | str, detail: str = ""
    ) -> AnalysisDataset:
        """A new dataset without the rows where ``mask`` is true, the step added to the flow."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape[0] != len(self.patients):
            raise DataError(
                f"exclusion mask has {mask.shape[0]} entries for {len(self.patients)} patients."
            )
        flow = self.flow.add(self.patients.loc[mask, "centre"], reason, detail)
        kept = self.patients.loc[~mask].reset_index(drop=True)
        samples, sample_flow = _samples_of(kept, self.samples, self.sample_flow, reason, detail)
        return replace(self, patients=kept, samples=samples, flow=flow, sample_flow=sample_flow)

    def select(
        self, keep: pd.Series | np.ndarray, reason: Reason | str, detail: str = ""
    ) -> AnalysisDataset:
        """Keep the rows where ``keep`` is true; the others leave with ``reason``."""
        return self.exclude(~np.asarray(keep, dtype=bool), reason, detail)


def _samples_of(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    flow: ExclusionFlow | None,
    reason: Reason | str,
    detail: str,
) -> tuple[pd.DataFrame, ExclusionFlow | None]:
    """The samples of ``patients``; the others leave with ``reason`` in the sample flow."""
    if flow is None or not len(samples):
        return samples, flow
    keys = pd.MultiIndex.from_frame(patients[["centre", "patient_id"]].astype(str))
    own = pd.MultiIndex.from_frame(samples[["centre", "patient_id"]].astype(str)).isin(keys)
    if own.all():
        return samples, flow
    flow = flow.add(samples.loc[~own, "centre"], reason, f"samples: {detail}")
    return samples.loc[own].reset_index(drop=True), flow


def _first_reason(reasons: pd.Series) -> pd.Series:
    return reasons.fillna("").astype(str).str.split(";").str[0].str.strip()


def build_analysis_dataset(
    store: Store,
    *,
    centres: Iterable[str] | None = None,
    versions: Mapping[str, int] | None = None,
    origin: str | None = None,
    schema: Any = None,
) -> AnalysisDataset:
    """Build the analysis dataset from the store.

    Parameters
    ----------
    store : harmonization.store.Store
        The versioned store.
    centres : iterable of str, optional
        Centres to include; default every centre with an accepted upload.
    versions : mapping centre -> version, optional
        Pinned versions; other centres use their latest accepted version.
    origin : {"diagnosis", "surgery", "sample"}, optional
        Time origin of the endpoints; default the schema's (per setting). When given, the
        ``<endpoint>_months`` of centres that deliver dates are recomputed from the dates,
        and delivered durations counted from another origin are converted where both
        origin dates are known (see :func:`recompute_endpoints`).
    schema : Schema, optional
        The schema for recomputing endpoints; default the one the chosen versions were
        ingested with, else ``configs/schema.yaml``.

    Returns
    -------
    AnalysisDataset
        Rows with blocking validation errors are excluded, each counted by its first reason;
        ``flow.analysed()`` equals the rows of ``patients`` per centre.

    Examples
    --------
    >>> from harmonization.store import Store
    >>> with Store("pooled.db", read_only=True) as store:  # doctest: +SKIP
    ...     ds = build_analysis_dataset(store)
    >>> ds.flow.to_frame()  # doctest: +SKIP
    """
    chosen = store.resolve_versions(centres, versions)
    patients = store.records("patients", versions=chosen, centres=list(chosen))
    if patients.empty:
        raise DataError(
            f"the store {store.path} holds no patient records for centres "
            f"{', '.join(chosen) or '(none)'}; ingest uploads first."
        )
    samples = store.records("samples", versions=chosen, centres=list(chosen))
    flow = ExclusionFlow.start(patients["centre"], every=chosen)
    empty = sorted(set(chosen) - set(patients["centre"].astype(str)))
    if empty:
        warnings.warn(
            f"centre(s) {', '.join(empty)}: the chosen version holds no patients (received 0 "
            "in the exclusion flow).",
            PooledWarning,
            stacklevel=2,
        )
    blocking = patients["blocking"].fillna(False).astype(bool).to_numpy()
    if blocking.any():
        first = _first_reason(patients.loc[blocking, "reasons"])
        for rule in sorted(first.unique()):
            reason = Reason.DUPLICATE_ID if rule == "duplicate_id" else Reason.BLOCKING_ERROR
            flow = flow.add(patients.loc[blocking].loc[first == rule, "centre"], reason, rule)
    patients = patients.loc[~blocking].reset_index(drop=True)
    not_converted: dict[str, int] = {}
    if origin is not None:
        if schema is None and hasattr(store, "schema_for"):
            schema = store.schema_for(chosen)
        patients, not_converted = recompute_endpoints(patients, origin, schema=schema)
    origins = time_origins(patients)
    if origin is None and len({o for per in origins.values() for o in per}) > 1:
        listed = "; ".join(
            f"{c}: " + ", ".join(f"{o} ({n})" for o, n in per.items()) for c, per in origins.items()
        )
        warnings.warn(
            f"the centres' survival times count from different origins ({listed}); pooling them "
            "mixes time scales. Name an origin (config 'origin:' or --origin) to convert them "
            "where the dates allow.",
            PooledWarning,
            stacklevel=2,
        )
    sample_flow = None
    if len(samples):
        sample_flow = ExclusionFlow.start(samples["centre"])
        sample_blocking = samples["blocking"].fillna(False).astype(bool).to_numpy()
        first = _first_reason(samples.loc[sample_blocking, "reasons"])
        for rule in sorted(first.unique()):
            sample_flow = sample_flow.add(
                samples.loc[sample_blocking].loc[first == rule, "centre"],
                Reason.BLOCKING_ERROR,
                rule,
            )
        samples = samples.loc[~sample_blocking].reset_index(drop=True)
        samples, sample_flow = _samples_of(
            patients, samples, sample_flow, Reason.BLOCKING_ERROR, "patient row blocked"
        )
    flow.check(patients)
    uploads = store.uploads()
    sha = {
        c: str(uploads.loc[(uploads["centre"] == c) & (uploads["version"] == v), "sha256"].iloc[0])
        for c, v in chosen.items()
    }
    return AnalysisDataset(
        patients=patients,
        samples=samples,
        flow=flow,
        versions=dict(chosen),
        sample_flow=sample_flow,
        provenance=(
            {
                "store": str(store.path),
                "upload_sha256": sha,
                "origin": origin or "schema default",
                "origin_not_converted": not_converted,
                "time_origins": origins,
            }
        ),
    )


def time_origins(patients: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per centre, how many patients' survival times count from each origin
    (``{"ulm": {"diagnosis": 812}, "rotterdam": {"surgery": 2982}}``)."""
    if "time_origin" not in patients or patients.empty:
        return {}
    known = patients.loc[patients["time_origin"].notna(), ["centre", "time_origin"]]
    out: dict[str, dict[str, int]] = {}
    for centre, origin in zip(
        known["centre"].astype(str), known["time_origin"].astype(str), strict=True
    ):
        per = out.setdefault(centre, {})
        per[origin] = per.get(origin, 0) + 1
    return dict(sorted(out.items()))


def _dates(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    return pd.to_datetime(frame[name], errors="coerce")


def recompute_endpoints(
    patients: pd.DataFrame, origin: str, *, schema: Any = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Endpoints counted from ``origin`` (diagnosis, surgery or sample) for every patient.

    Rows whose endpoints come from dates are recomputed from the dates. Rows whose centre
    delivered durations counted from another origin (``time_origin``) are shifted by the days
    between the two origin dates where both dates are known (e.g. days since surgery +
    (surgery - diagnosis) = days since diagnosis). Where they are not, the times stay as
    delivered: a :class:`~pooled.errors.PooledWarning` names the centres and counts, and the
    counts are returned (they go into the dataset's provenance and the report).

    Returns
    -------
    (patients, not_converted) : the new frame and ``{centre: rows left as delivered}``.
    """
    from harmonization.derive import ORIGINS, derive_endpoints
    from harmonization.schema import load_schema

    if origin not in ORIGINS:
        raise DataError(f"origin must be one of {', '.join(ORIGINS)}; got {origin!r}.")
    schema = schema or load_schema()
    source = patients.get("endpoints_from", pd.Series(None, index=patients.index))
    delivered = (source == "durations").to_numpy()
    out = patients.copy()
    if (~delivered).any():
        dated = derive_endpoints(patients.loc[~delivered], schema, origin=origin)  # type: ignore[arg-type]
        for column in dated.columns:
            if column.endswith(("_months", "_event")) or column in ("time_origin", "endpoints_from"):
                if column not in out:
                    out[column] = None
                out.loc[~delivered, column] = dated[column].to_numpy()
    not_converted: dict[str, int] = {}
    if delivered.any():
        have = patients.get("time_origin", pd.Series(None, index=patients.index)).astype(object)
        shift_days = np.full(len(patients), np.nan)
        target = _dates(patients, f"{origin}_date")
        for name in ORIGINS:
            rows = delivered & (have == name).to_numpy()
            if not rows.any():
                continue
            if name == origin:
                shift_days[rows] = 0.0
                continue
            start = _dates(patients, f"{name}_date")
            days = (start - target).dt.days.to_numpy(dtype="float64", na_value=np.nan)
            shift_days[rows] = days[rows]
        days_per_month = float(schema.derived.get("days_per_month", 30.4375))
        ok = delivered & ~np.isnan(shift_days)
        for ep in schema.endpoint_names:
            column = f"{ep}_months"
            if column in out:
                values = out[column].to_numpy(dtype="float64", na_value=np.nan)
                values[ok] = values[ok] + shift_days[ok] / days_per_month
                out[column] = values
        out.loc[ok, "time_origin"] = origin
        left = delivered & np.isnan(shift_days)
        if left.any():
            counts = patients.loc[left, "centre"].astype(str).value_counts().sort_index()
            not_converted = {str(c): int(n) for c, n in counts.items()}
            warnings.warn(
                f"time origin {origin}: durations delivered from another origin could not be "
                "converted (an origin date is missing) for "
                + ", ".join(f"{c} ({n} patients)" for c, n in not_converted.items())
                + "; their times stay as delivered.",
                PooledWarning,
                stacklevel=2,
            )
    return out, not_converted
