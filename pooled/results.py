"""The tidy result table shared by every model.

Every ``*Result.to_frame()`` returns at least these columns, in this order, with raw
(unrounded) numbers; model-specific columns may follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

TIDY_COLUMNS: tuple[str, ...] = (
    "analysis",
    "endpoint",
    "model",
    "term",
    "estimate",
    "std_error",
    "hr",
    "ci_lower",
    "ci_upper",
    "p_value",
    "n",
    "events",
)


def tidy_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a tidy result table: the :data:`TIDY_COLUMNS` first, extra columns after.

    Missing tidy columns are filled with NaN (numbers) or ``""`` (the text columns
    ``analysis``, ``endpoint``, ``model``, ``term``).
    """
    frame = pd.DataFrame(list(rows))
    for column in TIDY_COLUMNS:
        if column not in frame.columns:
            text = column in ("analysis", "endpoint", "model", "term")
            frame[column] = "" if text else np.nan
    extra = [c for c in frame.columns if c not in TIDY_COLUMNS]
    return frame[list(TIDY_COLUMNS) + extra].reset_index(drop=True)

#: Model-level columns of a Cox model's rows in ``results.csv`` (``CoxResult.to_frame()``), the
#: same value on every coefficient row of the model: log partial likelihood at 0 and at the
#: fit; likelihood-ratio, Wald (robust with a cluster; df = the covariance's rank) and score
#: tests as chi-square, df and p; AIC; Harrell's C of the linear predictor within strata and
#: its infinitesimal-jackknife SE. ``CoxResult.fit_statistics()`` gives them as rows.
MODEL_STATISTIC_COLUMNS: tuple[str, ...] = (
    "model_loglik_null",
    "model_loglik",
    "model_lr_chisq",
    "model_lr_df",
    "model_lr_p_value",
    "model_wald_chisq",
    "model_wald_df",
    "model_wald_p_value",
    "model_score_chisq",
    "model_score_df",
    "model_score_p_value",
    "model_aic",
    "model_concordance",
    "model_concordance_se",
)
