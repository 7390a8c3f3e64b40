"""Exposures of an analysis config, derived into a column of the analysis dataset.

Markers as the pooled analyses define them: CTC >= 1 or >= 5 per 7.5 ml (counts normalised
by the blood volume analysed), DTC >= 1, HER2-positive CTC (DETECT), a CTC phenotype score
from the ER- and HER2-positive CTC counts with the formula in the config (DETECT's
endocrine responsiveness score), clinical-risk vs CTC-risk concordance (STIC CTC). The serial
exposures (change category, trajectory group) come from ``pooled.models.serial`` and
``pooled.models.trajectories`` and are attached by the runner.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pooled.config import ExposureSpec
from pooled.errors import ConfigError

REFERENCE_VOLUME_ML = 7.5
CONCORDANCE_LEVELS = ("low_low", "low_high", "high_low", "high_high")  # clinical_ctc


def ctc_per_7_5ml(patients: pd.DataFrame) -> pd.Series:
    """CTC count normalised to 7.5 ml of blood (the derived field where present)."""
    if "ctc_per_7_5ml" in patients.columns and patients["ctc_per_7_5ml"].notna().any():
        return patients["ctc_per_7_5ml"].astype(float)
    volume = patients.get(
        "ctc_blood_volume_ml", pd.Series(REFERENCE_VOLUME_ML, index=patients.index)
    )
    return patients["ctc_count"].astype(float) * REFERENCE_VOLUME_ML / volume.astype(float)


def _at_least(values: pd.Series, threshold: float) -> pd.Series:
    out = (values >= threshold).astype(float)
    return out.where(values.notna())


def derive_exposure(
    patients: pd.DataFrame, spec: ExposureSpec, *, threshold: float | None = None
) -> pd.Series:
    """The exposure column for the patients (NaN where it cannot be determined).

    Parameters
    ----------
    patients : DataFrame
        The analysis dataset's patients.
    spec : ExposureSpec
        From the analysis config.
    threshold : float, optional
        Override the config's threshold (sensitivity analyses of other cut-offs).

    Returns
    -------
    Series
        0/1 floats for binary exposures, text levels for ``risk_concordance``.

    Examples
    --------
    >>> spec = ExposureSpec(name="ctc_positive", marker="ctc_count", threshold=5)
    >>> derive_exposure(pd.DataFrame({"ctc_count": [0, 10], "ctc_blood_volume_ml": [7.5, 15]}), spec).tolist()
    [0.0, 1.0]
    """
    cut = spec.threshold if threshold is None else threshold
    if spec.kind == "threshold":
        if spec.marker not in patients.columns and spec.marker != "ctc_per_7_5ml":
            raise ConfigError(f"exposure marker {spec.marker!r} is not in the analysis dataset.")
        if spec.marker in ("ctc_count", "ctc_per_7_5ml") and spec.per_7_5ml:
            values = ctc_per_7_5ml(patients)
        else:
            values = patients[spec.marker].astype(float)
        return _at_least(values, cut).rename(spec.name)
    if spec.kind == "her2_ctc":
        return _at_least(patients["ctc_her2_positive_count"].astype(float), cut).rename(spec.name)
    if spec.kind == "phenotype_score":
        try:
            score = patients.eval(spec.formula)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ConfigError(
                f"exposure formula {spec.formula!r} cannot be evaluated: {exc}."
            ) from None
        return _at_least(pd.Series(score, index=patients.index, dtype=float), cut).rename(spec.name)
    if spec.kind == "risk_concordance":
        ctc_high = _at_least(ctc_per_7_5ml(patients), cut)
        clinical = patients["clinical_risk"]
        ctc_level = pd.Series(np.where(ctc_high == 1, "high", "low"), index=patients.index)
        label = clinical.astype(str).str.cat(ctc_level.astype(str), sep="_")
        return label.where(clinical.notna() & ctc_high.notna()).rename(spec.name)
    raise ConfigError(
        f"exposure kind {spec.kind!r} is derived from serial samples by the runner, not here."
    )
