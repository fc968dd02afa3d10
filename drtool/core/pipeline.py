"""A bounded, ordered, streaming pipeline and a requests/tokens-per-minute budget.

Rebuild reads chunks lazily, batches them, runs the expensive stage (embedding) on a few worker threads and
consumes results in input order, so that a checkpoint can always say "everything up to line N is stored". At most
`max_in_flight` batches exist at once: memory does not grow with the size of the input.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, max_in_flight: int | None = None
                ) -> Iterator[tuple[T, R]]:
    """Apply `fn` on `workers` threads, yield (item, result) in input order, keep at most `max_in_flight` pending.

    The first exception stops submission and is raised once the results before it were yielded, so the consumer
    has stored everything that came before the failure (what makes a checkpoint exact).
    """
    limit = max(1, max_in_flight or workers * 2)
    pending: deque[tuple[T, Future[R]]] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="drtool-pipe") as pool:
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append((item, pool.submit(fn, item)))
                if not pending:
                    return
                item, future = pending.popleft()
                yield item, future.result()
        finally:
            for _item, future in pending:
                future.cancel()


class RateBudget:
    """Requests-per-minute and tokens-per-minute budgets shared by worker threads (0 means unlimited).

    A sliding 60-second window: `acquire` blocks until both the request and its token estimate fit. A single
    request bigger than the whole token budget is let through alone so it cannot block forever.
    """

    def __init__(self, rpm: int = 0, tpm: int = 0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._sleep = sleep
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, tokens: int = 0) -> None:
        if not self.rpm and not self.tpm:
            return
        while True:
            with self._lock:
                now = self._clock()
                while self._events and now - self._events[0][0] >= 60.0:
                    self._tokens -= self._events.popleft()[1]
                fits_rpm = not self.rpm or len(self._events) < self.rpm
                fits_tpm = not self.tpm or self._tokens + tokens <= self.tpm or not self._events
                if fits_rpm and fits_tpm:
                    self._events.append((now, tokens))
                    self._tokens += tokens
                    return
                wait = max(0.01, 60.0 - (now - self._events[0][0]))
            self.waited += wait
            self._sleep(wait)
