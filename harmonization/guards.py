"""Checks before an upload is stored: is it empty, or does it look like another centre's?

A centre's upload replaces the centre's data in every analysis, so two mistakes are costly
and silent: a header-only file (the centre vanishes from the analyses) and another centre's
file sent or ingested under this centre's mapping (its patients vanish; the other centre's
are analysed twice). :func:`ingest_concerns` compares the checked upload with what the store
holds and returns every reason to stop; ``pooled ingest`` refuses to store the upload while
there is one, unless the user says explicitly that it is intended (``--allow-empty``,
``--allow-centre-mismatch``).

Signals of another centre's file, each on its own enough to stop:

- the upload's own centre column (mapped to ``centre``) names another centre on most rows;
- an unmapped column headed like a centre column (``centre``, ``zentrum``, ``site``, ...)
  holds another stored centre's code and not this centre's;
- the patient identifiers have the shape of another centre's stored identifiers (digits
  replaced by ``9``, e.g. ``TUE-9999``) while the centre's own stored version uses another
  shape (a first upload is not judged by its identifiers' shape: centres of one trial often
  share a numbering scheme);
- most patients are patients another centre already sent: the same fingerprint (diagnosis
  and surgery dates, age, tumour size, nodes, grade, receptors), or the same identifier
  together with the same age or diagnosis date (an identifier alone says nothing when
  centres number their patients alike);
- the upload shares almost no patient identifier with the centre's current version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from harmonization.store import Store
    from harmonization.upload import CheckedUpload

__all__ = ["IngestConcern", "id_shape", "ingest_concerns"]

#: Headers that name a centre column in an upload (compared lower case, without spaces).
CENTRE_HEADERS: frozenset[str] = frozenset(
    {
        "centre", "center", "centrecode", "centercode", "zentrum", "site", "hospital",
        "klinik", "ziekenhuis", "centrum", "institution", "studysite", "centreid", "centerid",
    }
)  # fmt: skip
MIN_PATIENTS = 10  # fewer patients than this: too few to judge by shares
SHARE = 0.5  # share of patients that makes a signal


@dataclass(frozen=True, slots=True)
class IngestConcern:
    """One reason not to store an upload without the user's explicit say-so."""

    kind: Literal["empty", "other_centre"]
    message: str

    @property
    def flag(self) -> str:
        """The ``pooled ingest`` option that accepts it."""
        return "--allow-empty" if self.kind == "empty" else "--allow-centre-mismatch"


def id_shape(value: object) -> str:
    """The shape of an identifier: digits become ``9``, letters are kept upper case.

    Examples
    --------
    >>> id_shape("ulm-0042"), id_shape(17)
    ('ULM-9999', '99')
    """
    text = str(value).strip().upper()
    return re.sub(r"\d", "9", text)


def _dominant(shapes: pd.Series) -> tuple[str, float]:
    if shapes.empty:
        return "", 0.0
    counts = shapes.value_counts()
    return str(counts.index[0]), float(counts.iloc[0] / len(shapes))


def _fingerprints(frame: pd.DataFrame) -> pd.Series:
    """The cross-centre duplicate rule's fingerprint, where diagnosis date and age are known."""
    from harmonization.validate import fingerprint_keys

    usable = pd.Series(True, index=frame.index)
    for name in ("diagnosis_date", "age"):
        usable &= frame[name].notna() if name in frame else False
    return fingerprint_keys(frame).where(usable)


def ingest_concerns(
    checked: CheckedUpload, store: Store | None, *, centre: str | None = None
) -> list[IngestConcern]:
    """Reasons not to store ``checked`` as a version of its centre (empty list: none).

    Parameters
    ----------
    checked : CheckedUpload
        The upload read, mapped and validated (:func:`harmonization.upload.check_upload`).
    store : Store or None
        The store it would go into (its latest accepted versions are compared); ``None``
        checks the upload alone.
    centre : str, optional
        The centre it would be stored as; default the mapping's.

    Returns
    -------
    list of IngestConcern

    Examples
    --------
    >>> concerns = ingest_concerns(checked, store)  # doctest: +SKIP
    >>> [c.message for c in concerns]  # doctest: +SKIP
    """
    centre = centre or checked.centre
    concerns: list[IngestConcern] = []
    for table in checked.tables:
        if table.n_rows == 0:
            where = f"{table.file}" + (f", sheet '{table.sheet}'" if table.sheet else "")
            concerns.append(
                IngestConcern(
                    "empty",
                    f"{where} has no data rows: storing it would make centre '{centre}' "
                    f"{table.table} empty in every analysis.",
                )
            )
    patients = next((t for t in checked.tables if t.table == "patients"), None)
    if patients is None or patients.n_rows == 0:
        return concerns
    data = patients.data
    report = checked.report.findings
    mismatch = report.loc[report["rule"] == "centre_mismatch"]
    if len(mismatch) and len(mismatch) / max(len(data), 1) > SHARE:
        named = mismatch["value"].astype(str).value_counts().index[0]
        concerns.append(
            IngestConcern(
                "other_centre",
                f"the upload's centre column names '{named}' on {len(mismatch)} of {len(data)} "
                f"rows, not '{centre}'.",
            )
        )
    if store is None:
        return concerns
    latest = store.latest_versions()
    if not latest:
        return concerns
    stored = store.records("patients", versions=latest, centres=list(latest))
    if stored.empty:
        return concerns
    stored = stored.assign(centre=stored["centre"].astype(str))
    others = stored.loc[stored["centre"] != centre]
    own = stored.loc[stored["centre"] == centre]
    concerns.extend(_centre_column(checked, centre, set(others["centre"])))
    ids = data["patient_id"].dropna().astype(str).str.strip()
    if len(ids) < MIN_PATIENTS:
        return concerns
    concerns.extend(_shapes(ids, own, others, centre))
    concerns.extend(_overlap(data, ids, others, centre))
    if len(own) >= MIN_PATIENTS:
        own_ids = set(own["patient_id"].dropna().astype(str).str.strip())
        shared = int(ids.isin(own_ids).sum())
        if shared < 0.2 * min(len(ids), len(own_ids)):
            version = latest.get(centre)
            concerns.append(
                IngestConcern(
                    "other_centre",
                    f"only {shared} of the upload's {len(ids)} patient ids are among the "
                    f"{len(own_ids)} of centre '{centre}' version {version}: storing it would "
                    "replace almost every patient of the centre.",
                )
            )
    return concerns


