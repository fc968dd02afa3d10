"""The bounded ordered pipeline and the rpm/tpm budget (pure logic; time is a parameter)."""

from __future__ import annotations

import threading
import time

import pytest

from drtool.core.pipeline import RateBudget, batched, ordered_map


def test_ordered_map_keeps_order_and_bounds_work_in_flight() -> None:
    live = 0
    peak = 0
    lock = threading.Lock()
    pulled = 0

    def source():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield i

    def work(i: int) -> int:
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        time.sleep(0.002 * (i % 5))  # finish out of order
        with lock:
            live -= 1
        return i * i

    seen = []
    for item, result in ordered_map(work, source(), workers=4, max_in_flight=6):
        assert pulled - item <= 6 + 1, "the source is not read ahead without bound"
        seen.append((item, result))
    assert seen == [(i, i * i) for i in range(40)]
    assert peak <= 4


def test_ordered_map_yields_everything_before_a_failure_then_raises() -> None:
    def work(i: int) -> int:
        if i == 7:
            raise ValueError("boom")
        return i

    got = []
    with pytest.raises(ValueError, match="boom"):
        for item, _ in ordered_map(work, range(20), workers=3):
            got.append(item)
    assert got == list(range(7))


def test_batched() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_rate_budget_waits_for_the_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    budget = RateBudget(rpm=3, tpm=1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        budget.acquire(tokens=100)
    assert slept == []
    budget.acquire(tokens=100)  # the 4th request of the minute waits for the first to leave the window
    assert slept and abs(now[0] - 60.0) < 1e-6
    tokens = RateBudget(rpm=0, tpm=500, clock=lambda: now[0], sleep=sleep)
    tokens.acquire(tokens=400)
    start = now[0]
    tokens.acquire(tokens=200)  # over the token budget: waits a window
    assert now[0] - start == pytest.approx(60.0)
    RateBudget(rpm=0, tpm=10, clock=lambda: now[0], sleep=sleep).acquire(tokens=10_000)  # alone, let through
