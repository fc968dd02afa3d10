"""drtool.core.vectors: L2 normalisation and the sanity check on vectors read from an embedding cache."""

from __future__ import annotations

import math
from array import array

import pytest

from drtool.core.vectors import NORM_TOLERANCE, cached_vector_problem, l2_normalise


def test_l2_normalise_gives_a_unit_vector_in_the_same_direction() -> None:
    assert l2_normalise([3.0, 4.0]) == [0.6, 0.8]
    out = l2_normalise([1e-20, -2e-20, 2e-20])
    assert math.isclose(math.hypot(*out), 1.0) and out[1] < 0 < out[0]


@pytest.mark.parametrize("vector", [[0.0, 0.0], [], [math.inf, 1.0], [math.nan, 1.0]])
def test_l2_normalise_refuses_zero_and_non_finite_vectors(vector: list[float]) -> None:
    with pytest.raises(ValueError, match="zero or non-finite"):
        l2_normalise(vector)


def test_a_unit_vector_is_sane_also_after_float32_rounding() -> None:
    unit = l2_normalise([float(i % 7) - 3 for i in range(3072)])
    assert cached_vector_problem(unit, 3072) is None
    assert cached_vector_problem(list(array("f", unit)), 3072) is None


@pytest.mark.parametrize(("vector", "dimension", "problem"), [
    ([0.6, 0.8], 3, "2 dimensions, the model has 3"),
    ([0.6, 0.8, 0.0, 0.0], 3, "4 dimensions, the model has 3"),
    ([math.nan, 0.0], 2, "holds NaN or infinite values"),
    ([math.inf, 0.0], 2, "holds NaN or infinite values"),
    ([1e308, 1e308], 2, "norm 1.41421e+308, not a unit vector (1 ± 0.01)"),  # hypot scales: no overflow to inf
    (["0.6", "0.8"], 2, "not a list of numbers"),
    ([None, 1.0], 2, "not a list of numbers"),
    ([0.0, 0.0], 2, "norm 0, not a unit vector (1 ± 0.01)"),
    ([6.0, 8.0], 2, "norm 10, not a unit vector (1 ± 0.01)"),
])
def test_insane_cached_vectors_are_named(vector: list[float], dimension: int, problem: str) -> None:
    assert cached_vector_problem(vector, dimension) == problem


def test_the_norm_tolerance_is_one_percent() -> None:
    assert NORM_TOLERANCE == 0.01
    assert cached_vector_problem([1.0 + NORM_TOLERANCE * 0.99, 0.0], 2) is None
    assert cached_vector_problem([1.0 - NORM_TOLERANCE * 0.99, 0.0], 2) is None
    assert cached_vector_problem([1.0 + NORM_TOLERANCE * 1.01, 0.0], 2) == "norm 1.0101, not a unit vector (1 ± 0.01)"
