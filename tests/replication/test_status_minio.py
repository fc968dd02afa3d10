"""`drtool replication status` against two real MinIO sites with site replication.

One outage scenario runs once for the module (healthy -> site B stopped while objects are written -> a bucket
created while B is down -> B started again until the verdict is OK again). At each step drtool runs as a
separate process, `mc admin replicate status --json` runs on the same setup, and the tests below check that
drtool's verdict is right and agrees with what mc reports. The status JSON the servers returned in the run is
also what the verdict unit tests at the bottom use: nothing is hand-written.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drtool.core.replication_verdict.site_answers import SiteAnswer, Thresholds, offline_peers, site_reasons
from drtool.core.replication_verdict.verdict import Level, decide
from tests.foundation.metrics_check import parse_metrics_text
from tests.replication.conftest import CliRun, all_versions, drtool_process, minio_settings_env, unique, wait_for

pytestmark = pytest.mark.own_servers("minio_pair")  # it takes site B down and expects a pair-wide verdict

# Findings from counters that move between two calls; everything else must agree between drtool and mc.
_VOLATILE = {"queue_above_threshold", "failures_last_hour"}


@dataclass
class Step:
    name: str
    run: CliRun  # drtool replication status --json
    human: CliRun | None  # the same without --json
    metrics: str
    mc: dict[str, Any] = field(default_factory=dict)  # alias -> parsed `mc admin replicate status --json`
    mc_exit: dict[str, int] = field(default_factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        return self.run.event("result")

    def site(self, alias: str) -> dict[str, Any]:
        return next(s for s in self.result["sites"] if s["alias"] == alias)

    def codes(self) -> set[str]:
        return {r["code"] for r in self.result["reasons"]}


@dataclass
class Scenario:
    steps: dict[str, Step]
    bucket: str
    bucket_while_down: str
    names: dict[str, str]  # deploymentID -> site name
    recovering: list[CliRun]


def _mc_status(pair: Any, alias: str) -> tuple[int, Any]:
    done = pair.mc("admin", "replicate", "status", alias, "--json", check=False, timeout=60)
    text = done.stdout.strip()
    try:
        return done.returncode, json.loads(text) if text else None
    except json.JSONDecodeError:
        return done.returncode, text


def _step(name: str, pair: Any, env: dict[str, str], workdir: Path, human: bool = True) -> Step:
    metrics_path = workdir / f"{name}.prom"
    run = drtool_process(["replication", "status", "--json", "--metrics-file", str(metrics_path)], env)
    step = Step(name, run, None, metrics_path.read_text() if metrics_path.exists() else "")
    for site in (pair.a, pair.b):
        if site.running():
            step.mc_exit[site.alias], step.mc[site.alias] = _mc_status(pair, site.alias)
    if human:
        step.human = drtool_process(["replication", "status"], env)
    return step


# A pair of this module's own (own_minio_pair): it takes site B down and then expects a pair-wide verdict, and other
# modules' buckets on the shared pair heal at MinIO's pace and would decide that verdict.
@pytest.fixture(scope="module")
def scenario(own_minio_pair: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pair = own_minio_pair
    workdir = tmp_path_factory.mktemp("replication-status")
    # Failures during an outage stay in MinIO's "last hour" counter for an hour (a WARNING by default, checked
    # separately below); the steps use a high threshold so that an earlier test's outage cannot leak in. The backlog
    # check is off for the same reason: it walks every bucket of the shared server, and other tests' buckets (one
    # made while a site was down heals only when MinIO's scanner reaches it) would decide these steps' verdicts.
    # The backlog's own rules are tested on buckets of their own in test_blind_spots.py.
    env = minio_settings_env(pair, DRTOOL_REPLICATION_MAX_FAILED_LAST_HOUR="1000000",
                             DRTOOL_REPLICATION_BACKLOG_CHECK="false")
    a = pair.a.s3_client()
    steps: dict[str, Step] = {}
    bucket, bucket_down = unique("healthy"), unique("made-while-b-down")
    recovering: list[CliRun] = []
    try:
        a.create_bucket(Bucket=bucket)
        for i in range(3):
            a.put_object(Bucket=bucket, Key=f"docs/{i}.txt", Body=f"document {i}".encode())
        # Another test may just have restarted a site: wait for the steady healthy state first.
        wait_for(lambda: drtool_process(["replication", "status", "--json"], env).code == 0, 180,
                 "the MinIO pair to report OK")
        wait_for(lambda: pair.b.s3_client().list_objects_v2(Bucket=bucket).get("KeyCount") == 3, 60,
                 "the objects to reach site B")
        steps["healthy"] = _step("healthy", pair, env, workdir)

        pair.b.stop()
        for i in range(10):
            a.put_object(Bucket=bucket, Key=f"while-down/{i}.txt", Body=b"written while B was down")
        steps["b_down"] = _step("b_down", pair, env, workdir)

        a.create_bucket(Bucket=bucket_down)
        a.put_object(Bucket=bucket_down, Key="first.txt", Body=b"first object")
        steps["bucket_while_down"] = _step("bucket_while_down", pair, env, workdir, human=False)

        pair.b.start()

        def ok_again() -> bool:
            run = drtool_process(["replication", "status", "--json"], env)
            recovering.append(run)
            return run.code == 0

        wait_for(ok_again, 240, "the verdict to be OK again after site B came back", interval=3)
        steps["converged"] = _step("converged", pair, env, workdir, human=False)
        # With the default threshold (0) the replications that failed during the outage are still counted by
        # MinIO for an hour; with the backlog empty they are no reason to warn, without the backlog check they are.
        strict = dict(env, DRTOOL_REPLICATION_MAX_FAILED_LAST_HOUR="0")
        steps["failures_last_hour"] = Step("failures_last_hour",
                                           drtool_process(["replication", "status", "--json"], strict), None, "")
        steps["failures_last_hour"].mc_exit["A"], steps["failures_last_hour"].mc["A"] = _mc_status(pair, "A")
        steps["no_backlog"] = Step("no_backlog", drtool_process(["replication", "status", "--json",
                                                                 "--no-backlog"], strict), None, "")
    finally:
        if not pair.b.running():
            pair.b.start()  # other tests share the session's pair
    names = {dep: s["name"] for dep, s in steps["healthy"].mc["A"]["Sites"].items()}
    return Scenario(steps, bucket, bucket_down, names, recovering)


def _reason_keys(reasons: list[Any]) -> set[tuple[str, str, str | None]]:
    return {(r.level.label, r.code, r.entity) for r in reasons if r.code not in _VOLATILE}


def _assert_agrees_with_mc(step: Step, alias: str) -> None:
    """drtool's findings for a site equal the findings in mc's JSON for the same site and moment."""
    site = step.site(alias)
    mc_json = step.mc[alias]
    assert step.mc_exit[alias] == 0  # mc says nothing with its exit code: that is why drtool exists
    assert isinstance(mc_json, dict) and mc_json.get("Enabled") is True
    from_mc = site_reasons(SiteAnswer(alias, site["endpoint"], info=site["info"], status=mc_json), Thresholds())
    from_drtool = site_reasons(SiteAnswer(alias, site["endpoint"], info=site["info"], status=site["status"]),
                               Thresholds())
    assert _reason_keys(from_mc) == _reason_keys(from_drtool)
    # And independently of drtool's code: the peers mc lists as answering are the ones drtool calls online.
    answered = set(mc_json.get("StatsSummary") or {}) - {""}
    offline = {dep for dep, _ in offline_peers(site["status"])}
    assert offline == set(mc_json["Sites"]) - answered


# --- the scenario ----------------------------------------------------------------------------------------------

def test_healthy_pair_is_ok_and_agrees_with_mc(scenario: Scenario) -> None:
    step = scenario.steps["healthy"]
    assert step.run.code == 0, step.run.err
    assert step.result["verdict"] == "OK" and step.result["reasons"] == []
    for alias in ("A", "B"):
        site = step.site(alias)
        assert site["reachable"] and site["health"] == {"/minio/health/live": 200, "/minio/health/cluster": 200}
        assert scenario.bucket in site["buckets"]
        _assert_agrees_with_mc(step, alias)
        # mc's JSON for a healthy pair: both sites answered and nothing is out of sync.
        assert len(step.mc[alias]["StatsSummary"]) == 2 and not step.mc[alias]["BucketStats"]
    config = [b for b in step.result["bucket_config"] if b["bucket"] == scenario.bucket]
    assert {b["site"] for b in config} == {"A", "B"}
    for b in config:
        assert b["versioning"] == "Enabled"
        assert [r["status"] for r in b["replication_rules"]] == ["Enabled"]  # one rule, to the one peer


def test_healthy_human_output_has_a_table_per_site(scenario: Scenario) -> None:
    step = scenario.steps["healthy"]
    assert step.human is not None and step.human.code == 0
    out = step.human.out
    assert "site A  http" in out and "site B  http" in out
    assert out.count("peer ") == 2 and "online" in out
    assert f"    {scenario.bucket}: versioning Enabled, 1 enabled replication rule(s) for peer(s) B" in out
    assert out.rstrip().endswith("verdict: OK")


def _assert_grouped(text: str) -> None:
    """Prometheus text format: one HELP/TYPE per metric, its samples right after it."""
    names = [line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")]
    runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert len(runs) == len(set(runs)), runs
    assert text.count("# HELP ") == len(set(names))


def test_healthy_metrics_file(scenario: Scenario) -> None:
    text = scenario.steps["healthy"].metrics
    _assert_grouped(text)
    assert "drtool_replication_status_verdict 0" in text
    assert 'drtool_replication_status_link_online{peer="B",site="A"} 1' in text
    assert 'drtool_replication_status_link_online{peer="A",site="B"} 1' in text
    assert 'drtool_replication_status_site_up{site="B"} 1' in text
    assert "drtool_replication_status_last_run_timestamp_seconds " in text
    assert parse_metrics_text(text)["drtool_replication_status_last_exit_code"][()] == 0
    assert 'drtool_replication_status_queued_objects{site="A"}' in text


def test_site_down_is_critical_and_names_the_offline_peer(scenario: Scenario) -> None:
    step = scenario.steps["b_down"]
    assert step.run.code == 4
    assert step.result["verdict"] == "CRITICAL"
    messages = [r["message"] for r in step.result["reasons"] if r["level"] == "CRITICAL"]
    assert any(m.startswith("site A reports peer B offline") for m in messages), messages
    assert any(m.startswith("site B (") and "did not answer" in m for m in messages), messages
    assert not step.site("B")["reachable"]
    assert step.site("B")["health"] == {"/minio/health/live": None, "/minio/health/cluster": None}
    # mc on the surviving site shows the same thing: B did not answer (an empty deploymentID instead of B's).
    assert "" in step.mc["A"]["StatsSummary"]
    _assert_agrees_with_mc(step, "A")
    assert "drtool_replication_status_verdict 2" in step.metrics
    _assert_grouped(step.metrics)
    assert 'drtool_replication_status_link_online{peer="B",site="A"} 0' in step.metrics
    assert 'drtool_replication_status_site_up{site="B"} 0' in step.metrics
    assert step.human is not None and step.human.code == 4
    assert "UNREACHABLE" in step.human.out and "verdict: CRITICAL" in step.human.out


def test_bucket_created_while_a_site_is_down(scenario: Scenario) -> None:
    step = scenario.steps["bucket_while_down"]
    assert step.run.code == 4
    assert scenario.bucket_while_down in step.site("A")["buckets"]
    assert "peer_offline" in step.codes()
    _assert_agrees_with_mc(step, "A")


def test_recovery_reports_what_is_still_missing_then_converges(scenario: Scenario, own_minio_pair: Any) -> None:
    # While B catches up, every run that is not OK says why, and a bucket missing on B is named as such.
    for run in scenario.recovering[:-1]:
        result = run.event("result")
        assert run.code in (3, 4) and result["reasons"], run.out
        for reason in result["reasons"]:
            if reason["code"] == "bucket_missing":
                assert reason["entity"] == scenario.bucket_while_down
    step = scenario.steps["converged"]
    assert step.run.code == 0 and step.result["verdict"] == "OK"
    for alias in ("A", "B"):
        _assert_agrees_with_mc(step, alias)
        assert scenario.bucket_while_down in step.site(alias)["buckets"]
    b = own_minio_pair.b.s3_client()
    assert b.get_bucket_versioning(Bucket=scenario.bucket_while_down)["Status"] == "Enabled"


def test_without_the_backlog_the_hourly_counter_alone_warns(scenario: Scenario) -> None:
    step = scenario.steps["failures_last_hour"]
    # mc's JSON for site A still carries the counter: at least the 10 objects written while B was down ...
    b_id = next(dep for dep, name in scenario.names.items() if name == "B")
    assert step.mc["A"]["Metrics"]["replMetrics"][b_id]["failed"]["lastHour"]["count"] >= 10
    # ... and without the backlog check the counter alone is all drtool has: WARNING, as before. With the backlog
    # (test_blind_spots.py) healed failures are OK at once although MinIO still counts them.
    old = scenario.steps["no_backlog"]
    assert old.run.code == 3 and old.result["verdict"] == "WARNING"
    failures = [r for r in old.result["reasons"] if r["code"] == "failures_last_hour"]
    assert [(r["site"], r["entity"]) for r in failures] == [("A", "B")]
    assert {r["code"] for r in old.result["reasons"]} == {"failures_last_hour"}
    assert old.result["backlog"] == []


# --- verdict unit tests on the JSON captured above -------------------------------------------------------------

def _answer(step: Step, alias: str) -> SiteAnswer:
    site = step.site(alias)
    return SiteAnswer(alias, site["endpoint"], info=site["info"], status=site["status"], health=site["health"])


def test_verdict_captured_healthy_is_ok(scenario: Scenario) -> None:
    step = scenario.steps["healthy"]
    for alias in ("A", "B"):
        assert site_reasons(_answer(step, alias), Thresholds(expected_sites=2, max_failed_last_hour=10**6)) == []


def test_verdict_captured_offline_peer(scenario: Scenario) -> None:
    answer = _answer(scenario.steps["b_down"], "A")
    verdict = decide(site_reasons(answer, Thresholds()))
    assert verdict.level == Level.CRITICAL and verdict.exit_code == 4
    offline = [r for r in verdict.reasons if r.code == "peer_offline"]
    assert [r.entity for r in offline] == ["B"]
    # The flood of per-entity "mismatches" against the empty answer is summarised, not listed.
    assert not any(r.code.endswith("_mismatch") for r in verdict.reasons)


def test_verdict_thresholds_on_captured_status(scenario: Scenario) -> None:
    healthy = _answer(scenario.steps["healthy"], "A")
    status = copy.deepcopy(dict(healthy.status or {}))
    status["Metrics"]["queued"]["curr"]["count"] = 5000
    peer = next(iter(status["Metrics"]["replMetrics"]))
    status["Metrics"]["replMetrics"][peer]["failed"]["lastHour"]["count"] = 7
    answer = SiteAnswer("A", healthy.endpoint, info=healthy.info, status=status)
    verdict = decide(site_reasons(answer, Thresholds(max_queued=1000, max_failed_last_hour=5)))
    assert verdict.level == Level.WARNING and verdict.exit_code == 3
    assert {r.code for r in verdict.reasons} == {"queue_above_threshold", "failures_last_hour"}
    assert decide(site_reasons(answer, Thresholds(max_queued=10_000, max_failed_last_hour=10))).level == Level.OK


def test_verdict_expected_sites_and_disabled(scenario: Scenario) -> None:
    healthy = _answer(scenario.steps["healthy"], "A")
    reasons = site_reasons(healthy, Thresholds(expected_sites=3, max_failed_last_hour=10**6))
    assert [(r.level, r.code) for r in reasons] == [(Level.CRITICAL, "too_few_sites")]
    off = SiteAnswer("A", healthy.endpoint, info={"enabled": False}, status={"Enabled": False})
    assert [r.code for r in site_reasons(off, Thresholds())] == ["replication_disabled"]


def test_verdict_is_online_false_names_the_peer(scenario: Scenario) -> None:
    healthy = _answer(scenario.steps["healthy"], "A")
    status = copy.deepcopy(dict(healthy.status or {}))
    peer = next(iter(status["Metrics"]["replMetrics"]))
    status["Metrics"]["replMetrics"][peer]["isOnline"] = False
    reasons = site_reasons(SiteAnswer("A", healthy.endpoint, info=healthy.info, status=status),
                           Thresholds(max_failed_last_hour=10**6))
    assert [(r.code, r.entity) for r in reasons] == [("peer_offline", scenario.names[peer])]



def test_objects_written_during_the_outage_reach_b_and_verify_says_so(scenario: Scenario, own_minio_pair: Any) -> None:
    """Status OK is about links and metadata; verify checks the objects themselves, version by version."""
    env = minio_settings_env(own_minio_pair)
    args = ["replication", "verify", "--json", "--bucket", scenario.bucket, "--bucket", scenario.bucket_while_down]
    runs: list[CliRun] = []

    def verified() -> bool:
        runs.append(drtool_process(args, env))
        return runs[-1].code == 0

    wait_for(verified, 300, "verify to find both buckets complete on B", interval=5)
    result = runs[-1].event("result")
    by_bucket = {b["bucket"]: b for b in result["buckets"]}
    assert by_bucket[scenario.bucket]["mode"] == "versions"
    assert by_bucket[scenario.bucket]["source_entries"] == by_bucket[scenario.bucket]["target_entries"] == 13
    assert by_bucket[scenario.bucket_while_down]["matched"] == 1
    # Any earlier, incomplete run named the missing objects and asked the source why. An object written into the
    # bucket made while B was down has no replication status at all: the bucket had no replication rule yet when
    # it was written, and MinIO copies it later as an "existing object".
    for run in runs[:-1]:
        for bucket in run.event("result")["buckets"]:
            allowed = {"PENDING", "FAILED", "COMPLETED", "COMPLETE"}
            if bucket["bucket"] == scenario.bucket_while_down:
                allowed.add(None)
            for example in bucket["examples"]:
                if example["kind"] == "missing":
                    assert example["replication_status"] in allowed, example


def test_noncurrent_expiry_rule_is_a_warning(scenario: Scenario, own_minio_pair: Any) -> None:
    """A lifecycle rule that expires old versions erases what older snapshots point to: drtool says so."""
    env = minio_settings_env(own_minio_pair, DRTOOL_REPLICATION_MAX_FAILED_LAST_HOUR="1000000")
    bucket = unique("lifecycle")
    a = own_minio_pair.a.s3_client()
    a.create_bucket(Bucket=bucket)
    a.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "trim-old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 7}}]})
    try:
        run = drtool_process(["replication", "status", "--json"], env)
        reasons = [r for r in run.event("result")["reasons"] if r["code"] == "noncurrent_expiry"]
        assert run.code == 3 and reasons
        assert reasons[0]["entity"] == bucket and "after 7 day(s)" in reasons[0]["message"]
    finally:
        a.delete_bucket_lifecycle(Bucket=bucket)
        a.delete_bucket(Bucket=bucket)


def test_replication_summary_for_snapshots(scenario: Scenario, own_minio_pair: Any,
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What `drtool snapshot create` records: the verdict and the lag a real canary measured."""
    from drtool.config import load_settings
    from drtool.ops.replication.summary import replication_summary

    monkeypatch.chdir(tmp_path)
    env = minio_settings_env(own_minio_pair, DRTOOL_REPLICATION_MAX_FAILED_LAST_HOUR="1000000",
                             DRTOOL_S3_BUCKET=scenario.bucket)
    # In another order the bucket made while B was down may still be healing: the summary records what status says.
    wait_for(lambda: drtool_process(["replication", "status", "--json"], env).code == 0, 300,
             "the MinIO pair to report OK", interval=3)
    summary = replication_summary(load_settings(environ=env))
    assert summary["verdict"] == "OK" and summary["exit_code"] == 0 and summary["reasons"] == [], summary["reasons"]
    assert summary["sites"] == ["A", "B"] and summary["probe_error"] is None
    assert 0 < summary["lag_seconds"] < 60 and summary["delete_lag_seconds"] is not None
    assert all_versions(own_minio_pair.a.s3_client(), scenario.bucket, ".drtool/") == []
