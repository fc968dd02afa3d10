"""`drtool replication verify`: prove the bytes arrived, by comparing what two S3 endpoints hold.

Both sides are listed at the same time, each by a background thread that stays at most a few pages ahead, and
the two key-ordered streams are merge-joined (drtool/core/listing_diff.py): memory does not grow with the bucket,
and wall time is close to listing the larger side alone. `--sample N` checks N random objects of the source
with HEAD requests on the target instead of listing it, for a quick look at a huge bucket.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3_adapter
from drtool.config import Settings
from drtool.core.listing_diff import DiffCounts, Difference, Entry, bad_fraction_upper_bound, diff_listings
from drtool.core.metrics import Metric
from drtool.core.ports import ObjectStore
from drtool.errors import DrtoolError, KeyRefusedError, NotFound, NotFoundError, Unreachable
from drtool.ops.replication.deadline import Progress
from drtool.ops.replication.read_data import ReadDataResult, read_subset
from drtool.ops.replication.sites import Site, site_client, site_error, tls_verify

PROGRESS_EVERY = 1000  # source entries between two progress reports inside a bucket (a report costs a dict)

log = logging.getLogger("drtool.replication")

_PREFETCH_PAGES = 4  # pages buffered per side: bounds memory at ~4,000 entries each


@dataclass
class BucketResult:
    bucket: str
    mode: str
    counts: DiffCounts = field(default_factory=DiffCounts)
    examples: list[Difference] = field(default_factory=list)
    replication_status: dict[str, str | None] = field(default_factory=dict)  # "key@version" -> header value
    problem: str | None = None  # bucket-level finding (missing on a side)
    sampled: int | None = None
    # Sampled objects the target answered for without proving it holds them itself (see sample_bucket).
    unproven: int = 0
    unproven_examples: list[dict[str, Any]] = field(default_factory=list)
    read_data: ReadDataResult | None = None

    @property
    def sound(self) -> bool:
        """A sample's estimate means something only when every sampled answer came from the target itself."""
        return self.unproven == 0

    @property
    def failed(self) -> bool:
        return (self.problem is not None or self.counts.missing > 0 or self.counts.mismatch > 0
                or self.unproven > 0 or (self.read_data is not None and self.read_data.failed))

    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "bucket": self.bucket, "mode": self.mode, "problem": self.problem, "sampled": self.sampled,
            "source_entries": c.source_entries, "target_entries": c.target_entries, "matched": c.matched,
            "missing": c.missing, "extra": c.extra, "mismatch": c.mismatch, "unsettled": c.unsettled,
            "unsettled_by_kind": dict(c.by_kind_unsettled),
            "unproven": self.unproven, "unproven_examples": list(self.unproven_examples),
            "sample_sound": self.sound if self.sampled is not None else None,
            "bad_fraction_upper_bound_95": (bad_fraction_upper_bound(c.missing + c.mismatch, self.sampled)
                                            if self.sampled is not None and self.sound else None),
            "read_data": self.read_data.to_dict() if self.read_data is not None else None,
            "examples": [dict(d.to_dict(), replication_status=self.replication_status.get(_ref(d)))
                         for d in self.examples],
        }


@dataclass
class VerifyReport:
    source: Site
    target: Site
    settle_seconds: int
    buckets: list[BucketResult]

    @property
    def exit_code(self) -> int:
        if any(b.failed for b in self.buckets):
            return 4
        if any(b.counts.extra for b in self.buckets):
            return 3
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"event": "result", "source": self.source.alias, "target": self.target.alias,
                "settle_seconds": self.settle_seconds, "exit_code": self.exit_code,
                "buckets": [b.to_dict() for b in self.buckets]}


def _ref(diff: Difference) -> str:
    entry = diff.source or diff.target
    vid = entry.version_id if entry else None
    return f"{diff.key}@{vid}" if vid else diff.key


