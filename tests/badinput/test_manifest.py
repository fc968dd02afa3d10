"""The snapshot manifest reader and the small artifacts next to it (SHA256SUMS, meta.json, COMMITTED): any
content is either read back exactly or refused with a ValueError naming the line or field, which the commands
turn into exit 4."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from drtool.core import manifest as mf
from tests.badinput.strategies import PROFILE, SMALL, flip, json_values

FIELDS = st.sampled_from(["key", "state", "version_id", "etag", "size", "last_modified", "referenced_by",
                          "copy_key", "reason"])
TYPED = {"key": str, "state": str, "version_id": str, "etag": str, "size": int, "last_modified": str,
         "copy_key": str, "reason": str}


def _records(n: int) -> list[mf.ManifestRecord]:
    return [mf.ManifestRecord(key=f"upload_files/t/{i}.txt", state=mf.STATE_PINNED, version_id=f"v{i}",
                              etag="e" * 32, size=i, last_modified="2026-11-29T12:00:00+00:00",
                              referenced_by=["upload_files.key"]) for i in range(n)]


def _manifest_bytes(records: list[mf.ManifestRecord]) -> bytes:
    buf = io.BytesIO()
    writer = mf.ManifestWriter(buf)
    for r in records:
        writer.write(r)
    writer.close()
    return buf.getvalue()


@PROFILE
@given(st.dictionaries(FIELDS, json_values(FIELDS, leaves=10)))
def test_any_json_record_is_read_typed_or_refused_naming_the_field(data: dict[str, Any]) -> None:
    try:
        rec = mf.ManifestRecord.from_line(json.dumps(data).encode(), 12)
    except ValueError as exc:
        assert str(exc).startswith("manifest line 12: ")
        named = re.search(r"field '(\w+)'", str(exc))
        assert named is None or named.group(1) in TYPED or named.group(1) == "referenced_by"
        return
    # Accepted: every field has the type restore and verify rely on.
    assert isinstance(rec.key, str) and isinstance(rec.state, str)
    for name, kind in TYPED.items():
        value = getattr(rec, name)
        assert value is None or (isinstance(value, kind) and not isinstance(value, bool))
    assert all(isinstance(v, str) for v in rec.referenced_by)
    assert mf.ManifestRecord.from_line(rec.to_line()) == rec


@SMALL
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=10**6))
def test_any_line_bytes(line: bytes, lineno: int) -> None:
    try:
        mf.ManifestRecord.from_line(line, lineno)
    except ValueError as exc:
        assert str(exc).startswith(f"manifest line {lineno}: ")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    """Found by the properties here: RecursionError escaped from_line before the fix."""
    for line in (b"[" * 100_000, b'{"key":' * 50_000):
        try:
            mf.ManifestRecord.from_line(line, 4)
        except ValueError as exc:
            assert str(exc).startswith("manifest line 4: ")
        else:
            raise AssertionError("accepted")


@PROFILE
@given(st.integers(min_value=1, max_value=30), st.integers(min_value=0), st.integers(min_value=0, max_value=7),
       st.integers(min_value=0), st.sampled_from(["flip", "truncate", "append", "splice"]))
def test_damaged_manifest_stream(n: int, at: int, bit: int, cut: int, how: str) -> None:
    records = _records(n)
    good = _manifest_bytes(records)
    if how == "flip":
        bad = flip(good, at, bit)
    elif how == "truncate":
        bad = good[: cut % len(good)]
    elif how == "append":
        bad = good + zstandard.ZstdCompressor().compress(b'{"key": 1}\n' if bit % 2 else b"not json\n")
    else:
        bad = good[: at % len(good)] + good[cut % len(good):]
    try:
        back = list(mf.read_manifest(io.BytesIO(bad)))
    except ValueError as exc:
        assert re.match(r"manifest (line \d+: |is not valid zstd data)", str(exc)), str(exc)
        return
    # Damage zstd did not notice (a truncation at a frame end): what was read is a prefix or the records.
    assert all(isinstance(r, mf.ManifestRecord) for r in back)
    if how == "truncate":
        assert back == records[: len(back)]


@SMALL
@given(st.binary(max_size=400))
def test_sums_and_json_artifacts(data: bytes) -> None:
    try:
        sums = mf.parse_sums(data)
    except ValueError as exc:
        assert re.match(r"SHA256SUMS line \d+ is malformed$", str(exc))
    else:
        assert all(re.fullmatch("[0-9a-f]{64}", d) and "/" not in n for n, d in sums.items())
    for what in ("meta.json", "COMMITTED"):
        try:
            value = mf.parse_json_object(data, what)
        except ValueError as exc:
            assert str(exc).startswith(what)
        else:
            assert isinstance(value, dict)


def test_deep_json_artifact_is_refused() -> None:
    for data in (b"[" * 100_000, b'{"a":' * 100_000):
        try:
            mf.parse_json_object(data, "meta.json")
        except ValueError as exc:
            assert str(exc) == "meta.json is not valid JSON"
        else:
            raise AssertionError("accepted")
