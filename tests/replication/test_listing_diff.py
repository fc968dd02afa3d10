"""The merge-join of two key-ordered listings (pure logic: no server needed), checked against a set-based
oracle on random listings, plus its memory bound on a long stream."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drtool.core.listing_diff import DiffCounts, Entry, OrderError, bad_fraction_upper_bound, diff_listings
from drtool.core.replication_verdict.bucket_config import BucketConfig, bucket_config_reasons
from drtool.core.replication_verdict.verdict import Level

OLD = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)

_entry = st.builds(
    lambda key, vid, etag, size: Entry(key, vid, etag, size, OLD),
    st.sampled_from(["a", "a/b", "b", "é", "z", "zz", "Ä", "k1", "k10", "k2"]),
    st.sampled_from(["v1", "v2", "v3"]),
    st.sampled_from(["e1", "e2"]),
    st.integers(0, 2),
)


def _sorted(entries: list[Entry]) -> list[Entry]:
    unique = {(e.key, e.version_id): e for e in entries}
    return sorted(unique.values(), key=lambda e: e.key)


@settings(max_examples=300, deadline=None)
@given(st.lists(_entry, max_size=30), st.lists(_entry, max_size=30))
def test_versions_mode_matches_a_set_oracle(source: list[Entry], target: list[Entry]) -> None:
    src, dst = _sorted(source), _sorted(target)
    counts = DiffCounts()
    diffs = list(diff_listings(src, dst, mode="versions", counts=counts))
    a = {(e.key, e.version_id): e for e in src}
    b = {(e.key, e.version_id): e for e in dst}
    expected_missing = set(a) - set(b)
    expected_extra = set(b) - set(a)
    expected_mismatch = {k for k in set(a) & set(b) if (a[k].etag, a[k].size) != (b[k].etag, b[k].size)}
    got = {kind: {(d.key, (d.source or d.target).version_id) for d in diffs if d.kind == kind}  # type: ignore[union-attr]
           for kind in ("missing", "extra", "mismatch")}
    assert got == {"missing": expected_missing, "extra": expected_extra, "mismatch": expected_mismatch}
    assert counts.matched == len(set(a) & set(b)) - len(expected_mismatch)
    assert (counts.source_entries, counts.target_entries) == (len(src), len(dst))


def test_out_of_order_input_is_refused() -> None:
    src = [Entry("b", None, "e", 1, OLD), Entry("a", None, "e", 1, OLD)]
    with pytest.raises(OrderError, match="not in key order"):
        list(diff_listings(src, [], mode="latest"))


def test_settle_window() -> None:
    young = NOW - timedelta(seconds=10)
    src = [Entry("new", None, "e", 1, young), Entry("old", None, "e", 1, OLD)]
    counts = DiffCounts()
    diffs = list(diff_listings(src, [], mode="latest", settle_before=NOW - timedelta(minutes=2), counts=counts))
    assert [(d.key, d.settled) for d in diffs] == [("new", False), ("old", True)]
    assert (counts.missing, counts.unsettled) == (1, 1)


def test_latest_mode_delete_marker_and_version_id() -> None:
    src = [Entry("gone", "v2", None, 0, OLD, is_delete_marker=True, is_latest=True),
           Entry("gone", "v1", "e", 3, OLD, is_latest=False),
           Entry("same", "v9", "e", 3, OLD)]
    dst = [Entry("same", "v8", "e", 3, OLD)]
    assert [(d.kind, d.fields) for d in diff_listings(src, dst, mode="latest")] == [("mismatch", ("version_id",))]
    assert list(diff_listings(src, dst, mode="latest", check_version_id=False)) == []


def test_etag_quotes_and_case_are_ignored() -> None:
    assert list(diff_listings([Entry("k", None, '"ABC"', 1, OLD)], [Entry("k", None, "abc", 1, OLD)],
                              mode="latest")) == []


def _stream(n: int, skip_every: int) -> Iterator[Entry]:
    for i in range(n):
        if i % skip_every != skip_every - 1:
            yield Entry(f"datasets/{i:09d}", f"v{i}", "etag", 10, OLD)


def test_memory_stays_flat_on_a_long_stream() -> None:
    """200k entries per side, lazily generated: the join holds one key at a time, not the listing."""
    tracemalloc.start()
    counts = DiffCounts()
    missing = sum(1 for _ in diff_listings(_stream(200_000, 10**9), _stream(200_000, 1000), counts=counts))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert missing == counts.missing == 200
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"


# --- bucket configuration (shapes as boto3 returns them from MinIO, see test_status_minio for the live check) --

PEER = "994b6dc3-1cd4-49dc-ae63-917d3cafae56"


def _rule(peer: str, status: str = "Enabled") -> dict[str, object]:
    return {"ID": f"site-repl-{peer}", "Status": status,
            "Destination": {"Bucket": f"arn:minio:replication::{peer}:docs"}}


def test_bucket_config_ok_and_faults() -> None:
    ok = BucketConfig("A", "docs", "Enabled", [_rule(PEER)], peers={PEER: "B"})
    assert bucket_config_reasons(ok) == []
    bad = BucketConfig("A", "docs", "Suspended", [_rule(PEER, "Disabled")], peers={PEER: "B"},
                       lifecycle_rules=[{"ID": "trim", "Status": "Enabled",
                                         "NoncurrentVersionExpiration": {"NoncurrentDays": 7}}])
    found = bucket_config_reasons(bad)
    assert {(r.site, r.entity) for r in found} == {("A", "docs")}
    reasons = {(r.level, r.code) for r in found}
    assert reasons == {(Level.CRITICAL, "versioning_off"), (Level.CRITICAL, "replication_rule_missing"),
                       (Level.WARNING, "noncurrent_expiry")}
    twice = BucketConfig("A", "docs", "Enabled", [_rule(PEER), _rule(PEER)], peers={PEER: "B"})
    assert [r.code for r in bucket_config_reasons(twice)] == ["replication_rule_duplicate"]


def test_sample_upper_bound() -> None:
    assert 0.003 < bad_fraction_upper_bound(0, 1000) < 0.004  # about the "rule of three"
    assert bad_fraction_upper_bound(10, 100) > 0.1 > bad_fraction_upper_bound(0, 100)
    assert bad_fraction_upper_bound(0, 0) == 1.0