def _to_entry(item: dict[str, Any]) -> Entry:
    return Entry(key=item["Key"], version_id=item.get("VersionId"), etag=item.get("ETag"),
                 size=int(item.get("Size") or 0), last_modified=item["LastModified"],
                 is_delete_marker=bool(item.get("IsDeleteMarker")), is_latest=bool(item.get("IsLatest", True)))


_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(pages: Callable[[], Iterator[list[dict[str, Any]]]], *, what: str, endpoint: str,
               site: Site | None = None) -> Iterator[Entry]:
    """Entries of a listing produced by a background thread a few pages ahead, so both sides list at once."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=_PREFETCH_PAGES)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages():
                if not put([_to_entry(item) for item in page]):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it in the main thread
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name=f"list {what}", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                if isinstance(item.exc, DrtoolError):
                    raise item.exc
                if site is not None:
                    raise site_error(item.exc, site, what) from None
                raise s3_adapter.translate_error(item.exc, what=what, endpoint=endpoint) from None  # type: ignore[arg-type]
            yield from item  # type: ignore[misc]
    finally:
        stop.set()


def _store(client: Any, bucket: str) -> ObjectStore:
    """One site's bucket as the ObjectStore port, on that site's client (keys whole)."""
    return wiring.bucket_over(client, bucket)


def _versioning(client: Any, bucket: str, site: Site) -> str | None:
    try:
        status = _store(client, bucket).versioning()
    except NotFound:
        raise NotFoundError(f"bucket {bucket} does not exist", system=f"site {site.alias}") from None
    except Exception as exc:
        raise site_error(exc, site, f"bucket {bucket}") from None
    return None if status == "Unversioned" else status


def _replication_header(client: Any, bucket: str, entry: Entry) -> str | None:
    """x-amz-replication-status of one source version: PENDING, COMPLETED, FAILED, REPLICA, or None."""
    version = entry.version_id if entry.version_id and entry.version_id != "null" else None
    try:
        head = _store(client, bucket).head(entry.key, version_id=version)
    except Unreachable:
        raise
    except DrtoolError:
        return None  # a version refused or failing since the listing: nothing to report
    return None if head is None else head.get("ReplicationStatus")  # None: a delete marker or gone since


def verify(settings: Settings, source: Site, target: Site, buckets: Sequence[str], *, prefix: str = "",
           mode: str = "auto", settle_seconds: int = 120, examples: int = 10, sample: int | None = None,
           check_version_id: bool | None = None, on_difference: Callable[[str, Difference], None] | None = None,
           seed: int | None = None, read_data: float | None = None, max_rate: float | None = None,
           progress: Progress | None = None,
           emit: Callable[[dict[str, Any]], None] | None = None) -> VerifyReport:
    """Compare each bucket on both sites; `on_difference` sees every difference (for --json streaming); `emit`
    hears a `progress` event with the source entries compared so far (every PROGRESS_EVERY and after each bucket)
    for the progress display (drtool/cli/progress.py).

    `read_data` (percent) also downloads that reproducible subset of versions from both sites
    (read_data.py).
    """
    src = site_client(settings, source)
    dst = s3_adapter.no_proxy(site_client(settings, target))
    progress = progress or Progress()
    progress.plan(f"bucket {b}" for b in buckets)
    tls = tls_verify(settings)
    timeout = float(settings.replication.timeout) * 4  # a page of 1,000 versions can take a while on a busy site
    results: list[BucketResult] = []
    compared = 0  # source entries (versions, or latest objects) compared in the buckets finished

    def report(in_bucket: int = 0) -> None:
        if emit is not None:
            emit({"event": "progress", "task": "replication verify", "unit": "objects compared",
                  "done": compared + in_bucket, "total": None, "also": {"buckets": len(results)}})

    def counting(entries: Iterator[Entry]) -> Iterator[Entry]:
        for n, entry in enumerate(entries, start=1):
            if n % PROGRESS_EVERY == 0:
                report(n)
            yield entry

    for bucket in buckets:
        settle_before = datetime.now(UTC) - timedelta(seconds=settle_seconds)
        src_versioning = _versioning(src, bucket, source)
        try:
            dst_versioning = _versioning(dst, bucket, target)
        except NotFoundError:
            results.append(BucketResult(bucket, mode, problem=f"bucket {bucket} is missing on site {target.alias}"))
            continue
        both_versioned = src_versioning is not None and dst_versioning is not None
        chosen = ("versions" if both_versioned else "latest") if mode == "auto" else mode
        compare_vids = both_versioned if check_version_id is None else check_version_id
        result = BucketResult(bucket, chosen)
        if sample:
            sample_bucket(src, dst, source, target, bucket, prefix, chosen, settle_before, sample, result,
                    compare_vids, on_difference, seed, examples, tls, timeout)
        else:
            versions = chosen == "versions"
            src_entries = prefetched(
                lambda b=bucket, v=versions: s3_adapter.iter_listing_pages_fast(src, b, prefix, versions=v,
                                                                               verify=tls, timeout=timeout),
                what=f"site {source.alias}: listing bucket {bucket}", endpoint=source.endpoint, site=source)
            dst_entries = prefetched(
                lambda b=bucket, v=versions: s3_adapter.iter_listing_pages_fast(dst, b, prefix, versions=v,
                                                                               verify=tls, timeout=timeout),
                what=f"site {target.alias}: listing bucket {bucket}", endpoint=target.endpoint, site=target)
            for diff in diff_listings(counting(src_entries), dst_entries, mode=chosen,  # type: ignore[arg-type]
                                      settle_before=settle_before, check_version_id=compare_vids,
                                      counts=result.counts):
                if on_difference is not None:
                    on_difference(bucket, diff)
                if diff.settled and len(result.examples) < examples:
                    result.examples.append(diff)
        for diff in result.examples:
            if diff.source is not None and not diff.source.is_delete_marker:
                result.replication_status[_ref(diff)] = _replication_header(src, bucket, diff.source)
        if read_data:
            result.read_data = read_subset(src, dst, source, target, bucket, prefix, chosen, settle_before,
                                           percent=read_data, seed=seed, max_rate=max_rate, tls=tls, timeout=timeout,
                                           examples=examples)
        progress.done(f"bucket {bucket}")
        results.append(result)
        compared += result.counts.source_entries
        report()
    return VerifyReport(source, target, settle_seconds, results)


def sample_bucket(src: Any, dst: Any, source: Site, target: Site, bucket: str, prefix: str, mode: str,
                  settle_before: datetime, size: int, result: BucketResult, compare_vids: bool,
                  on_difference: Callable[[str, Difference], None] | None, seed: int | None, examples: int,
                  tls: bool | str, timeout: float) -> None:
    """Reservoir-sample `size` settled source objects, then HEAD each on the target (concurrently).

    Under MinIO site replication a site that lacks an object forwards the HEAD to its peer and answers 200 with
    the peer's data, so a plain HEAD proves nothing. `dst` sends MinIO's proxy header, which turns forwarding
    off, and every answer's `x-amz-replication-status` is read as well: REPLICA proves a copy made by
    replication; PENDING/COMPLETED/FAILED on the target is only genuine when the object was written there
    (the source then calls it REPLICA); anything else is counted as unproven, and the sample's estimate is
    not reported.
    """
    rng = random.Random(seed)
    reservoir: list[Entry] = []
    seen = 0
    counts = result.counts
    try:
        for page in s3_adapter.iter_listing_pages_fast(src, bucket, prefix, versions=mode == "versions",
                                                       verify=tls, timeout=timeout):
            for item in page:
                entry = _to_entry(item)
                counts.source_entries += 1
                if entry.is_delete_marker or (mode == "latest" and not entry.is_latest):
                    continue
                if entry.last_modified > settle_before:
                    counts.unsettled += 1
                    continue
                seen += 1
                if len(reservoir) < size:
                    reservoir.append(entry)
                else:
                    j = rng.randrange(seen)
                    if j < size:
                        reservoir[j] = entry
    except Exception as exc:
        raise site_error(exc, source, f"listing bucket {bucket}") from None

    target_store = _store(dst, bucket)

    def check(entry: Entry) -> Difference | None:
        version = entry.version_id if mode == "versions" and entry.version_id and entry.version_id != "null" \
            else None
        try:
            head = target_store.head(entry.key, version_id=version)
        except KeyRefusedError:  # HTTP 400 for this key
            head = None
        if head is None:
            return Difference("missing", entry.key, entry, None)
        state = head.get("ReplicationStatus")
        if state is not None and state != "REPLICA":
            origin = _replication_header(src, bucket, entry)
            if origin != "REPLICA":  # not written on the target either: this answer may be the source's own
                with lock:
                    result.unproven += 1
                    if len(result.unproven_examples) < examples:
                        result.unproven_examples.append({"key": entry.key, "version_id": entry.version_id,
                                                         "target_status": state, "source_status": origin})
                return None
        other = Entry(entry.key, head.get("VersionId"), head.get("ETag"), int(head.get("ContentLength") or 0),
                      head["LastModified"])
        fields = []
        if (entry.etag or "").strip('"') != (other.etag or "").strip('"'):
            fields.append("etag")
        if entry.size != other.size:
            fields.append("size")
        if compare_vids and mode == "latest" and (entry.version_id or "null") != (other.version_id or "null"):
            fields.append("version_id")
        if not fields:
            return None
        return Difference("mismatch", entry.key, entry, other, tuple(fields),
                          settled=other.last_modified <= settle_before)

    lock = threading.Lock()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(check, reservoir))
    except Exception as exc:
        raise site_error(exc, target, f"reading sampled objects in {bucket}") from None
    result.sampled = len(reservoir)
    counts.matched -= result.unproven  # unproven answers are neither matches nor differences
    for diff in outcomes:
        if diff is None:
            counts.matched += 1
            continue
        counts.add(diff)
        if on_difference is not None:
            on_difference(bucket, diff)
        if diff.settled and len(result.examples) < examples:
            result.examples.append(diff)


def default_buckets(settings: Settings, source: Site) -> list[str]:
    """s3.bucket when configured, else every bucket on the source site."""
    if settings.s3.bucket:
        return [settings.s3.bucket]
    try:
        return s3_adapter.list_bucket_names(site_client(settings, source))
    except Exception as exc:
        raise site_error(exc, source, "listing buckets") from None


def verify_metrics(report: VerifyReport) -> list[Metric]:
    """Prometheus gauges beyond the common four (drtool.cli.app): per bucket, the objects of each kind."""
    metrics: list[Metric] = []
    for b in report.buckets:
        labels = {"source": report.source.alias, "target": report.target.alias, "bucket": b.bucket}
        for kind in ("missing", "extra", "mismatch", "unsettled", "matched"):
            metrics.append(Metric(f"drtool_replication_verify_{kind}_objects", f"Objects {kind} in the last verify",
                                  float(getattr(b.counts, kind)), labels))
        if b.sampled is not None:
            metrics.append(Metric("drtool_replication_verify_unproven_objects", "Sampled objects the target answered "
                                  "for without proof it holds them", float(b.unproven), labels))
        if b.read_data is not None:
            for kind in ("unreadable", "differing", "read"):
                metrics.append(Metric(f"drtool_replication_verify_read_data_{kind}_versions",
                                      f"Versions {kind} by the last --read-data", float(getattr(b.read_data, kind)),
                                      labels))
    return metrics  # drtool.core.metrics.render groups each metric's samples (buckets interleave them here)
