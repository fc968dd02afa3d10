"""How many embedding requests to keep in flight: an AIMD limit that follows the provider's capacity.

A remote embedding provider's capacity is rarely known to the operator: a gateway answers 429 beyond N concurrent
requests, a queueing server (vLLM, TEI) answers ever more slowly. A fixed `embedding.concurrency` either leaves
capacity unused or provokes a storm of retries. `AdaptiveLimit` is TCP's answer applied to requests: grow the
number in flight while answers come back at the usual speed (doubling per round trip at first, then one more per
round trip), shrink it multiplicatively on a 429 or when latency climbs well above the best seen. It is pure (no
threads, no clock) so that its rules are tested exactly; `ConcurrencyGate` applies it to threads and honours a
provider's Retry-After by admitting nothing new until it has passed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class AdaptiveLimit:
    """The number of requests allowed in flight, between `minimum` and `maximum` (the operator's hard ceiling).

    Every request carries the `epoch` current when it started; a signal from a request that started before the last
    decrease says nothing new (the 5 other 429s of the same burst), so one burst shrinks the limit once, not to 1.
    `backoff` is 0.85 rather than TCP's 0.5: against a gateway that refuses beyond N, halving leaves the sawtooth
    averaging ~0.75 N, while 0.85 keeps it above 0.9 N and still converges geometrically when several clients
    share the provider.
    """

    maximum: int
    initial: int = 4
    minimum: int = 1
    backoff: float = 0.85  # on a 429 (or 503): the provider said "too many"
    latency_backoff: float = 0.9  # on latency well above the baseline: a queue is forming
    latency_tolerance: float = 2.0  # "well above": smoothed latency over this multiple of the best recent one
    window: int = 200  # successes the latency baseline (their minimum) is taken over
    probe_slowdown: float = 4.0  # growth is this much slower where the last refusal happened
    limit: float = field(init=False)
    threshold: float = field(init=False)  # below it the limit doubles per round trip (slow start); above, +1
    epoch: int = field(default=0, init=False)
    overloads: int = field(default=0, init=False)
    decreases: int = field(default=0, init=False)
    peak: int = field(default=0, init=False)
    refused_at: int | None = field(default=None, init=False)  # the allowed count the last decrease happened at
    _samples: deque[float] = field(default_factory=deque, init=False, repr=False)
    _smoothed: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.maximum = max(1, self.maximum)
        self.minimum = max(1, min(self.minimum, self.maximum))
        self.limit = float(max(self.minimum, min(self.initial, self.maximum)))
        self.threshold = float(self.maximum)
        self.peak = self.allowed

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(self.minimum, min(self.maximum, math.floor(self.limit)))

    @property
    def baseline(self) -> float | None:
        """The best latency among the recent successes: what an unloaded provider answers in."""
        return min(self._samples) if self._samples else None

    def on_success(self, latency: float, epoch: int, *, saturated: bool = True) -> None:
        """An answer came back in `latency` seconds. `saturated`: the limit was binding (full, or others waiting).

        Without `saturated` the limit would grow without evidence while the caller sends fewer requests than
        allowed (a slow reader), and then release a burst far above what the provider was shown to bear.
        """
        self._samples.append(latency)
        if len(self._samples) > self.window:
            self._samples.popleft()
        self._smoothed = latency if self._smoothed is None else 0.8 * self._smoothed + 0.2 * latency
        base = self.baseline
        if (epoch == self.epoch and base is not None and len(self._samples) >= 10
                and self._smoothed > self.latency_tolerance * base):
            self._decrease(self.latency_backoff)
            self._smoothed = base * self.latency_tolerance  # judge the next ones afresh, not by the old queue
            return
        if not saturated:
            return
        step = 1.0 if self.limit < self.threshold else 1.0 / self.limit
        if self.refused_at is not None and self.allowed + 1 >= self.refused_at:
            # The next step is where the provider refused: probe it rarely (every few round trips), since each
            # probe costs a 429 and a Retry-After pause, and the level just below is the capacity.
            step /= self.probe_slowdown
        self.limit = min(self.limit + step, float(self.maximum))
        if self.refused_at is not None and self.allowed > self.refused_at:
            self.refused_at = None  # it bears more than when it refused: the capacity grew, grow normally
        self.peak = max(self.peak, self.allowed)

    def on_overload(self, epoch: int) -> None:
        """The provider refused a request for load (429/503): shrink once per burst."""
        self.overloads += 1
        if epoch == self.epoch:
            self._decrease(self.backoff)

    def _decrease(self, factor: float) -> None:
        self.refused_at = self.allowed
        self.limit = max(float(self.minimum), self.limit * factor)
        self.threshold = self.limit
        self.epoch += 1
        self.decreases += 1


class ConcurrencyGate:
    """Threads wait here for a slot; the slot count is `AdaptiveLimit.allowed` (or fixed when `limit` is None).

    `pause(seconds)` holds back every new request, as a provider's Retry-After asks of the client as a whole (the
    refused request itself also waits that long before its retry).
    """

    def __init__(self, limit: AdaptiveLimit | None, fixed: int = 1, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.controller = limit
        self._fixed = max(1, fixed)
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._waiting = 0
        self._paused_until = 0.0
        self.peak_in_flight = 0

    @property
    def allowed(self) -> int:
        return self.controller.allowed if self.controller is not None else self._fixed

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        with self._cond:
            while True:
                wait = self._paused_until - self._clock()
                if wait <= 0 and self._in_flight < self.allowed:
                    break
                self._waiting += 1
                try:
                    self._cond.wait(timeout=wait if wait > 0 else 1.0)
                finally:
                    self._waiting -= 1
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            if self._in_flight < self.allowed:
                self._cond.notify()  # more slots are free (the limit grew, a pause ended): wake the next waiter
            epoch = self.controller.epoch if self.controller is not None else 0
            token = Slot(epoch=epoch, started=self._clock())
        try:
            yield token
        finally:
            with self._cond:
                # The limit was binding if it is full or others wait for it: only then is growing it evidenced.
                saturated = self._waiting > 0 or self._in_flight >= self.allowed
                self._in_flight -= 1
                if self.controller is not None:
                    if token.outcome == "ok":
                        self.controller.on_success(self._clock() - token.started, token.epoch, saturated=saturated)
                    elif token.outcome == "overload":
                        self.controller.on_overload(token.epoch)
                if token.retry_after:
                    self._paused_until = max(self._paused_until, self._clock() + token.retry_after)
                self._cond.notify()  # one waiter per freed slot, which passes it on: no herd on 2 busy cores


@dataclass
class Slot:
    """One admitted request; the caller sets `outcome` ("ok", "overload" or "" for neither) and `retry_after`."""

    epoch: int
    started: float
    outcome: str = ""
    retry_after: float | None = None


def pipeline_unit(batch_size: int, workers: int, max_chunks: int, request_items: int) -> int:
    """Chunks per pipeline unit so that the units in flight (`workers` + 1: one per worker and one being stored)
    hold at most `max_chunks` chunks with their vectors.

    The number of units is what keeps every worker, hence every allowed request, busy, so it is not cut: the units
    shrink instead (a unit is one insert and one checkpoint, so smaller ones only cost more of those). A shrunk unit
    is a whole number of embedding requests (`request_items` texts each) while at least one fits. With the local
    model (one worker) 2 units of the default 512 fit the default budget and nothing changes; with 16 HTTP workers
    17 units of 512 would hold 8,704 chunks' vectors (~107 MiB at 384-d as Python floats, ~430 MiB at 1536-d).
    """
    units = max(1, workers) + 1
    unit = max(1, batch_size)
    fit = max(1, max_chunks // units)
    if unit <= fit:
        return unit
    request = max(1, request_items)
    return fit // request * request if fit >= request else fit

