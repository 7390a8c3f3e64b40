"""Natural cubic splines: R's ``splines::ns`` (``make_splines.R``), the defining properties of
a natural spline, and the knot rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pooled.errors import ConfigError, DataError
from pooled.models.splines import (
    NaturalSplineBasis,
    bspline_basis,
    natural_spline_basis,
    quantile_type7,
)

from .conftest import REFERENCE

BASIS_ABS = 1e-12  # basis values (observed ~3e-16)
KNOT_REL = 1e-12  # knots: R's log1p and NumPy's differ by one ulp at log1p(2)


@pytest.fixture(scope="module")
def splines_reference() -> dict:
    return json.loads((REFERENCE / "expected_splines.json").read_text())


@pytest.fixture(scope="module")
def log_counts() -> np.ndarray:
    data = pd.read_csv(REFERENCE / "cohort_counts.csv")
    return np.log1p(data["ctc_count"] * 7.5 / data["blood_volume_ml"]).to_numpy()


def test_knots_are_r_ns_knots(log_counts, splines_reference):
    ref = splines_reference["spline"]
    basis = natural_spline_basis(log_counts, df=3)
    np.testing.assert_allclose(basis.knots, ref["knots"], rtol=KNOT_REL)
    np.testing.assert_allclose(basis.boundary_knots, ref["boundary_knots"], rtol=KNOT_REL)
    assert basis.df == 3


def test_basis_at_grid_is_r_predict_ns(log_counts, splines_reference):
    ref = splines_reference["spline"]
    basis = natural_spline_basis(log_counts, df=3)
    values = basis.evaluate(ref["grid"]["x"])
    np.testing.assert_allclose(values, ref["grid"]["basis_at_grid"], atol=BASIS_ABS, rtol=0)


def test_quantile_type7_is_r_arithmetic():
    values = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 10.0])
    # R: quantile(c(5, 1, 3, 2, 4, 10), c(1/3, 2/3)) = 2.666667, 4.333333
    np.testing.assert_allclose(quantile_type7(values, np.array([1 / 3, 2 / 3])),
                               [2 + 2 / 3, 4 + 1 / 3], rtol=1e-15)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    knots=st.lists(st.floats(0.05, 0.95), min_size=0, max_size=4, unique=True),
    x=st.lists(st.floats(-1.0, 2.0), min_size=1, max_size=20),
)
def test_natural_spline_properties(knots, x):
    """Second derivative 0 at the boundary knots, linear outside them, spans the linear
    functions (the basis and x are collinear with a constant)."""
    basis = NaturalSplineBasis(knots=tuple(sorted(knots)), boundary_knots=(0.0, 1.0))

    def second(at: float, step: float = 1e-3) -> np.ndarray:  # exact for a cubic piece
        f = basis.evaluate([at - step, at, at + step])
        return (f[0] - 2 * f[1] + f[2]) / step**2

    for edge, sign in ((0.0, 1.0), (1.0, -1.0)):
        near, further = second(edge + sign * 0.01), second(edge + sign * 0.02)
        np.testing.assert_allclose(2 * near - further, 0.0, atol=1e-5)  # f'' linear, 0 at edge
    far = np.array([-2.0, -1.0, 2.0, 3.0])
    values = basis.evaluate(far)
    np.testing.assert_allclose(values[1] - values[0], values[0] - basis.evaluate([-3.0])[0],
                               atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(values[3] - values[2], values[2] - basis.evaluate([1.0])[0],
                               atol=1e-9)  # fmt: skip
    grid = np.linspace(-0.5, 1.5, 25)
    design = np.column_stack((np.ones(grid.size), basis.evaluate(grid)))
    coef, *_ = np.linalg.lstsq(design, grid, rcond=None)
    np.testing.assert_allclose(design @ coef, grid, atol=1e-9)
    assert basis.evaluate(x).shape == (len(x), basis.df)


def test_bspline_basis_partition_of_unity_and_right_end():
    knots = [0, 0, 0, 0, 0.3, 0.7, 1, 1, 1, 1]
    values = bspline_basis(knots, np.linspace(0, 1, 11))
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-14)
    assert values[-1, -1] == pytest.approx(1.0)  # the limit from the left at the last knot
    with pytest.raises(DataError, match="within the knots"):
        bspline_basis(knots, [1.5])


def test_nonzero_rule_keeps_knots_off_a_heap_of_zeros():
    counts = np.array([0.0] * 80 + [1, 1, 2, 3, 3, 4, 6, 8, 12, 15, 20, 30, 45, 60, 90, 150,
                                     200, 300, 500, 1000])  # fmt: skip
    x = np.log1p(counts)
    with pytest.raises(DataError, match="strictly between"):
        natural_spline_basis(x, df=3, knots_at="all")  # R's rule: both knots at 0
    basis = natural_spline_basis(x, df=3, knots_at="nonzero")
    assert 0.0 < basis.knots[0] < basis.knots[1] < x.max()
    np.testing.assert_allclose(basis.knots, quantile_type7(x[x > 0], np.array([1 / 3, 2 / 3])))


def test_errors():
    with pytest.raises(ConfigError, match="df or knots"):
        natural_spline_basis([1.0, 2.0])
    with pytest.raises(ConfigError, match="knots_at"):
        natural_spline_basis([1.0, 2.0], df=3, knots_at="some")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="at least two values"):
        natural_spline_basis([1.0], df=3)
    with pytest.raises(DataError, match="boundary knots"):
        NaturalSplineBasis(knots=(), boundary_knots=(1.0, 1.0))
    assert np.isnan(NaturalSplineBasis((), (0.0, 1.0)).evaluate([np.nan])).all()
