"""A Dify-like writer for load tests and the load benchmark (bench/load): uploads, in-place overwrites and deletes
against one Postgres database with Dify's tables and one versioned bucket, at a steady rate or flat out.

Each operation follows Dify's order, which is what makes a consistent snapshot possible at all:
- upload: put the object, then insert its upload_files row (with the sha3-256 of the bytes in `hash`);
- overwrite: put new bytes at a key Dify rewrites in place (a dataset's processed chunks, the tenant's key);
- delete: delete a row the writer uploaded, then its object.
Every operation is recorded with the database clock just before it started and just after it finished, so a test
can tell on which side of a snapshot's fence it happened.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg


@dataclass
class Op:
    kind: str  # upload | overwrite | delete
    key: str
    row_id: str | None
    digest: str | None  # sha3-256 of the bytes written (uploads, overwrites)
    before: datetime | None  # database clock before the operation (None when the writer runs without clocks)
    after: datetime | None  # database clock after it completed
    done: float  # time.monotonic() when it completed
    seconds: float  # how long it took


@dataclass
class Writer:
    """One writer thread. `rate` operations per second (None: as fast as it can); `clocks` brackets every
    operation with the database clock (two extra queries: tests need them, the benchmark can turn them off)."""

    client: Any
    bucket: str
    dsn: str
    tenant_id: str
    overwrite_keys: list[str]
    rate: float | None = None
    clocks: bool = True
    seed: int = 0
    body_bytes: int = 2048
    ops: list[Op] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.seed}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _body(self, label: str, rng: random.Random) -> bytes:
        head = f"{label} {uuid.uuid4()}\n".encode()
        return head + rng.randbytes(max(0, self.body_bytes - len(head)))

    def _run(self) -> None:
        rng = random.Random(self.seed)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                creator = conn.execute("SELECT created_by FROM upload_files LIMIT 1").fetchone()
                creator_id = creator[0] if creator else uuid.uuid4()
                mine: list[tuple[str, str]] = []  # (row id, key) uploaded by this writer and not deleted yet
                clock = (lambda: conn.execute("SELECT clock_timestamp()").fetchone()[0]) if self.clocks else (
                    lambda: None)
                interval = 1.0 / self.rate if self.rate else 0.0
                next_at = time.monotonic()
                i = 0
                while not self._stop.is_set():
                    if interval:
                        next_at += interval
                        delay = next_at - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    i += 1
                    roll = rng.random()
                    kind = "upload" if roll < 0.5 or not mine else "overwrite" if roll < 0.8 else "delete"
                    t0 = time.monotonic()
                    before = clock()
                    if kind == "upload":
                        row_id = str(uuid.uuid4())
                        key = f"upload_files/{self.tenant_id}/{row_id}.txt"
                        body = self._body(f"upload {self.seed}/{i} row {row_id}", rng)
                        digest = hashlib.sha3_256(body).hexdigest()
                        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
                        conn.execute(
                            "INSERT INTO upload_files (id, tenant_id, storage_type, key, name, size, extension,"
                            " created_by, hash) VALUES (%s, %s, 's3', %s, 'load.txt', %s, 'txt', %s, %s)",
                            (row_id, self.tenant_id, key, len(body), creator_id, digest))
                        mine.append((row_id, key))
                        op = Op("upload", key, row_id, digest, before, None, 0, 0)
                    elif kind == "delete":
                        row_id, key = mine.pop(rng.randrange(len(mine)))
                        conn.execute("DELETE FROM upload_files WHERE id = %s", (row_id,))
                        self.client.delete_object(Bucket=self.bucket, Key=key)
                        op = Op("delete", key, row_id, None, before, None, 0, 0)
                    else:
                        key = rng.choice(self.overwrite_keys)
                        body = self._body(f"overwrite {self.seed}/{i} of {key}", rng)
                        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
                        op = Op("overwrite", key, None, hashlib.sha3_256(body).hexdigest(), before, None, 0, 0)
                    op.after = clock()
                    op.done = time.monotonic()
                    op.seconds = op.done - t0
                    self.ops.append(op)
        except BaseException as exc:  # reported by the caller
            self.errors.append(exc)


def throughput(ops: list[Op], start: float, end: float) -> float:
    """Operations completed per second in [start, end) (monotonic clock)."""
    if end <= start:
        return 0.0
    return sum(1 for o in ops if start <= o.done < end) / (end - start)


def latencies(ops: list[Op], start: float, end: float) -> list[float]:
    return sorted(o.seconds for o in ops if start <= o.done < end)
