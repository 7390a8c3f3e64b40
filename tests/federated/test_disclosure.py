"""Each disclosure rule refuses a request that breaks it, naming the rule; and no message a
centre releases holds a row-level value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pooled.federated import centre as centre_side
from pooled.federated.disclosure import (
    RELEASE_LOG,
    DisclosurePolicy,
    DisclosureRefused,
    check_release,
    suppress_cells,
)
from pooled.federated.request import request_from_config
from tests.federated.conftest import run


def _parameters(consortium, endpoint="os", **changes) -> dict:
    return {"request": request_from_config(consortium.config, endpoint, **changes).to_dict()}


def test_min_patients_refuses_an_aggregate_of_too_few_patients(paddy) -> None:
    # a cohort rule that leaves a handful of patients per centre
    parameters = _parameters(paddy, include=("age < 30",))
    with pytest.raises(DisclosureRefused, match="'min_patients'") as caught:
        centre_side.centre_summary(paddy.centres[0].patients, parameters)
    assert caught.value.rule == "min_patients"
    fed = run(paddy.centres, "central_cox", parameters)
    assert fed["error"]["kind"] == "DisclosureRefused" and "min_patients" in fed["error"]["message"]


def test_min_events_refuses_survival_aggregates_of_too_few_events(paddy, monkeypatch) -> None:
    monkeypatch.setenv("POOLED_MIN_EVENTS", "100000")
    for compute in (
        centre_side.centre_summary,
        centre_side.centre_logrank,
        centre_side.centre_two_stage,
    ):
        with pytest.raises(DisclosureRefused, match="'min_events'"):
            compute(paddy.centres[0].patients, _parameters(paddy))


def test_a_request_can_tighten_but_never_loosen_the_centres_policy(paddy, monkeypatch) -> None:
    loose = _parameters(paddy, policy={"min_patients": 0, "min_events": 0, "min_cell": 0})
    assert DisclosurePolicy().tightened(loose["request"]["policy"]) == DisclosurePolicy()
    strict = _parameters(paddy, policy={"min_events": 100000})
    with pytest.raises(DisclosureRefused, match="'min_events'"):
        centre_side.centre_summary(paddy.centres[0].patients, strict)
    monkeypatch.setenv("POOLED_DISCLOSURE", "off")
    assert not DisclosurePolicy.from_environment().enabled


def test_min_cell_refuses_kaplan_meier_bins_and_logrank_groups_with_small_cells(paddy) -> None:
    patients = paddy.centres[0].patients
    with pytest.raises(DisclosureRefused, match="'min_cell'.*wider bins") as caught:
        centre_side.centre_km(patients, {**_parameters(paddy), "width": 1, "max_time": 120})
    assert caught.value.rule == "min_cell"
    # a log-rank group of fewer than 5 patients: the exposure positive for 3 patients only
    few = patients.copy()
    few["dtc_count"] = 0
    few.loc[few.index[:3], "dtc_count"] = 5
    with pytest.raises(DisclosureRefused, match="'min_cell'.*dtc_positive=1"):
        centre_side.centre_logrank(few, _parameters(paddy))


def test_min_cell_suppresses_small_cells_of_released_tables(paddy) -> None:
    assert suppress_cells([120, 3, 0, 40], DisclosurePolicy()) == [120, None, 0, None]
    assert suppress_cells([1, 1, 50, 60], DisclosurePolicy()) == [None, None, None, 60]
    assert suppress_cells([4, 4], DisclosurePolicy(enabled=False)) == [4, 4]
    answer = centre_side.centre_describe(paddy.centres[0].patients, _parameters(paddy))
    for group in answer["groups"]:
        for described in group["variables"].values():
            if described["kind"] == "categorical":
                cells = [*described["counts"], described["missing"]]
                shown = [c for c in cells if c is not None]
                assert all(c == 0 or c >= 5 for c in shown)
                hidden = len(cells) - len(shown)
                assert hidden != 1  # one suppressed cell could be recovered from the total


def test_no_row_values_refuses_patient_level_vectors_and_objects() -> None:
    with pytest.raises(DisclosureRefused, match="'no_row_values'"):
        check_release({"residuals": list(range(10_000))}, centre="c", request_id="r", method="m")
    with pytest.raises(DisclosureRefused, match="'no_row_values'"):
        check_release({"frame": pd.DataFrame({"x": [1]})}, centre="c", request_id="r", method="m")
    with pytest.raises(DisclosureRefused, match="'no_row_values'"):
        check_release({"x": np.zeros(3)}, centre="c", request_id="r", method="m")


def test_no_event_times_refuses_a_message_holding_an_event_time() -> None:
    with pytest.raises(DisclosureRefused, match="'no_event_times'"):
        check_release(
            {"mean": 1.5, "leak": 37.2310},
            centre="c", request_id="r", method="m", forbidden={"no_event_times": [37.2310]},
        )  # fmt: skip


def _strings_and_numbers(value, strings, numbers) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            strings.append(k)
            _strings_and_numbers(v, strings, numbers)
    elif isinstance(value, list):
        for v in value:
            _strings_and_numbers(v, strings, numbers)
    elif isinstance(value, str):
        strings.append(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        numbers.append(float(value))


def _lists(value, out) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _lists(v, out)
    elif isinstance(value, list):
        out.append(len(value))
        for v in value:
            _lists(v, out)


def test_no_released_message_holds_a_row_level_value(paddy, monkeypatch) -> None:
    """Every message every centre releases in every analysis: no patient id, no event time,
    no covariate value unique to one patient, and no list as long as the patients."""
    monkeypatch.setenv("POOLED_MIN_CELL", "1")  # let the Kaplan-Meier bins through as well
    released: list[dict] = []
    remove = RELEASE_LOG.listen(released.append)
    try:
        params = _parameters(paddy)
        run(paddy.centres, "central_cox", params)
        run(paddy.centres, "central_logrank", params)
        run(paddy.centres, "central_km", {**params, "width": 12, "max_time": 96})
        run(paddy.centres, "central_two_stage", params)
        run(paddy.centres, "central_describe", params)
        run(paddy.centres, "central_validation", {"request_id": "v"}, database="findings")
    finally:
        remove()
    methods = {entry["method"] for entry in released}
    assert methods == {"summary", "cox", "logrank", "km", "two_stage", "describe", "validation"}
    by_centre = {c.name: c.patients for c in paddy.centres}
    for entry in released:
        patients = by_centre[entry["centre"]]
        strings: list[str] = []
        numbers: list[float] = []
        _strings_and_numbers(entry["message"], strings, numbers)
        ids = set(patients["patient_id"].astype(str))
        assert not ids.intersection(strings), entry["method"]
        assert not any(any(i in s for i in ids) for s in strings if len(s) > 3)
        event_times = patients.loc[patients["os_event"] == 1, "os_months"].dropna()
        unique_values = set()
        for column in (
            "os_months",
            "dfs_months",
            "age",
            "tumour_size_mm",
            "ctc_count",
            "dtc_count",
        ):
            counts = patients[column].dropna().value_counts()
            unique_values |= {float(v) for v, n in counts.items() if n == 1}
        fractional = {float(t) for t in event_times if not float(t).is_integer()}
        fractional |= {v for v in unique_values if not float(v).is_integer()}
        assert not fractional.intersection(n for n in numbers if not math.isnan(n)), entry["method"]
        lengths: list[int] = []
        _lists(entry["message"], lengths)
        assert (
            max(lengths, default=0) < 200 < len(patients)
            or max(lengths, default=0) < len(patients) // 2
        )


def test_message_shapes_do_not_depend_on_the_number_of_patients(paddy) -> None:
    """The same request on a centre and on that centre's data twice over gives messages of
    the same shape: nothing in them grows with the patients."""
    patients = paddy.centres[2].patients
    doubled = pd.concat([patients, patients], ignore_index=True)
    params = _parameters(paddy)
    summary = centre_side.centre_summary(patients, params)
    from pooled.federated.coordinator import consortium_levels
    from pooled.federated.request import FederatedRequest

    levels = consortium_levels(FederatedRequest.from_dict(params["request"]), [summary])
    cox = {**params, "levels": levels, "evaluations": []}
    for compute, parameters in (
        (centre_side.centre_summary, params),
        (centre_side.centre_logrank, params),
        (centre_side.centre_describe, params),
    ):
        one, two = compute(patients, parameters), compute(doubled, parameters)
        a: list[int] = []
        b: list[int] = []
        _lists(one, a)
        _lists(two, b)
        assert a == b and set(one) == set(two)
    terms = centre_side.centre_cox(patients, {**cox, "evaluations": []})["terms"]
    cox["evaluations"] = [{"beta": [0.0] * len(terms), "columns": None}]
    one, two = centre_side.centre_cox(patients, cox), centre_side.centre_cox(doubled, cox)
    p = len(terms)
    assert np.shape(one["evaluations"][0]["information"]) == (p, p)
    assert np.shape(two["evaluations"][0]["information"]) == (p, p)
    assert (
        np.shape(one["evaluations"][0]["score"]) == np.shape(two["evaluations"][0]["score"]) == (p,)
    )
