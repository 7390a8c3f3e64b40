"""The model flow accounts for every cohort patient a model did not use, once, with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonization.schema import Reason
from pooled.errors import DataError
from pooled.model_flow import (
    MODEL_FLOW_COLUMNS,
    REASON_CENTRE_NOT_ESTIMABLE,
    REASON_LEFT_OUT,
    ModelFlow,
    account_for_model,
)


def _cohort() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame(
        {
            "centre": ["A", "A", "A", "A", "B", "B", "B", "C"],
            "t": [1.0, 2.0, nan, 4.0, 5.0, 6.0, 7.0, 8.0],
            "e": [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0],
            "age": [50.0, nan, nan, 40.0, nan, 60.0, 61.0, 70.0],
            "grade": [1.0, nan, 2.0, nan, 3.0, 3.0, 2.0, 1.0],
        }
    )


def _flow(analysed: dict[str, int], **kwargs) -> ModelFlow:
    return account_for_model(
        _cohort(),
        model="m",
        endpoint="os",
        analysed=analysed,
        required=("t", "e"),
        covariates=("age", "grade"),
        **kwargs,
    )


def test_each_patient_is_counted_once_at_the_first_reason() -> None:
    flow = _flow({"A": 1, "B": 2, "C": 1}, reported_n=4)
    flow.check()
    excluded = flow.excluded("m")
    assert excluded.to_dict("records") == [
        {"centre": "A", "reason": str(Reason.MISSING_ENDPOINT), "detail": "os", "n": 1},
        {"centre": "A", "reason": str(Reason.MISSING_COVARIATE), "detail": "age", "n": 1},
        {"centre": "A", "reason": str(Reason.MISSING_COVARIATE), "detail": "grade", "n": 1},
        {"centre": "B", "reason": str(Reason.MISSING_COVARIATE), "detail": "age", "n": 1},
    ]
    frame = flow.to_frame()
    assert tuple(frame.columns) == MODEL_FLOW_COLUMNS
    missing = frame.loc[frame["step"] == "missing"].groupby("detail")["n"].sum()
    # among patients with the endpoint: age missing twice (A, B), grade twice (A x2)
    assert missing.to_dict() == {"age": 2, "grade": 2}
    summary = flow.summary().iloc[0]
    assert summary["cohort"] == 8 and summary["analysed"] == 4
    assert summary[f"excluded: {Reason.MISSING_COVARIATE}"] == 3
    assert summary["missing by covariate"] == "age 2; grade 2"


def test_left_out_and_centre_reasons() -> None:
    cohort = _cohort()
    flow = _flow(
        {"A": 1, "B": 0, "C": 0},
        left_out=cohort["centre"] == "C",
        left_out_detail="without C",
        centre_reasons={"B": "no events among x=1"},
    )
    flow.check()
    excluded = flow.excluded("m")
    assert excluded.loc[excluded["reason"] == REASON_LEFT_OUT, "n"].sum() == 1
    lost = excluded.loc[excluded["reason"] == REASON_CENTRE_NOT_ESTIMABLE]
    assert lost[["centre", "detail", "n"]].values.tolist() == [["B", "B: no events among x=1", 2]]
    # A has one complete patient, and no reason why the model did not use it
    with pytest.raises(DataError, match="'m' does not reconcile for centre 'A'"):
        _flow({"A": 0, "B": 2, "C": 1}).check()


def test_a_model_reporting_another_n_is_an_error() -> None:
    with pytest.raises(DataError, match="the flow says 4 patients analysed but the model reports n = 5"):
        _flow({"A": 1, "B": 2, "C": 1}, reported_n=5).check()


def test_flows_concatenate_with_their_reported_n() -> None:
    a = _flow({"A": 1, "B": 2, "C": 1}, reported_n=4)
    b = account_for_model(_cohort(), model="km", endpoint="os", analysed={"A": 3, "B": 3, "C": 1},
                          reported_n=7, required=("t", "e"))  # fmt: skip
    both = ModelFlow.concat([a, None, b])
    both.check()
    assert both.models == ("m", "km") and both.reported == {"m": 4, "km": 7}
    assert both.same_patients("m", "m") and not both.same_patients("m", "km")
    assert ModelFlow.concat([]).to_frame().empty
