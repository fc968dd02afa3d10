"""kill -9 at seeded random moments during `drtool export-chunks`; after each: every chunk file a reader can see
is complete (never a part of a new one), the same command run again ends with exactly Dify's indexed chunks in
one file per dataset (no gaps, no duplicates, no stale variant, no abandoned multipart upload), and Postgres is
unchanged."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drtool.core.chunks import Chunk, compression_for, iter_lines, parse_lines
from tests.reliability.conftest import InProcess, db_fingerprint
from tests.reliability.harness import (
    Kill,
    KillPoint,
    Trials,
    delays_over,
    reap_group,
    record_extra,
    rng_for,
    run_and_kill,
    temp_problems,
    timed_run,
    trials,
)

NAMES = {"none": "chunks.jsonl", "gzip": "chunks.jsonl.gz", "zstd": "chunks.jsonl.zst"}


def _chunk_counts(client: Any, bucket: str, key: str) -> tuple[Counter[str], dict[str, str], int]:
    """(id counts, id -> text, rejected lines) of a chunk file, read with rebuild-index's own parser."""
    body = io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    ids: Counter[str] = Counter()
    texts: dict[str, str] = {}
    rejected = 0
    for item in parse_lines(iter_lines(body, compression_for(key), key), key):
        if isinstance(item, Chunk):
            ids[item.id] += 1
            texts[item.id] = item.text
        else:
            rejected += 1
    return ids, texts, rejected


def _content_sha(client: Any, bucket: str, key: str) -> str:
    """sha256 of the file's uncompressed bytes; "damaged: ..." when it does not decompress."""
    import gzip

    import zstandard

    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        if key.endswith(".gz"):
            body = gzip.decompress(body)
        elif key.endswith(".zst"):
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except Exception as exc:  # a truncated or corrupt stream
        return f"damaged: {exc}"
    return hashlib.sha256(body).hexdigest()


def test_export_chunks_survives_kill_9(minio_pair: Any, pg: Any, dify_db_factory: Callable[..., Any],
                                       cli: InProcess, tmp_path: Path) -> None:
    # A text dataset and a parent-child one, about 1 MiB of chunks in all: small, so that 20 trials stay quick
    # (the kill between multipart parts has its own test below).
    db = dify_db_factory(datasets=2, documents_per_dataset=4, segments_per_document=400, seed=11)
    client, bucket, env = _setup(minio_pair, pg, db, tmp_path)
    tmp = Path(env["TMPDIR"])
    want = {d.id: dict(d.index_nodes) for d in db.seed.datasets}
    rows_before = db_fingerprint(db.dsn)

    def args(compression: str) -> list[str]:
        return ["export-chunks", "--all", "--part-size-mb", "5", "--compression", compression, "--force"]

    calibration = timed_run(args("none"), env)
    assert calibration.code == 0, calibration.stderr
    record_extra("calibration", command="export-chunks", seconds=round(calibration.seconds, 3),
                 first_event_s=calibration.first_event_s)
    n = trials()
    rng = rng_for("export-chunks")
    delays = delays_over(rng, n, calibration)
    compressions = [rng.choice(sorted(NAMES)) for _ in range(n)]
    runner = Trials("export-chunks")

    # The calibration's files hold exactly Dify's indexed chunks (parsed id by id, once); every later file must have
    # the same uncompressed bytes, which a hash checks in a fraction of the time.
    want_sha: dict[str, str] = {}
    for ds, nodes in want.items():
        key = f"datasets/{ds}/processed/chunks.jsonl"
        ids, texts, rejected = _chunk_counts(client, bucket, key)
        assert not rejected and texts == nodes and max(ids.values()) == 1, f"dataset {ds}: export is not exact"
        want_sha[ds] = _content_sha(client, bucket, key)

    def check_visible(problems: list[str], *, exactly: str | None) -> None:
        for ds in want:
            keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"datasets/{ds}/processed/")
                    .get("Contents", [])}
            present = [c for c, name in sorted(NAMES.items()) if f"datasets/{ds}/processed/{name}" in keys]
            if exactly is not None and present != [exactly]:
                problems.append(f"dataset {ds}: files {present}, expected only the {exactly} one")
            for c in present:
                sha = _content_sha(client, bucket, f"datasets/{ds}/processed/{NAMES[c]}")
                if sha != want_sha[ds]:
                    problems.append(f"dataset {ds}: {NAMES[c]} differs from Dify's chunks ({sha[:40]})")

    def one(i: int, point: KillPoint) -> tuple[Kill, list[str]]:
        kill = run_and_kill(args(compressions[i]), env, point.delay_s, after_first_event=point.after_first_event)
        problems: list[str] = []
        check_visible(problems, exactly=None)  # whatever a reader sees right after the kill is whole
        again = cli(args(compressions[i]), env)
        if again.code != 0:
            problems.append(f"re-run exit {again.code}: {again.stderr.strip()[-400:]}")
        check_visible(problems, exactly=compressions[i])
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if uploads:
            problems.append(f"{len(uploads)} abandoned multipart upload(s) left after the re-run")
        if client.list_objects_v2(Bucket=bucket, Prefix="drtool/").get("KeyCount"):
            problems.append("a lock is left after the re-run")
        reap_group(kill.pgid)
        problems += temp_problems(tmp)
        return kill, problems

    runner.run(n, delays, one)
    record_extra("phases", command="export-chunks", phases=runner.phases())
    assert db_fingerprint(db.dsn) == rows_before, "the Dify database changed"
    runner.assert_ok()


def _setup(minio_pair: Any, pg: Any, db: Any, tmp_path: Path) -> tuple[Any, str, dict[str, str]]:
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"rel-export-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
        "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable", "TMPDIR": str(tmp),
    }
    return client, bucket, env


def test_export_killed_between_multipart_parts(minio_pair: Any, pg: Any, dify_db_factory: Callable[..., Any],
                                               cli: InProcess, tmp_path: Path) -> None:
    """A fixed point random delays rarely hit: between the parts of a multipart upload. Readers still see no file
    (or the old one), and the re-run aborts the killed run's unfinished upload instead of leaving it billed."""
    db = dify_db_factory(datasets=1, documents_per_dataset=1, segments_per_document=30000, seed=12)  # ~10 MiB
    client, bucket, env = _setup(minio_pair, pg, db, tmp_path)
    ds = db.seed.datasets[0]
    key = f"datasets/{ds.id}/processed/chunks.jsonl"
    args = ["export-chunks", "--all", "--part-size-mb", "5"]
    kill = run_and_kill(args, env, 0.0,
                        at_event=lambda e: e.get("event") == "export.part_uploaded" and e["part"] < e["parts"])
    reap_group(kill.pgid)
    assert kill.killed, "the run finished before its first part was uploaded"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the kill did not land mid-upload"
    assert not client.list_objects_v2(Bucket=bucket, Prefix="datasets/").get("KeyCount"), "a partial file is visible"
    again = cli(args, env)
    assert again.code == 0, again.stderr
    assert "aborted 1 unfinished upload(s)" in again.stderr
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the killed run's upload was not aborted"
    ids, texts, rejected = _chunk_counts(client, bucket, key)
    assert not rejected and texts == dict(ds.index_nodes) and max(ids.values()) == 1
    assert not client.list_objects_v2(Bucket=bucket, Prefix="drtool/").get("KeyCount"), "a lock is left"