def _centre_column(
    checked: CheckedUpload, centre: str, other_centres: set[str]
) -> list[IngestConcern]:
    out: list[IngestConcern] = []
    lowered = {c.lower() for c in other_centres}
    for raw in checked.raw:
        for header in raw.columns:
            key = re.sub(r"[\s_\-.]", "", header.lower())
            if key not in CENTRE_HEADERS:
                continue
            values = raw.cells[header].dropna().astype(str).str.strip().str.lower()
            values = values[values != ""]
            if values.empty:
                continue
            top = values.value_counts()
            name, share = str(top.index[0]), float(top.iloc[0] / len(values))
            if name != centre.lower() and name in lowered and share > SHARE:
                out.append(
                    IngestConcern(
                        "other_centre",
                        f"column '{header}' of {raw.file} names centre '{name}' on "
                        f"{share:.0%} of rows, not '{centre}'.",
                    )
                )
    return out


def _shapes(
    ids: pd.Series, own: pd.DataFrame, others: pd.DataFrame, centre: str
) -> list[IngestConcern]:
    shape, share = _dominant(ids.map(id_shape))
    if share < 0.8 or not re.search(r"[A-Z]", shape):
        return []  # mixed or purely numeric identifiers say nothing about the centre
    own_shape = _dominant(own["patient_id"].dropna().map(id_shape))[0] if len(own) else ""
    if not own_shape or own_shape == shape:
        return []  # a first upload, or the centre's own shape
    for other, group in others.groupby("centre"):
        other_shape, other_share = _dominant(group["patient_id"].dropna().map(id_shape))
        if other_shape == shape and other_share >= 0.8:
            mine = f"; centre '{centre}' uses '{own_shape}'" if own_shape else ""
            return [
                IngestConcern(
                    "other_centre",
                    f"the patient ids look like centre '{other}''s ('{shape}'){mine}.",
                )
            ]
    return []


def _overlap(
    data: pd.DataFrame, ids: pd.Series, others: pd.DataFrame, centre: str
) -> list[IngestConcern]:
    out: list[IngestConcern] = []
    prints = _fingerprints(data).dropna()
    mine = data.loc[data["patient_id"].notna()].reset_index(drop=True)
    for other, group in others.groupby("centre"):
        reasons: list[str] = []
        if len(prints) >= MIN_PATIENTS:
            theirs = set(_fingerprints(group).dropna())
            matched = int(prints.isin(theirs).sum())
            if matched > SHARE * len(prints):
                reasons.append(
                    f"{matched} of {len(prints)} patients have the dates, age, tumour and "
                    f"receptors of patients centre '{other}' already sent"
                )
        their_keys = {k for part in _key_columns(group) for k in part.dropna()}
        if their_keys:
            hit = np.zeros(len(mine), dtype=bool)
            for key_part in _key_columns(mine):
                hit |= key_part.isin(their_keys).to_numpy()
            same = int(hit.sum())
            if same > SHARE * len(mine):
                reasons.append(
                    f"{same} of {len(mine)} patients have the id and the age or diagnosis date "
                    f"of a patient of centre '{other}'"
                )
        if reasons:
            out.append(IngestConcern("other_centre", "; ".join(reasons) + "."))
    return out


def _key_columns(frame: pd.DataFrame) -> list[pd.Series]:
    """Identifier + age (rounded) and identifier + diagnosis date, where known."""
    ids = frame["patient_id"].astype(str).str.strip()
    parts = []
    if "age" in frame:
        age = pd.to_numeric(frame["age"], errors="coerce").round(0)
        parts.append((ids + "|a" + age.astype(str)).where(age.notna()))
    if "diagnosis_date" in frame:
        dx = pd.to_datetime(frame["diagnosis_date"], errors="coerce").dt.strftime("%Y-%m-%d")
        parts.append((ids + "|d" + dx).where(dx.notna()))
    return parts


def summarise(concerns: Sequence[IngestConcern]) -> str:
    """The concerns as lines for the terminal, each with the option that accepts it."""
    return "\n".join(f"- {c.message} (to store it anyway: {c.flag})" for c in concerns)
