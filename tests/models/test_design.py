"""Design matrices: R's naming and column order, complete-case bookkeeping, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pooled.errors import ConfigError, DataError
from pooled.models.design import build_design


@pytest.fixture
def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "centre": ["A", "A", "A", "B", "B", "B", "C", "C"],
            "marker": [1, 0, 1, 0, 1, 0, 1, 0],
            "age": [50.0, np.nan, 61.0, 45.0, np.nan, 70.0, 55.0, 66.0],
            "grade": ["g1", "g2", "g3", "g1", "g2", "g3", "g2", None],
            "size": ["s", "l", "l", "s", "s", "l", "l", "s"],
        }
    )


def test_r_names_and_order_for_marker_times_factor(cohort):
    d = build_design(
        cohort,
        ["ctc_positive", "subtype", "age", "node_positive", "grade3"],
        categorical=[("subtype", "luminal_a")],
        interactions=[("ctc_positive", "subtype")],
        required=["os_months", "os_event", "centre"],
    )
    # character column: levels sorted as R's factor() does, reference moved first
    assert d.term_names == (
        "ctc_positive",
        "subtypeher2_positive",
        "subtypeluminal_b",
        "subtypetriple_negative",
        "age",
        "node_positive",
        "grade3",
        "ctc_positive:subtypeher2_positive",
        "ctc_positive:subtypeluminal_b",
        "ctc_positive:subtypetriple_negative",
    )
    assert d.levels == (
        ("subtype", ("luminal_a", "her2_positive", "luminal_b", "triple_negative")),
    )
    kept = cohort.iloc[d.rows]
    np.testing.assert_array_equal(
        d.matrix[:, 8], kept["ctc_positive"] * (kept["subtype"] == "luminal_b")
    )
    assert d.n == cohort["age"].notna().sum()
    assert d.columns_of("ctc_positive:subtype") == (7, 8, 9)


def test_categorical_dtype_order_is_respected(small):
    df = small.assign(grade=pd.Categorical(small["grade"], categories=["g3", "g1", "g2"]))
    d = build_design(df, ["grade"], categorical=[("grade", "g1")])
    assert d.term_names == ("gradeg3", "gradeg2")


def test_factor_by_factor_interaction_first_factor_fastest(small):
    d = build_design(
        small.assign(age=small["age"].fillna(0)),
        ["grade", "size"],
        categorical=[("grade", "g1"), ("size", "s")],
        interactions=[("grade", "size")],
    )
    assert d.term_names == ("gradeg2", "gradeg3", "sizel", "gradeg2:sizel", "gradeg3:sizel")
    d2 = build_design(
        small,
        ["size", "grade"],
        categorical=[("grade", "g1"), ("size", "s")],
        interactions=[("size", "grade")],
    )
    assert d2.term_names[-2:] == ("sizel:gradeg2", "sizel:gradeg3")


def test_dropped_counts_per_centre_with_reasons(small):
    d = build_design(small, ["marker", "age", "grade"], categorical=[("grade", "g1")])
    got = {(r.centre, r.reason): r.n_dropped for r in d.dropped.itertuples()}
    assert got == {("A", "missing: age"): 1, ("B", "missing: age"): 1, ("C", "missing: grade"): 1}
    assert d.n + d.dropped["n_dropped"].sum() == len(small)
    np.testing.assert_array_equal(d.rows, [0, 2, 3, 5, 6])


def test_nothing_dropped_gives_an_empty_table(small):
    d = build_design(small, ["marker"])
    assert d.dropped.empty and list(d.dropped.columns) == ["centre", "reason", "n_dropped"]


def test_errors(small):
    with pytest.raises(ConfigError, match="nope"):
        build_design(small, ["nope"])
    with pytest.raises(ConfigError, match="main effects"):
        build_design(small, ["marker"], interactions=[("marker", "age")])
    with pytest.raises(DataError, match="expected numeric.*categorical"):
        build_design(small, ["size"])
    with pytest.raises(DataError, match="reference level 'g9'"):
        build_design(small, ["grade"], categorical=[("grade", "g9")])
    with pytest.raises(DataError, match="constant"):
        build_design(small.assign(k=1.0), ["marker", "k"])
    with pytest.raises(DataError, match="No complete rows"):
        build_design(small.assign(age=np.nan), ["age"])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_row_is_kept_or_counted_with_its_missing_columns(data):
    """Missing values in columns of any dtype (numpy floats, nullable integers, objects,
    booleans): a row is kept exactly when none of the used columns is missing, and every
    other row is counted once, by centre, with the columns it misses."""
    n = data.draw(st.integers(1, 25))
    missing = {
        c: np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        for c in ("x", "k", "g", "centre")
    }
    x = np.where(missing["x"], np.nan, np.arange(n, dtype=float))
    k = pd.array(np.where(missing["k"], None, np.arange(n) % 3), dtype="Int64")
    g = np.where(missing["g"], None, np.where(np.arange(n) % 2, "a", "b")).astype(object)
    centre = np.where(missing["centre"], None, np.where(np.arange(n) % 3, "A", "B"))
    frame = pd.DataFrame({"x": x, "k": k, "g": g, "flag": np.arange(n) % 2 == 0, "centre": centre})
    any_missing = np.logical_or.reduce([missing[c] for c in ("x", "k", "g", "centre")])
    try:
        d = build_design(
            frame, ["x", "k", "g", "flag"], categorical=[("g", "a")], required=["centre"]
        )
    except DataError:  # no complete row, or a term constant among the kept rows
        return
    np.testing.assert_array_equal(d.rows, np.flatnonzero(~any_missing))
    assert d.n + int(d.dropped["n_dropped"].sum()) == n
    for row in d.dropped.itertuples():
        assert row.reason.startswith("missing: ")
    named = {c for r in d.dropped["reason"] for c in r.removeprefix("missing: ").split(", ")}
    assert named == {c for c in ("x", "k", "g", "centre") if (missing[c] & any_missing).any()}
