"""Small vector helpers shared by embedders, caches and verification."""

from __future__ import annotations

import math
from collections.abc import Sequence


def l2_normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("cannot normalise a zero or non-finite vector")
    return [x / norm for x in vector]


# Every vector a cache may hold is L2-normalised: Dify's CacheEmbedding divides by the norm before it pickles a
# vector into `embeddings`, and drtool's embedders (so its sidecar) return unit vectors. Float32 storage moves the
# norm by about 1e-7 * sqrt(dimension); 1% leaves room for that and for other writers' rounding, while a planted
# vector of norm 10 or 1e30 (which would top every inner-product search in Dify's IP-metric index) is refused.
NORM_TOLERANCE = 0.01


def cached_vector_problem(vector: Sequence[float], dimension: int) -> str | None:
    """Why a vector read from a cache must not be indexed (then it is re-embedded), or None when it is sane."""
    if len(vector) != dimension:
        return f"{len(vector)} dimensions, the model has {dimension}"
    try:
        norm = math.hypot(*vector)  # in C: fast for 3072 floats; inf when any element is inf, nan when one is nan
    except TypeError:
        return "not a list of numbers"
    if not math.isfinite(norm):
        return "holds NaN or infinite values"
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return f"norm {norm:.6g}, not a unit vector (1 ± {NORM_TOLERANCE})"
    return None
