"""Object keys come from database rows and manifests, which whoever can write a row controls. check_key is the one
gate wherever a key becomes a path (snapshot create pins or copies it into the snapshot folder, restore writes it
into the target bucket): whatever it accepts stays inside the folder it is joined onto."""

from __future__ import annotations

import posixpath
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drtool.core.keys import UnsafeKey, check_key, check_snapshot_id
from tests.badinput.strategies import PROFILE

PIECES = st.sampled_from(["..", ".", "", "a", "upload_files", "é", "\x00", "\x01", "\x1f", "\x7f", "\x85", "\\",
                          "C:", "x" * 300, "\ud800", " ", "%2e%2e", "..."])
KEYS = st.lists(PIECES, min_size=1, max_size=6).map("/".join) | st.text(max_size=80)


def _stays_inside(key: str) -> bool:
    base = "/srv/restore/target"
    return posixpath.normpath(posixpath.join(base, key)).startswith(base + "/")


@PROFILE
@given(KEYS)
def test_accepted_keys_stay_in_their_folder(key: str) -> None:
    try:
        assert check_key(key) == key
    except UnsafeKey as exc:
        assert str(exc)  # says why
        return
    assert _stays_inside(key)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\\]", key) and not key.startswith("/")
    assert "." not in key.split("/") and ".." not in key.split("/")
    assert len(key.encode("utf-8")) <= 1024  # encodable: no lone surrogate


@PROFILE
@given(st.lists(PIECES.filter(lambda p: p not in ("..", ".") and len(p) < 100), max_size=3).map("/".join),
       st.sampled_from(["../", "./", "/", "/..", "\\", "\x00", "\n", "\x85", "\ud800"]))
def test_every_escape_is_refused(head: str, escape: str) -> None:
    if escape in ("../", "./"):
        keys = [escape + head, f"{head}/{escape}x"]
    elif escape == "/":
        keys = ["/" + head]
    elif escape == "/..":
        keys = [head + "/..", ".."]
    else:  # refused anywhere in the key
        keys = [escape + head, head + escape + "x"]
    for key in keys:
        with pytest.raises(UnsafeKey):
            check_key(key)


@pytest.mark.parametrize("key", ["x" * 1025, "é" * 513, "a/" * 600])
def test_long_keys_refused(key: str) -> None:
    with pytest.raises(UnsafeKey, match="longer than 1024 bytes"):
        check_key(key)


@PROFILE
@given(st.text(max_size=40))
def test_snapshot_ids_are_only_the_generated_form(text: str) -> None:
    try:
        check_snapshot_id(text)
    except UnsafeKey as exc:
        assert "is not a snapshot id" in str(exc)
        return
    assert re.fullmatch(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}", text) and _stays_inside(text)
