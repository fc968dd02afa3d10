"""MinIO admin answers: whatever JSON a site (or a proxy in front of it) returns, `replication status` either
reads it or refuses it naming the field; the verdict, the table and the metrics never crash on an answer that
passed the check. Errors answered with a non-200 status always become a drtool error."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drtool.adapters.minio_admin import MalformedAnswer, MinioAdmin, Response
from drtool.adapters.minio_answers import info_problem, status_problem
from drtool.cli.app import App
from drtool.cli.replication_cmd import render_status
from drtool.core.replication_verdict.site_answers import SiteAnswer, Thresholds, offline_peers, site_reasons
from drtool.core.replication_verdict.verdict import decide
from drtool.errors import DrtoolError, ExitCode
from drtool.ops.replication.sites import self_and_peers
from drtool.ops.replication.status import StatusReport, status_metrics
from tests.badinput.strategies import PROFILE, SMALL, json_values

A, B = "6e7f6ad4-0000-4000-8000-00000000000a", "6e7f6ad4-0000-4000-8000-00000000000b"
INFO: dict[str, Any] = {"enabled": True, "name": "A", "sites": [
    {"endpoint": "http://127.0.0.1:9000", "name": "A", "deploymentID": A, "sync": "disable"},
    {"endpoint": "http://127.0.0.1:9100", "name": "B", "deploymentID": B, "sync": "disable"}]}
STATUS: dict[str, Any] = {
    "Enabled": True, "MaxBuckets": 1, "MaxUsers": 0, "MaxGroups": 0, "MaxPolicies": 0,
    "Sites": {A: {"name": "A", "endpoint": "http://127.0.0.1:9000", "deploymentID": A},
              B: {"name": "B", "endpoint": "http://127.0.0.1:9100", "deploymentID": B}},
    "StatsSummary": {A: {"DeploymentID": A, "TotalBucketsCount": 1}, B: {"DeploymentID": B}},
    "BucketStats": {"dify": {A: {"HasBucket": True, "TagMismatch": False}, B: {"HasBucket": True}}},
    "PolicyStats": {"readwrite": {A: {"HasPolicy": True}, B: {"HasPolicy": True, "PolicyMismatch": True}}},
    "UserStats": {}, "GroupStats": {}, "ILMExpiryStats": {},
    "Metrics": {"queued": {"curr": {"count": 3, "bytes": 4096.0}}, "replMetrics": {B: {
        "deploymentID": B, "endpoint": "http://127.0.0.1:9100", "isOnline": True, "replicatedCount": 12,
        "latency": {"curr": 1, "avg": 2500000, "max": 3}, "failed": {"lastHour": {"count": 0, "bytes": 0}}}}},
}
KEYS = st.sampled_from(["Enabled", "Sites", "StatsSummary", "BucketStats", "Metrics", "queued", "curr", "count",
                        "replMetrics", "failed", "lastHour", "latency", "avg", "isOnline", "name", "endpoint",
                        "HasBucket", "PolicyMismatch", "sites", "deploymentID", "enabled", "", A, B])
ANY = json_values(KEYS, leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """`doc` with one to three of its values (at any depth) replaced by arbitrary JSON, or keys added."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict | list) and (isinstance(parent, dict) or path[-1] < len(parent)):
            parent[path[-1]] = data.draw(ANY)
        if isinstance(parent, dict) and data.draw(st.booleans()):
            parent[data.draw(KEYS)] = data.draw(ANY)
    return doc


def _use_everything(info: dict[str, Any], status: dict[str, Any]) -> None:
    """What `replication status` does with an accepted answer: verdict, peers, offline list, metrics."""
    answer = SiteAnswer("A", "http://127.0.0.1:9000", info=info, status=status, health={"/minio/health/live": 200})
    reasons = site_reasons(answer, Thresholds(expected_sites=2))
    assert all(r.message and r.site == "A" for r in reasons)
    self_and_peers(answer)
    offline_peers(status)
    report = StatusReport(checked_at=datetime.now(UTC), answers=[answer], status_errors={}, buckets=[],
                          bucket_lists={}, verdict=decide(reasons))
    status_metrics(report)
    json.dumps(report.to_dict(), default=str)
    render_status(App(), report)  # the human table


def _read_or_refused(problem: str | None, info: dict[str, Any], status: dict[str, Any]) -> None:
    """A mutated answer is either refused with a message naming the field, or read in full without an error."""
    if problem is not None:
        assert re.match(r"field \S+ is .+, expected ", problem), problem
        return
    _use_everything(info, status)


def test_the_sample_is_accepted() -> None:
    assert info_problem(INFO) is None and status_problem(STATUS) is None
    _use_everything(INFO, STATUS)


@PROFILE
@given(st.data())
def test_mutated_status_is_read_or_refused_naming_the_field(data: st.DataObject) -> None:
    status = _mutate(STATUS, data)
    _read_or_refused(status_problem(status), INFO, status)


def test_a_peer_with_no_name_endpoint_or_id_is_read() -> None:
    """Found by the property below in CI: such a peer's name was None, and the metrics could not sort the peers."""
    info = copy.deepcopy(INFO)
    info["sites"].append({"Enabled": None, "deploymentID": None})
    assert info_problem(info) is None
    _use_everything(info, STATUS)


@PROFILE
@given(st.data())
def test_mutated_info_is_read_or_refused_naming_the_field(data: st.DataObject) -> None:
    info = _mutate(INFO, data)
    _read_or_refused(info_problem(info), info, STATUS)


@SMALL
@given(st.dictionaries(KEYS, ANY), st.dictionaries(KEYS, ANY))
def test_arbitrary_objects(info: dict[str, Any], status: dict[str, Any]) -> None:
    if info_problem(info) is None and status_problem(status) is None:
        _use_everything(info, status)


def test_a_refused_answer_is_a_drtool_error_naming_site_and_field() -> None:
    admin = MinioAdmin("A", "http://127.0.0.1:1", "k", "s")
    try:
        admin._check(status_problem({"Sites": {B: ["B"]}}), "site replication status")
    except MalformedAnswer as exc:
        assert exc.exit_code == ExitCode.ERROR and exc.system == "site A (http://127.0.0.1:1)"
        assert f"field Sites.'{B}' is a list, expected an object" in exc.message
    else:
        raise AssertionError("accepted")
    finally:
        admin.close()


@PROFILE
@given(st.integers(min_value=100, max_value=599), st.binary(max_size=200) | json_values(KEYS).map(
    lambda v: json.dumps(v).encode()), st.dictionaries(st.sampled_from(["Server", "server"]),
                                                                   st.text(max_size=10)))
def test_any_error_answer_becomes_a_drtool_error(status: int, body: bytes, headers: dict[str, str]) -> None:
    admin = MinioAdmin("A", "http://127.0.0.1:1", "k", "s")
    try:
        err = admin._error(Response(status, headers, body), "site replication status")
    finally:
        admin.close()
    assert isinstance(err, DrtoolError) and err.exit_code in (1, 2, 12)
    assert "site replication status" in err.message and err.system and "A" in err.system
