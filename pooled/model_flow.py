"""Which cohort patients each model used, and why it did not use the others.

The exclusion flow (:class:`pooled.dataset.ExclusionFlow`) ends with the analysis cohort.
Each model then uses a subset of it: a secondary endpoint may be missing, a covariate may be
missing (complete cases), a sensitivity analysis may leave a centre out, the two-stage model
may find a centre it cannot estimate. :class:`ModelFlow` records, per model, endpoint and
centre, the cohort, the patients left out at each of these steps with the reason, and the
patients the model reports it analysed, and :meth:`ModelFlow.check` verifies that they add up.

Each patient is counted once, at the first step that leaves it out, in this order: left out
by the analysis (a sensitivity analysis without a centre, an exposure cut-off that cannot be
determined), endpoint missing, the first missing covariate in model order, the centre not
estimable. Rows of step ``missing`` add how many patients (with the endpoint) miss each
covariate, however many others they miss; they do not enter the reconciliation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from harmonization.schema import Reason
from pooled.errors import DataError

__all__ = [
    "MODEL_FLOW_COLUMNS",
    "REASON_CENTRE_NOT_ESTIMABLE",
    "REASON_LEFT_OUT",
    "ModelFlow",
    "account_for_model",
]

MODEL_FLOW_COLUMNS: tuple[str, ...] = ("model", "endpoint", "centre", "step", "reason", "detail", "n")
Step = Literal["cohort", "excluded", "analysed", "missing"]
REASON_LEFT_OUT = "left out by the sensitivity analysis"
REASON_CENTRE_NOT_ESTIMABLE = "centre not estimable (two-stage)"
REASON_COVARIATE_MISSING = "covariate missing"
_STEP_ORDER = {"cohort": 0, "excluded": 1, "analysed": 2, "missing": 3}


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in MODEL_FLOW_COLUMNS})
    frame["n"] = frame["n"].astype(np.int64)
    return frame


@dataclass(frozen=True, slots=True)
class ModelFlow:
    """Per model, endpoint and centre: cohort, patients left out by reason, analysed.

    ``table`` is tidy, one row per (model, endpoint, centre, step, reason, detail) with the
    columns :data:`MODEL_FLOW_COLUMNS`; ``step`` is ``cohort``, ``excluded`` (with the
    ``reason`` and its ``detail``: the endpoint, the covariate, the centre's two-stage
    reason, the sensitivity analysis), ``analysed`` (as the fitted model reports it) or
    ``missing`` (patients missing each covariate, not exclusive). ``reported`` holds the
    ``n`` each model reports in its results, checked against the analysed total.

    Examples
    --------
    >>> cohort = pd.DataFrame({"centre": ["A", "A", "B"], "os_months": [1.0, 2.0, None],
    ...                        "os_event": [1, 0, None], "age": [50.0, None, 60.0]})
    >>> flow = account_for_model(cohort, model="cox_os", endpoint="os",
    ...                          analysed={"A": 1, "B": 0},
    ...                          required=("os_months", "os_event"), covariates=("age",))
    >>> flow.check()
    >>> flow.summary()[["model", "cohort", "analysed"]].to_numpy().tolist()
    [['cox_os', 3, 1]]
    """

    table: pd.DataFrame = field(default_factory=_empty)
    reported: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def concat(cls, flows: Iterable[ModelFlow | None]) -> ModelFlow:
        """One flow holding the models of several flows, in order."""
        kept = [f for f in flows if f is not None and len(f.table)]
        if not kept:
            return cls()
        reported: dict[str, int] = {}
        for f in kept:
            reported.update(f.reported)
        return cls(pd.concat([f.table for f in kept], ignore_index=True), reported)

    @property
    def models(self) -> tuple[str, ...]:
        """The models, in the order they were recorded."""
        return tuple(dict.fromkeys(self.table["model"]))

    def to_frame(self) -> pd.DataFrame:
        """The tidy table (``model_flow.csv``): ``model, endpoint, centre, step, reason,
        detail, n``."""
        return self.table[list(MODEL_FLOW_COLUMNS)].reset_index(drop=True).copy()

    def _step(self, model: str, step: str) -> pd.DataFrame:
        table = self.table
        return table.loc[(table["model"] == model) & (table["step"] == step)]

    def analysed(self, model: str) -> pd.Series:
        """Patients the model analysed, per centre."""
        rows = self._step(model, "analysed")
        return rows.groupby("centre", sort=True)["n"].sum().astype(int)

    def cohort(self, model: str) -> pd.Series:
        """Cohort patients per centre, as the model's flow starts."""
        return self._step(model, "cohort").groupby("centre", sort=True)["n"].sum().astype(int)

    def excluded(self, model: str) -> pd.DataFrame:
        """The model's exclusion rows (``centre, reason, detail, n``)."""
        return self._step(model, "excluded")[["centre", "reason", "detail", "n"]]

    def check(self) -> None:
        """Raise :class:`DataError` unless, per model and centre, cohort = analysed + excluded,
        and each model's analysed total equals the ``n`` it reports (``reported``)."""
        reported = self.reported
        for model in self.models:
            cohort = self.cohort(model)
            analysed = self.analysed(model).reindex(cohort.index, fill_value=0)
            excluded = (
                self.excluded(model).groupby("centre")["n"].sum().reindex(cohort.index, fill_value=0)
            )
            for centre in cohort.index:
                if int(cohort[centre]) != int(analysed[centre]) + int(excluded[centre]):
                    raise DataError(
                        f"model flow of '{model}' does not reconcile for centre '{centre}': "
                        f"cohort {int(cohort[centre])} but analysed {int(analysed[centre])} + "
                        f"excluded {int(excluded[centre])}; a model left patients out without "
                        "a recorded reason."
                    )
            if model in reported:
                total = int(analysed.sum())
                if total != int(reported[model]):
                    raise DataError(
                        f"model flow of '{model}': the flow says {total} patients analysed but "
                        f"the model reports n = {int(reported[model])}."
                    )

    def summary(self) -> pd.DataFrame:
        """One row per model: ``model, endpoint, cohort``, one ``excluded: <reason>`` column
        per reason, ``analysed``, and ``missing by covariate`` (text: each covariate with the
        number of patients missing it). Raw counts, summed over centres."""
        rows = []
        reasons = list(
            dict.fromkeys(self.table.loc[self.table["step"] == "excluded", "reason"].astype(str))
        )
        for model in self.models:
            table = self.table.loc[self.table["model"] == model]
            row: dict[str, object] = {
                "model": model,
                "endpoint": str(table["endpoint"].iloc[0]),
                "cohort": int(table.loc[table["step"] == "cohort", "n"].sum()),
            }
            excluded = table.loc[table["step"] == "excluded"]
            for reason in reasons:
                row[f"excluded: {reason}"] = int(excluded.loc[excluded["reason"] == reason, "n"].sum())
            row["analysed"] = int(table.loc[table["step"] == "analysed", "n"].sum())
            missing = (
                table.loc[table["step"] == "missing"]
                .groupby("detail", sort=False)["n"]
                .sum()
            )
            row["missing by covariate"] = "; ".join(
                f"{name} {int(n):,}" for name, n in missing.items() if n
            )
            rows.append(row)
        columns = ["model", "endpoint", "cohort", *[f"excluded: {r}" for r in reasons]]
        return pd.DataFrame(rows, columns=[*columns, "analysed", "missing by covariate"])

    def same_patients(self, model: str, other: str) -> bool:
        """Whether two models analysed the same number of patients per centre for the same
        reasons (a sensitivity fit that differs from the main model only in its method)."""

        def key(name: str) -> pd.DataFrame:
            rows = self.table.loc[self.table["model"] == name, ["centre", "step", "reason", "n"]]
            rows = rows.loc[rows["step"] != "missing"]
            return rows.sort_values(["centre", "step", "reason"]).reset_index(drop=True)

        return key(model).equals(key(other))


