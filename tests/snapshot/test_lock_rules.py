"""The pure rules that judge a held lock (drtool/core/lock.py): a pid is believed only within the same host name,
kernel boot and PID namespace; anything else is unverifiable, never dead."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from drtool.core.lock import LockInfo, Origin, holder_gone, judge, stale_reason, unverifiable_reason

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HERE = Origin("node-1", "boot-aaaa", "pid:[4026531836]")
HOUR = 3600


def _lock(**fields: str) -> LockInfo:
    base = LockInfo.new("snapshot create", "node-1", 4242, now=T0, proc_start="1000", boot_id="boot-aaaa",
                        pid_ns="pid:[4026531836]")
    return replace(base, **fields)


def _dead(lk: LockInfo) -> bool:
    return False


def _alive(lk: LockInfo) -> bool:
    return True


def test_same_host_boot_and_namespace_with_a_gone_pid_is_dead() -> None:
    lock = _lock()
    judged = judge(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=_dead)
    assert judged.verdict == "dead" and judged.reason == "process 4242 no longer runs on this host"
    assert holder_gone(lock, here=HERE, holder_alive=_dead) == judged.reason
    assert judge(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=_alive).verdict == "held"
    assert unverifiable_reason(lock, here=HERE) is None


@pytest.mark.parametrize(("fields", "says"), [
    ({"pid_ns": "pid:[4026532999]"}, "held from another PID namespace (pid:[4026532999]) on host node-1"),
    ({"boot_id": "boot-bbbb"}, "held during another boot (boot id boot-bbbb) of host node-1"),
    ({"boot_id": "", "pid_ns": ""}, "did not record its boot id and PID namespace"),
    ({"pid_ns": ""}, "did not record its boot id and PID namespace"),
    ({"boot_id": ""}, "did not record its boot id and PID namespace"),
])
def test_a_pid_from_elsewhere_on_this_host_name_is_unverifiable_never_dead(fields: dict[str, str],
                                                                           says: str) -> None:
    """The holder's pid is absent from this namespace, and still it is not dead: it may run next door."""
    lock = _lock(**fields)
    assert holder_gone(lock, here=HERE, holder_alive=_dead) is None
    for alive in (_dead, _alive):  # whatever the local pid check would say, it says nothing about that holder
        judged = judge(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=alive)
        assert judged.verdict == "unverifiable" and judged.replaceable
        assert says in judged.reason and "drtool cannot tell whether it still runs" in judged.reason
    # still too old after stale_after: both reasons are given, and it stays an operator's decision
    old = judge(lock, now=T0 + timedelta(hours=2), here=HERE, stale_after_s=HOUR, holder_alive=_dead)
    assert old.verdict == "unverifiable" and says in old.reason and "lock_stale_after" in old.reason


def test_an_old_record_without_the_new_fields_is_read_and_unverifiable() -> None:
    """Locks written before boot id and PID namespace were recorded still parse; their pid is not believed."""
    old = json.dumps({"holder": "snapshot create", "host": "node-1", "pid": 4242, "proc_start": "1000",
                      "started_at": T0.isoformat(), "token": "t"}).encode()
    lock = LockInfo.from_bytes(old)
    assert (lock.holder, lock.pid, lock.boot_id, lock.pid_ns) == ("snapshot create", 4242, "", "")
    assert holder_gone(lock, here=HERE, holder_alive=_dead) is None
    assert judge(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=_dead).verdict == "unverifiable"
    new = _lock()
    assert LockInfo.from_bytes(new.to_bytes()) == new
    assert json.loads(new.to_bytes())["pid_ns"] == "pid:[4026531836]"


@pytest.mark.parametrize("here", [Origin("node-1"), Origin("node-1", "boot-aaaa", ""), Origin("node-1", "", "x")])
def test_a_run_that_cannot_read_its_own_place_proves_nothing_dead(here: Origin) -> None:
    """No /proc (or a /proc of another namespace): equal empty fields must not count as "the same place"."""
    lock = _lock(boot_id=here.boot_id, pid_ns=here.pid_ns)
    assert holder_gone(lock, here=here, holder_alive=_dead) is None
    judged = judge(lock, now=T0, here=here, stale_after_s=HOUR, holder_alive=_dead)
    assert judged.verdict == "unverifiable" and "cannot read its own boot id and PID namespace" in judged.reason


def test_another_host_is_judged_by_age_only_as_before() -> None:
    lock = _lock(host="node-2", pid_ns="pid:[4026532999]")
    assert unverifiable_reason(lock, here=HERE) is None
    young = judge(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=_dead)
    assert young.verdict == "held" and not young.replaceable
    assert stale_reason(lock, now=T0, here=HERE, stale_after_s=HOUR, holder_alive=_dead) is None
    old = judge(lock, now=T0 + timedelta(hours=2), here=HERE, stale_after_s=HOUR, holder_alive=_dead)
    assert old.verdict == "stale" and "lock_stale_after" in old.reason


def test_a_live_holder_here_is_held_until_it_is_too_old() -> None:
    lock = _lock()
    assert judge(lock, now=T0 + timedelta(minutes=5), here=HERE, stale_after_s=HOUR, holder_alive=_alive).verdict \
        == "held"
    old = judge(lock, now=T0 + timedelta(hours=2), here=HERE, stale_after_s=HOUR, holder_alive=_alive)
    assert old.verdict == "stale" and old.reason.startswith("it is 7200 s old")


def test_an_unreadable_lock_is_never_dead_nor_unverifiable() -> None:
    unreadable = LockInfo.from_bytes(b"\x00not json")
    assert unreadable.pid == 0
    for here in (HERE, Origin("unknown", "boot-aaaa", "pid:[4026531836]")):
        judged = judge(unreadable, now=T0, here=here, stale_after_s=HOUR, holder_alive=_dead)
        assert judged.verdict == "stale"  # its start time is unknown (epoch): only the operator's flag replaces it
