"""Pure rules of the snapshot area: retention, key safety, version pinning, manifest format, lock staleness."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drtool.adapters.postgres import check_tool_not_older
from drtool.core import manifest as mf
from drtool.core.keys import (
    KeyPatterns,
    ReferenceIndex,
    UnsafeKey,
    check_key,
    check_snapshot_id,
    listing_prefixes,
)
from drtool.core.lock import LockInfo, Origin, holder_gone, stale_reason
from drtool.core.retention import Policy, decide
from drtool.errors import ConfigError

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _snaps(times: list[datetime]) -> list[tuple[str, datetime]]:
    return [(mf.new_snapshot_id(t), t) for t in times]


def test_keep_last() -> None:
    snaps = _snaps([T0 - timedelta(hours=h) for h in range(10)])
    d = decide(snaps, Policy(keep_last=3))
    assert list(d.keep) == [s for s, _ in snaps[:3]]
    assert d.remove == [s for s, _ in snaps[3:]]


def test_daily_keeps_newest_of_each_day() -> None:
    times = [T0 - timedelta(hours=6 * i) for i in range(16)]  # 4 per day over 4 days
    snaps = _snaps(times)
    d = decide(snaps, Policy(keep_daily=3))
    kept_days = sorted({t.date() for s, t in snaps if s in d.keep})
    assert len(kept_days) == 3 and len(d.keep) == 3
    for sid in d.keep:  # the kept one is the newest of its day
        day = dict(snaps)[sid].date()
        assert dict(snaps)[sid] == max(t for _, t in snaps if t.date() == day)


def test_weekly_and_monthly() -> None:
    times = [T0 - timedelta(days=d) for d in range(0, 120)]
    d = decide(_snaps(times), Policy(keep_weekly=4, keep_monthly=3))
    weekly = [r for rs in d.keep.values() for r in rs if r.startswith("weekly")]
    monthly = [r for rs in d.keep.values() for r in rs if r.startswith("monthly")]
    assert len(weekly) == 4 and len(monthly) == 3


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40, unique=True),
       st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))
def test_never_deletes_newest_and_partitions(hours: list[int], last: int, daily: int, weekly: int,
                                             monthly: int) -> None:
    snaps = [(f"s{h:05d}", T0 - timedelta(hours=h)) for h in hours]
    d = decide(snaps, Policy(last, daily, weekly, monthly))
    newest = max(snaps, key=lambda s: s[1])[0]
    assert newest in d.keep and newest not in d.remove
    assert set(d.keep) | set(d.remove) == {s for s, _ in snaps}
    assert not set(d.keep) & set(d.remove)


def test_policy_rejects_negative() -> None:
    with pytest.raises(ValueError):
        Policy(keep_last=-1)


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "a/./b", "tab\there", "nul\x00", "a\\b",
                                 "C:/x", "", "x" * 1025])
def test_unsafe_keys_refused(key: str) -> None:
    with pytest.raises(UnsafeKey):
        check_key(key)


@pytest.mark.parametrize("key", ["upload_files/t/a.pdf", "datasets/1/processed/chunks.jsonl", "a..b/c", "ü/é.txt"])
def test_safe_keys_pass(key: str) -> None:
    assert check_key(key) == key


def test_snapshot_id_form() -> None:
    sid = mf.new_snapshot_id(T0)
    assert check_snapshot_id(sid) == sid and mf.snapshot_time(sid) == T0
    with pytest.raises(UnsafeKey):
        check_snapshot_id("../20261129T120000Z-abcdef")


def test_patterns_star_is_one_segment() -> None:
    p = KeyPatterns.parse("privkeys/,datasets/*/processed/")
    assert p.match("privkeys/t/private.pem") == "privkeys/"
    assert p.match("datasets/abc/processed/chunks.jsonl") == "datasets/*/processed/"
    assert p.match("datasets/abc/raw/x.pdf") is None
    assert p.match("datasets/a/b/processed/x") is None


def test_reference_index_lookup_and_missing() -> None:
    with ReferenceIndex() as idx:
        idx.add_many([("a", "upload_files.key"), ("b", "tool_files.file_key"), ("a", "tool_files.file_key"),
                      ("a", "upload_files.key")])
        assert idx.count == 2
        assert idx.lookup("a") == ("upload_files.key", "tool_files.file_key")
        assert idx.lookup("zz") is None
        idx.mark_found(["a"])
        assert [r.key for r in idx.missing()] == ["b"]


def _v(key: str, vid: str, minutes: int, *, latest: bool = False, marker: bool = False) -> mf.ObjectVersion:
    return mf.ObjectVersion(key=key, version_id=vid, last_modified=T0 + timedelta(minutes=minutes),
                            is_latest=latest, is_delete_marker=marker, etag=None if marker else "e" + vid, size=1)


def test_pick_versions_at_fence() -> None:
    listing = [
        _v("a", "a3", 5, latest=True), _v("a", "a2", -1), _v("a", "a1", -5),  # overwritten after the fence
        _v("b", "bdm", -2, latest=True, marker=True), _v("b", "b1", -9),  # deleted before the fence
        _v("c", "c1", 3, latest=True),  # created after the fence
        _v("d", "ddm", 2, latest=True, marker=True), _v("d", "d1", -3),  # deleted after the fence
        _v("e", "e1", -7), _v("e", "e2", -1, latest=True),  # order inside a key is not trusted
    ]
    got = {k: (v.version_id if v else None, later) for k, v, later in mf.pick_versions(listing, T0)}
    assert got == {"a": ("a2", True), "b": (None, False), "c": (None, True), "d": ("d1", True), "e": ("e2", False)}


def test_manifest_roundtrip_and_corruption() -> None:
    buf = io.BytesIO()
    w = mf.ManifestWriter(buf)
    recs = [mf.ManifestRecord.pinned(_v(f"k{i}", f"v{i}", -1), ["upload_files.key"]) for i in range(1000)]
    recs.append(mf.ManifestRecord(key="gone", state=mf.STATE_DANGLING, referenced_by=["upload_files.key"]))
    for r in recs:
        w.write(r)
    w.close()
    assert w.counts == {"pinned": 1000, "dangling": 1}
    buf.seek(0)
    assert list(mf.read_manifest(buf)) == recs
    with pytest.raises(ValueError, match="zstd"):
        list(mf.read_manifest(io.BytesIO(b"not zstd at all")))


def test_sums_format_is_sha256sum_compatible() -> None:
    sums = {"db.dump": "a" * 64, "meta.json": "b" * 64}
    data = mf.format_sums(sums)
    assert data == f"{'a' * 64}  db.dump\n{'b' * 64}  meta.json\n".encode()
    assert mf.parse_sums(data) == sums
    with pytest.raises(ValueError):
        mf.parse_sums(b"zz  ../evil\n")


def test_lock_staleness() -> None:
    a, b = Origin("host-a", "boot-1", "pid:[1]"), Origin("host-b", "boot-2", "pid:[2]")
    lock = LockInfo.new("snapshot create", "host-a", 4242, now=T0, boot_id="boot-1", pid_ns="pid:[1]")
    assert LockInfo.from_bytes(lock.to_bytes()) == lock
    alive = stale_reason(lock, now=T0 + timedelta(minutes=5), here=a, holder_alive=lambda lk: True,
                         stale_after_s=3600)
    assert alive is None
    dead = stale_reason(lock, now=T0, here=a, holder_alive=lambda lk: False, stale_after_s=3600)
    assert dead and "4242" in dead
    other_host = stale_reason(lock, now=T0 + timedelta(hours=2), here=b, holder_alive=lambda lk: False,
                              stale_after_s=3600)
    assert other_host and "lock_stale_after" in other_host
    assert stale_reason(lock, now=T0, here=b, holder_alive=lambda lk: False, stale_after_s=3600) is None
    # Only a dead holder on this host is provably dead (taken over automatically); age alone is a presumption.
    assert holder_gone(lock, here=a, holder_alive=lambda lk: False) == "process 4242 no longer runs on this host"
    assert holder_gone(lock, here=a, holder_alive=lambda lk: True) is None
    assert holder_gone(lock, here=b, holder_alive=lambda lk: False) is None
    unreadable = LockInfo.from_bytes(b"not json")
    for hostile in (b"[" * 100_000, b"[]", b'{"holder": {"x": 1}}'):  # nesting, wrong shape: no crash, no takeover
        assert LockInfo.from_bytes(hostile).host == "unknown"
    assert unreadable.pid == 0 and holder_gone(unreadable, here=Origin("unknown", "boot-1", "pid:[1]"),
                                               holder_alive=lambda lk: False) is None
    reused = LockInfo.new("snapshot create", "host-a", 4242, now=T0, proc_start="1000")
    assert LockInfo.from_bytes(reused.to_bytes()).proc_start == "1000"


def test_pg_dump_older_than_server_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as err:
        check_tool_not_older("pg_dump", 15, "pg_dump (PostgreSQL) 15.14", 16, "16.4")
    assert "PostgreSQL 15" in str(err.value) and "16.4" in str(err.value)
    check_tool_not_older("pg_dump", 16, "pg_dump (PostgreSQL) 16.4", 15, "15.14")


def test_listing_prefixes_cover_every_reference() -> None:
    with ReferenceIndex() as idx:
        idx.add_many([("root/upload_files/t/a", "u"), ("root/tools/t/b", "t"), ("root/upload_files/t/c", "u")])
        assert idx.first_segments("root/") == {"upload_files/", "tools/"}
        idx.add_many([("root/flat.txt", "u")])
        assert "" in idx.first_segments("root/")
    assert listing_prefixes(["upload_files/", "datasets/", "datasets/x/", "tools/"]) == [
        "datasets/", "tools/", "upload_files/"]
    assert listing_prefixes(["upload_files/", ""]) == [""]
    assert listing_prefixes([]) == []


def test_latest_of_two_snapshots_taken_in_one_second_is_the_later_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids tell the second only (and a random tail): cron's run and a manual one in the same second must not make
    `latest` a coin toss. The one whose id sorts first here was taken first."""
    from drtool.ops.snapshot import catalog as cat

    first = cat.SnapshotInfo("20261207T051500Z-ffffff", {}, {"fence": "2026-12-07T05:15:00.100000+00:00"}, None)
    last = cat.SnapshotInfo("20261207T051500Z-000000", {}, {"fence": "2026-12-07T05:15:00.900000+00:00"}, None)
    older = cat.SnapshotInfo("20261207T051459Z-999999", {}, {"fence": "2026-12-07T05:14:59.500000+00:00"}, None)
    infos = {i.id: i for i in (first, last, older)}
    monkeypatch.setattr(cat, "folder_ids", lambda dest: sorted(infos))
    monkeypatch.setattr(cat, "load", lambda dest, sid: infos[sid])
    assert [i.id for i in cat.list_snapshots(None)] == [last.id, first.id, older.id]  # type: ignore[arg-type]
    assert cat.resolve(None, "latest").id == last.id  # type: ignore[arg-type]