def _as_mask(values: pd.Series | np.ndarray | None, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=bool)
    mask = np.asarray(values, dtype=bool)
    if mask.shape != (n,):
        raise DataError(f"model flow: a mask of {mask.shape} entries for {n} cohort patients.")
    return mask


def account_for_model(
    cohort: pd.DataFrame,
    *,
    model: str,
    endpoint: str,
    analysed: Mapping[str, int] | pd.Series,
    reported_n: int | None = None,
    required: Sequence[str] = (),
    covariates: Sequence[str] = (),
    left_out: pd.Series | np.ndarray | None = None,
    left_out_reason: str = REASON_LEFT_OUT,
    left_out_detail: str = "",
    centre_reasons: Mapping[str, str] | None = None,
    centre: str = "centre",
) -> ModelFlow:
    """The flow of one model over the cohort.

    Parameters
    ----------
    cohort : DataFrame
        The analysis cohort (every patient of the exclusion flow's last step).
    model, endpoint : str
        Labels of the model (the run's output name) and its endpoint.
    analysed : mapping centre -> int
        Patients the fitted model reports it used, per centre (centres absent: 0).
    reported_n : int, optional
        The ``n`` of the model's results; :meth:`ModelFlow.check` compares it with the
        analysed total.
    required : sequence of str
        The endpoint's columns (duration, event): missing -> ``endpoint missing``.
    covariates : sequence of str
        Further columns the model needs complete, in model order (covariates, strata): a
        patient missing several counts for the first.
    left_out : boolean mask over the cohort, optional
        Patients the analysis leaves out by design (a sensitivity analysis), counted first
        with ``left_out_reason`` and ``left_out_detail``.
    centre_reasons : mapping centre -> reason, optional
        Centres whose remaining patients the model could not use (two-stage), with the
        reason the model recorded.
    centre : str
        The centre column.

    Returns
    -------
    ModelFlow
        Call :meth:`ModelFlow.check` to verify that the model's analysed counts reconcile.
    """
    n = len(cohort)
    centres = cohort[centre].astype(str).to_numpy()
    remaining = ~_as_mask(left_out, n)
    rows: list[dict[str, object]] = []
    order = sorted(set(centres))

    def add(step: str, mask: np.ndarray, reason: str = "", detail: str = "") -> None:
        counts = pd.Series(centres[mask]).value_counts()
        for c in order:
            k = int(counts.get(c, 0))
            if k or step in ("cohort",):
                rows.append(
                    {"model": model, "endpoint": endpoint, "centre": c, "step": step,
                     "reason": reason, "detail": detail, "n": k}
                )  # fmt: skip

    add("cohort", np.ones(n, dtype=bool))
    add("excluded", ~remaining, left_out_reason, left_out_detail)
    if required:
        no_endpoint = cohort[list(required)].isna().any(axis=1).to_numpy() & remaining
        add("excluded", no_endpoint, str(Reason.MISSING_ENDPOINT), endpoint)
        remaining &= ~no_endpoint
    columns = [c for c in dict.fromkeys(covariates) if c not in required]
    missing_counts: list[tuple[str, np.ndarray]] = []
    if columns:
        missing = cohort[columns].isna().to_numpy()
        with_endpoint = remaining.copy()
        for j, column in enumerate(columns):
            first = missing[:, j] & remaining
            add("excluded", first, str(Reason.MISSING_COVARIATE), column)
            remaining &= ~first
            missing_counts.append((column, missing[:, j] & with_endpoint))
    for c, reason in sorted((centre_reasons or {}).items()):
        lost = remaining & (centres == str(c))
        add("excluded", lost, REASON_CENTRE_NOT_ESTIMABLE, f"{c}: {reason}")
        remaining &= ~lost
    reported = pd.Series(dict(analysed), dtype=float)
    for c in order:
        rows.append(
            {"model": model, "endpoint": endpoint, "centre": c, "step": "analysed",
             "reason": "", "detail": "", "n": int(reported.get(c, 0))}
        )  # fmt: skip
    for column, mask in missing_counts:
        add("missing", mask, REASON_COVARIATE_MISSING, column)
    table = pd.DataFrame(rows, columns=list(MODEL_FLOW_COLUMNS))
    table["n"] = table["n"].astype(np.int64)
    table = table.sort_values(
        ["centre", "step"], key=lambda s: s.map(_STEP_ORDER) if s.name == "step" else s,
        kind="stable",
    ).reset_index(drop=True)
    return ModelFlow(table, {} if reported_n is None else {model: int(reported_n)})
