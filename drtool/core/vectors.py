"""Small vector helpers shared by embedders, caches and verification."""

from __future__ import annotations

import math
from collections.abc import Sequence


def l2_normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("cannot normalise a zero or non-finite vector")
    return [x / norm for x in vector]
