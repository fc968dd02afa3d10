"""Issue #18, on the real MinIO pair: checks that a forwarding site, an expired hourly counter, a rotten part
file or a frozen server cannot fool or hang.

- A sampled verify must not believe site B's HEAD when B forwards it to A (B lacks the object on disk).
- status reads each bucket's replication backlog: old failures are CRITICAL whatever the hourly counter says,
  and a healed outage is OK at once.
- verify --read-data reads the bytes on both sites and finds 64 corrupted bytes in a part file on B's disk.
- --deadline ends status, verify and probe on time while site B is frozen with SIGSTOP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drtool.ops.replication.read_data import selected
from tests.replication.conftest import CliRun, all_versions, keys, point_at_minio_pair, unique, wait_for
from tests.stack.ports import free_ports

pytestmark = pytest.mark.own_servers("minio_pair")  # it takes site B down and expects a pair-wide verdict


def _bucket_names(client: Any) -> set[str]:
    return {b["Name"] for b in client.list_buckets()["Buckets"]}


def _remove_bucket(pair: Any, bucket: str) -> None:
    """Delete every version on A, then the bucket; whatever B still holds is removed there directly."""
    for site in (pair.a, pair.b):
        client = site.s3_client()
        if bucket not in _bucket_names(client):
            continue
        for key, vid, _ in all_versions(client, bucket):
            client.delete_object(Bucket=bucket, Key=key, VersionId=vid)
        with contextlib.suppress(client.exceptions.ClientError):  # B's copy may be going away already
            client.delete_bucket(Bucket=bucket)


@pytest.fixture
def own_pair_replication_env(own_minio_pair: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """This module takes site B down and then expects a pair-wide verdict: it gets a pair of its own, since other
    modules' buckets on the shared pair heal at MinIO's pace and would decide that verdict. Returns that pair, with
    drtool's replication settings for it in the environment."""
    return point_at_minio_pair(own_minio_pair, monkeypatch, tmp_path)


@pytest.fixture
def replicated_bucket(own_pair_replication_env: Any) -> Iterator[tuple[str, Any, Any]]:
    """A bucket made on A and replicated to B (removed from both sites afterwards)."""
    bucket = unique("blind")
    a, b = own_pair_replication_env.a.s3_client(), own_pair_replication_env.b.s3_client()
    a.create_bucket(Bucket=bucket)
    wait_for(lambda: bucket in _bucket_names(b), 60, "the bucket to reach site B")
    try:
        yield bucket, a, b
    finally:
        _remove_bucket(own_pair_replication_env, bucket)


def _replicated(b: Any, bucket: str, count: int) -> None:
    wait_for(lambda: len(keys(b, bucket)) == count, 60, f"{count} objects on site B")


# --- 1. sampled verify and MinIO's forwarding -----------------------------------------------------------------

