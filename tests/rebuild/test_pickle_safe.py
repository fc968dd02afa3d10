"""Dify's embedding cache is decoded without ever executing a pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from drtool.core.pickle_safe import UnsafePickle, loads_float_list
from tests.helpers.pickles import Exploit


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_a_list_of_floats_decodes_in_every_protocol(protocol: int) -> None:
    values = [0.1, -2.5, 3.0, 1e-8] * 100  # 400 values: APPENDS is batched in chunks of 1000 / MARK groups
    assert loads_float_list(pickle.dumps(values, protocol=protocol)) == values
    assert loads_float_list(pickle.dumps([1, 2, 3], protocol=protocol)) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_hostile_pickle_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Exploit(marker), protocol=protocol)
    # Proof the payload is live: the real unpickler runs it (in this test only, on purpose).
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafePickle, match=r"GLOBAL|not allowed"):
        loads_float_list(payload)
    assert not marker.exists()
    # Hidden inside a list of floats, too.
    inner = pickle.dumps([0.5, Exploit(marker), 0.25], protocol=protocol)
    with pytest.raises(UnsafePickle):
        loads_float_list(inner)
    assert not marker.exists()


@pytest.mark.parametrize("value", [
    [[0.1, 0.2]], {"a": 1.0}, (0.1, 0.2), "text", [0.1, "x"], None, [0.1, None],
])
def test_anything_but_a_flat_float_list_is_refused(value: object) -> None:
    with pytest.raises(UnsafePickle):
        loads_float_list(pickle.dumps(value, protocol=2))


def test_garbage_bytes_are_refused() -> None:
    with pytest.raises(UnsafePickle):
        loads_float_list(b"\x80\x04not a pickle")
    with pytest.raises(UnsafePickle):
        loads_float_list(pickle.dumps([1.0, 2.0])[:-3])