def test_sample_is_not_fooled_by_forwarding(drtool: Callable[..., CliRun], own_pair_replication_env: Any,
                                            replicated_bucket: tuple[str, Any, Any]) -> None:
    bucket, a, b = replicated_bucket
    for i in range(6):
        a.put_object(Bucket=bucket, Key=f"docs/{i}.txt", Body=f"document {i}".encode())
    _replicated(b, bucket, 6)
    # Lose the replica on B's disk: B's listing no longer has it, but a plain HEAD on B is forwarded to A.
    gone = own_pair_replication_env.b.data_dir / bucket / "docs" / "3.txt"
    assert (gone / "xl.meta").exists()
    for path in sorted(gone.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    gone.rmdir()
    head = b.head_object(Bucket=bucket, Key="docs/3.txt")
    assert head["ReplicationStatus"] == "COMPLETED"  # the blind spot: A's answer, relayed by B
    assert b.head_object(Bucket=bucket, Key="docs/2.txt")["ReplicationStatus"] == "REPLICA"

    res = drtool("replication", "verify", "--bucket", bucket, "--sample", "100", "--seed", "1", "--json")
    assert res.code == 4, res.out + res.err
    [summary] = res.event("result")["buckets"]
    assert (summary["sampled"], summary["missing"], summary["matched"], summary["unproven"]) == (6, 1, 5, 0)
    assert summary["sample_sound"] is True and summary["bad_fraction_upper_bound_95"] > 1 / 6
    assert [e["key"] for e in summary["examples"]] == ["docs/3.txt"]

    # Without MinIO's proxy header B relays A's answer; the replication status still gives it away: the sample is
    # unsound, no estimate, exit 4 (the ops function is called with a plain client on the real servers).
    plain = _sample_with(own_pair_replication_env, bucket, proxy_header=False)
    assert (plain.sampled, plain.counts.missing, plain.unproven) == (6, 0, 1)
    assert plain.unproven_examples[0]["key"] == "docs/3.txt"
    assert plain.unproven_examples[0]["target_status"] == "COMPLETED" and plain.failed and not plain.sound
    assert plain.to_dict()["bad_fraction_upper_bound_95"] is None

    # The other way round, every object on A was written there (COMPLETED) and is a REPLICA on B: genuine.
    back = drtool("replication", "verify", "--source", "B", "--target", "A", "--bucket", bucket, "--sample", "100",
                  "--json")
    [summary] = back.event("result")["buckets"]
    assert back.code == 0 and (summary["sampled"], summary["matched"], summary["unproven"]) == (5, 5, 0)
    assert summary["sample_sound"] is True


def _sample_with(pair: Any, bucket: str, *, proxy_header: bool) -> Any:
    from datetime import UTC, datetime

    from drtool.adapters.s3.client import no_proxy
    from drtool.config import load_settings
    from drtool.ops.replication.sites import Site, site_client
    from drtool.ops.replication.verify import BucketResult, sample_bucket

    settings = load_settings(environ={"DRTOOL_REPLICATION_ACCESS_KEY": pair.a.access_key,
                                      "DRTOOL_REPLICATION_SECRET_KEY": pair.a.secret_key})
    source, target = Site("A", pair.a.endpoint), Site("B", pair.b.endpoint)
    src, dst = site_client(settings, source), site_client(settings, target)
    if proxy_header:
        no_proxy(dst)
    result = BucketResult(bucket, "versions")
    sample_bucket(src, dst, source, target, bucket, "", "versions", datetime.now(UTC), 100, result, True, None, 1, 10,
            True, 30.0)
    return result


# --- 2. the replication backlog -------------------------------------------------------------------------------

# Two lines as the pinned MinIO streams them from replication/diff (captured from the pair), and a keep-alive.
_DIFF_LINES = [
    {"object": "down/0", "versionId": "450edf3a-c364-46e6-9d72-e10abb4489c5",
     "targets": {"arn:minio:replication::58a5:b": {"rStatus": "FAILED"}}, "rStatus": "FAILED",
     "replTimestamp": "2026-12-06T21:36:23.710692279Z", "lastModified": "2026-12-06T21:36:23.6602981Z",
     "deletemarker": False},
    {"object": "down/1", "versionId": "baf8cd57-f7dc-4a12-8aa3-7ab35c1acb1a",
     "targets": {"arn:minio:replication::58a5:b": {"rStatus": "PENDING"}}, "rStatus": "PENDING",
     "lastModified": "2026-12-06T21:40:00Z", "deletemarker": False},
]


def test_backlog_rules_on_minio_lines() -> None:
    from datetime import UTC, datetime

    from drtool.core.replication_verdict.backlog import Backlog, backlog_reasons, drop_healed_hourly_failures
    from drtool.core.replication_verdict.verdict import Level, Reason

    backlog = Backlog("A", "dify")
    for line in _DIFF_LINES:
        backlog.add(line)
    now = datetime(2026, 12, 6, 21, 41, 23, tzinfo=UTC)
    info = backlog.to_dict(now)
    assert (info["failed"], info["pending"]) == (1, 1)
    assert info["oldest_failed_age_seconds"] == pytest.approx(299.34, abs=0.01)
    assert info["oldest_pending_age_seconds"] == 83
    [critical] = backlog_reasons([backlog], now, 60)
    assert (critical.level, critical.code, critical.entity) == (Level.CRITICAL, "backlog_failed_old", "dify")
    [warning] = backlog_reasons([backlog], now, 3600)
    assert (warning.level, warning.code) == (Level.WARNING, "replication_backlog")
    assert backlog_reasons([Backlog("A", "empty")], now, 0) == []
    hourly = [Reason(Level.WARNING, "failures_last_hour", "A", "…"), Reason(Level.WARNING, "failures_last_hour",
                                                                          "B", "…")]
    assert [r.site for r in drop_healed_hourly_failures(hourly, {"A"})] == ["B"]


def test_backlog_makes_old_failures_critical_and_a_healed_outage_ok(drtool: Callable[..., CliRun],
                                                                    own_pair_replication_env: Any,
                                                                   replicated_bucket: tuple[str, Any, Any]) -> None:
    bucket, a, _ = replicated_bucket
    strict = ("--max-failed-last-hour", "0")
    own_pair_replication_env.b.stop()
    try:
        for i in range(50):
            a.put_object(Bucket=bucket, Key=f"outage/{i:02d}.txt", Body=b"written while B was down")

        def backlog(*extra: str) -> tuple[CliRun, dict[str, Any]]:
            run = drtool("replication", "status", "--json", "--site", f"A={own_pair_replication_env.a.endpoint}",
                         *strict, *extra)
            result = run.event("result")
            mine = [b for b in result["backlog"] if b["bucket"] == bucket and b["site"] == "A"]
            return run, (mine[0] if mine else {})

        wait_for(lambda: backlog()[1].get("failed") == 50, 60, "site A to list 50 failed versions")
        time.sleep(1.5)
        run, found = backlog("--max-failed-age", "1")
        assert run.code == 4
        assert found["failed"] == 50 and found["oldest_failed_age_seconds"] >= 1
        critical = [r for r in run.event("result")["reasons"] if r["code"] == "backlog_failed_old"]
        assert [(r["level"], r["site"], r["entity"]) for r in critical] == [("CRITICAL", "A", bucket)]
        assert "50 version(s)" in critical[0]["message"]

        run, found = backlog("--max-failed-age", "3600")
        reasons = run.event("result")["reasons"]
        assert "backlog_failed_old" not in {r["code"] for r in reasons}
        waiting = [r for r in reasons if r["code"] == "replication_backlog" and r["entity"] == bucket]
        assert [(r["level"], r["site"]) for r in waiting] == [("WARNING", "A")]
        human = drtool("replication", "status", "--site", f"A={own_pair_replication_env.a.endpoint}",
                       "--max-failed-age", "3600")
        assert f"backlog site A bucket {bucket}: 50 failed, 0 pending" in human.out
    finally:
        if not own_pair_replication_env.b.running():
            own_pair_replication_env.b.start()

    # B is back: once MinIO has retried, the backlog is empty and the verdict is OK at once, although MinIO's
    # hourly counter still holds the 50 failures.
    started = time.monotonic()
    runs: list[CliRun] = []

    def ok() -> bool:
        runs.append(drtool("replication", "status", "--json", *strict))
        return runs[-1].code == 0

    # MinIO retries failed versions at its own pace: about a minute on a quiet machine, longer on a loaded one.
    wait_for(ok, 420, "the verdict to be OK after B healed", interval=3)
    healed_after = time.monotonic() - started
    result = runs[-1].event("result")
    site_a = next(s for s in result["sites"] if s["alias"] == "A")
    failed = [m["failed"]["lastHour"]["count"] for m in site_a["status"]["Metrics"]["replMetrics"].values()]
    assert max(failed) >= 50, failed
    print(f"healed to OK {healed_after:.0f} s after B restarted")


# --- 3. reading the data --------------------------------------------------------------------------------------

def _part_file(site_dir: Path, bucket: str, key: str) -> Path:
    [part] = list((site_dir / bucket / key).glob("*/part.1"))
    return part


def test_read_data_finds_corruption_that_listing_cannot(drtool: Callable[..., CliRun], own_pair_replication_env: Any,
                                                        replicated_bucket: tuple[str, Any, Any]) -> None:
    bucket, a, b = replicated_bucket
    big = 256 * 1024 + 100  # large enough for a part file (small objects live inside xl.meta)
    for i in range(3):
        a.put_object(Bucket=bucket, Key=f"raw/big-{i}.bin", Body=os.urandom(big))
    for i in range(4):
        a.put_object(Bucket=bucket, Key=f"raw/small-{i}.txt", Body=f"small {i}".encode())
    _replicated(b, bucket, 7)
    clean = drtool("replication", "verify", "--bucket", bucket, "--read-data", "100", "--seed", "5", "--json")
    assert clean.code == 0, clean.out + clean.err
    [summary] = clean.event("result")["buckets"]
    assert summary["read_data"]["read"] == 7 and summary["read_data"]["seed"] == 5

    part = _part_file(own_pair_replication_env.b.data_dir, bucket, "raw/big-1.bin")
    with open(part, "r+b") as fh:
        fh.seek(100_000)
        original = fh.read(64)
        fh.seek(100_000)
        fh.write(bytes(x ^ 0xFF for x in original))

    listing = drtool("replication", "verify", "--bucket", bucket, "--json")
    assert listing.code == 0  # same keys, versions, ETags and sizes: a listing cannot see rot

    res = drtool("replication", "verify", "--bucket", bucket, "--read-data", "100", "--seed", "5", "--json")
    assert res.code == 4, res.out + res.err
    [summary] = res.event("result")["buckets"]
    rd = summary["read_data"]
    assert rd["selected"] == 7 and rd["unreadable"] + rd["differing"] == 1
    assert [p["key"] for p in rd["problems"]] == ["raw/big-1.bin"]
    human = drtool("replication", "verify", "--bucket", bucket, "--read-data", "100", "--seed", "5")
    assert "raw/big-1.bin" in human.out and "verdict: CRITICAL" in human.out

    # The subset is reproducible: the same seed picks the same versions, the selection is about half at 50%.
    half = [drtool("replication", "verify", "--bucket", bucket, "--read-data", "50", "--seed", "11", "--json")
            for _ in range(2)]
    picks = [h.event("result")["buckets"][0]["read_data"]["selected"] for h in half]
    assert picks[0] == picks[1]
    # --max-rate: about 1.5 MB read in total at 400 kB/s (1 s of burst) takes well over 2 s.
    started = time.monotonic()
    slow = drtool("replication", "verify", "--bucket", bucket, "--read-data", "100", "--seed", "5",
                  "--max-rate", "400000", "--json")
    elapsed = time.monotonic() - started
    assert slow.code == 4 and elapsed > 2.0, elapsed
    # Put the bytes back so the bucket can be removed like any other.
    with open(part, "r+b") as fh:
        fh.seek(100_000)
        fh.write(original)


def test_selection_is_stable_and_proportional() -> None:
    keys_ = [f"k{i}" for i in range(4000)]
    first = [k for k in keys_ if selected(3, k, "v", 10)]
    assert first == [k for k in keys_ if selected(3, k, "v", 10)]
    assert 300 < len(first) < 500
    assert first != [k for k in keys_ if selected(4, k, "v", 10)]
    assert all(selected(3, k, "v", 100) for k in keys_[:50])


# --- 4. deadlines ---------------------------------------------------------------------------------------------

def test_unreachable_target_in_verify_names_the_site(drtool: Callable[..., CliRun], own_pair_replication_env: Any,
                                                     replicated_bucket: tuple[str, Any, Any]) -> None:
    bucket, _, _ = replicated_bucket
    [port] = free_ports(1)
    res = drtool("replication", "verify", "--bucket", bucket, "--target", f"dr=http://127.0.0.1:{port}",
                 "--deadline", "30s")
    assert res.code == 1
    assert "site dr" in res.err and "s3.endpoint" not in res.err, res.err


def test_deadline_ends_every_command_while_a_site_is_frozen(drtool: Callable[..., CliRun],
                                                            own_pair_replication_env: Any,
                                                            replicated_bucket: tuple[str, Any, Any]) -> None:
    bucket, a, b = replicated_bucket
    a.put_object(Bucket=bucket, Key="one.txt", Body=b"one")
    _replicated(b, bucket, 1)
    pid = own_pair_replication_env.b._control.process.pid
    assert pid is not None
    deadline = 5.0
    timings: dict[str, float] = {}
    outcomes: dict[str, tuple[int, str]] = {}
    os.kill(pid, signal.SIGSTOP)
    try:
        for name, args in (("status", ("replication", "status")),
                           ("verify", ("replication", "verify", "--bucket", bucket)),
                           ("probe", ("replication", "probe", "--bucket", bucket))):
            started = time.monotonic()
            res = drtool(*args, "--deadline", f"{deadline:g}s")
            timings[name] = elapsed = time.monotonic() - started
            assert elapsed < deadline + 2, (name, elapsed, res.out, res.err)
            assert res.code in (1, 4), (name, res.code, res.out, res.err)
            outcomes[name] = res.code, (res.err.strip().splitlines() or [res.out.strip()])[-1][:300]
            if res.code == 1:  # the deadline itself, or a request timeout cut to fit inside it: B is named
                assert ("deadline of 5 s" in res.err and "not checked:" in res.err) or "site B (" in res.err, res.err
    finally:
        os.kill(pid, signal.SIGCONT)
    print("deadline timings", {k: round(v, 2) for k, v in timings.items()}, outcomes)
