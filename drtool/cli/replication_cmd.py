"""`drtool replication status|verify|probe`."""

from __future__ import annotations

import secrets
from typing import Any

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core.replication_verdict.site_answers import offline_peers
from drtool.core.replication_verdict.verdict import exit_code
from drtool.core.terminal import one_line
from drtool.errors import ConfigError, UsageError
from drtool.ops.replication.deadline import Progress, deadline_seconds, run_with_deadline, within_deadline
from drtool.ops.replication.probe import probe_metrics, probe_verdict, run_probe
from drtool.ops.replication.sites import Site, configured_sites, parse_sites
from drtool.ops.replication.status import StatusReport, replication_status, status_metrics, thresholds_from
from drtool.ops.replication.verify import VerifyReport, default_buckets, verify, verify_metrics

_SITE_HELP = "A site as ALIAS=URL (repeatable); default: replication.sites."
_DEADLINE_HELP = ("Hard wall-clock limit for the whole command, retries and clean-up included, e.g. 90s, 5m, 1h; "
                  "0 for none. At the limit: exit 1, naming what was and was not checked. Default: {}.")


@click.group("replication")
def replication_group() -> None:
    """Check MinIO site replication, verify that two sites hold the same objects, measure replication lag.

    Exit codes: 0 OK, 3 WARNING, 4 CRITICAL (or objects missing), 12 credentials refused.
    """


def _site_flags(sites: tuple[str, ...]) -> dict[str, Any]:
    return {"replication.sites": sites} if sites else {}


def _pick(settings_sites: list[Site], value: str | None, default_index: int, what: str) -> Site:
    """--source/--target: an alias of a configured site, ALIAS=URL, or a bare URL."""
    if value is None:
        if len(settings_sites) <= default_index:
            raise ConfigError(f"no {what} site: configure two sites or pass --{what} ALIAS=URL",
                              hint="e.g. --site a=http://minio-a:9000 --site b=http://minio-b:9000")
        return settings_sites[default_index]
    if "=" in value:
        return parse_sites([value])[0]
    if value.startswith(("http://", "https://")):
        return Site(what, value.rstrip("/"))
    for site in settings_sites:
        if site.alias == value:
            return site
    known = ", ".join(s.alias for s in settings_sites) or "none configured"
    raise UsageError(f"unknown site '{value}' for --{what}", hint=f"known sites: {known}; or pass ALIAS=URL")


def _first(items: list[str], limit: int = 3) -> str:
    """The first few reasons on one line (the exit line under -q); the rest are counted, not dropped silently."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


# --- status --------------------------------------------------------------------------------------------------

def render_status(app: App, report: StatusReport) -> None:
    for answer in report.answers:
        health = " ".join(f"{p.rsplit('/', 1)[-1]}={c if c is not None else '-'}" for p, c in answer.health.items())
        app.echo(f"site {answer.alias}  {answer.endpoint}  health: {health}")
        if answer.error is not None:
            app.echo(f"  UNREACHABLE: {one_line(answer.error)}")
            app.echo()
            continue
        status = answer.status or {}
        if not status.get("Enabled"):
            app.echo("  site replication: disabled")
            app.echo()
            continue
        sites = status.get("Sites") or {}
        me = (answer.info or {}).get("name")
        offline = {dep for dep, _ in offline_peers(status)}
        metrics = status.get("Metrics") or {}
        queued = ((metrics.get("queued") or {}).get("curr") or {})
        app.echo(f"  site replication: enabled as '{me}', {len(sites)} sites, queued "
                 f"{int(queued.get('count') or 0)} objects / {int(queued.get('bytes') or 0)} bytes")
        header = f"  {'peer':<12} {'endpoint':<32} {'online':<7} {'replicated':>10} {'failed 1h':>9} {'latency':>9}"
        app.echo(header)
        repl = metrics.get("replMetrics") or {}
        for dep, peer in sorted(sites.items(), key=lambda kv: kv[1].get("name", "")):
            if peer.get("name") == me:
                continue
            m = repl.get(dep) or {}
            failed = int(((m.get("failed") or {}).get("lastHour") or {}).get("count") or 0)
            latency = (m.get("latency") or {}).get("avg")
            lat = f"{latency / 1e6:.0f} ms" if latency else "-"
            app.echo(f"  {one_line(peer.get('name', dep)):<12} {one_line(peer.get('endpoint', '')):<32} "
                     f"{'no' if dep in offline else 'yes':<7} {int(m.get('replicatedCount') or 0):>10} "
                     f"{failed:>9} {lat:>9}")
        names = report.bucket_lists.get(answer.alias)
        if names is not None:
            configs = [b for b in report.buckets if b.site == answer.alias]
            versioned = sum(1 for b in configs if b.versioning == "Enabled")
            app.echo(f"  buckets: {len(names)} ({versioned} versioned)")
            for b in configs:
                rules = [r for r in b.rules if r.get("Status") == "Enabled"]
                peers = ", ".join(sorted(b.peers.values())) or "-"
                expiry = [r for r in b.lifecycle_rules
                          if r.get("Status") == "Enabled" and r.get("NoncurrentVersionExpiration")]
                app.echo(f"    {b.bucket}: versioning {b.versioning or 'off'}, {len(rules)} enabled replication "
                         f"rule(s) for peer(s) {peers}" + (", expires noncurrent versions" if expiry else ""))
        app.echo()
    for backlog in report.backlogs:
        if not backlog.empty:
            info = backlog.to_dict(report.checked_at)
            oldest = info["oldest_failed_age_seconds"] or info["oldest_pending_age_seconds"]
            app.echo(f"backlog site {backlog.site} bucket {one_line(backlog.bucket)}: {backlog.failed} failed, "
                     f"{backlog.pending} pending" + (f", oldest {oldest:.0f} s" if oldest is not None else ""))
    verdict = report.verdict
    app.echo(f"verdict: {verdict.level.label}")
    for reason in verdict.reasons:
        app.echo(f"  {reason.level.label:<8} {one_line(reason.message)}")


@replication_group.command("status")
@global_options
@click.option("--site", "sites", multiple=True, metavar="ALIAS=URL", help=_SITE_HELP)
@click.option("--expected-sites", type=click.IntRange(min=1), default=None,
              help="Sites the replication must span; fewer is CRITICAL (replication.expected_sites).")
@click.option("--max-queued", type=click.IntRange(min=0), default=None,
              help="Queued objects per site above which the verdict is WARNING (replication.max_queued).")
@click.option("--max-failed-last-hour", type=click.IntRange(min=0), default=None,
              help="Failed replications per peer in the last hour above which it is WARNING.")
@click.option("--max-failed-age", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="A version that failed to replicate and was written longer ago than this is CRITICAL "
                   "(replication.max_failed_age, default 900).")
@click.option("--no-backlog", is_flag=True,
              help="Do not read each bucket's replication backlog (it walks the bucket on the server).")
@click.option("--no-bucket-check", is_flag=True,
              help="Skip the per-bucket check (versioning, one replication rule per peer, lifecycle, backlog).")
@click.option("--deadline", default=None, metavar="DURATION", help=_DEADLINE_HELP.format("120s"))
@metrics_option
@pass_app
def status(app: App, sites: tuple[str, ...], expected_sites: int | None, max_queued: int | None,
           max_failed_last_hour: int | None, max_failed_age: int | None, no_backlog: bool, no_bucket_check: bool,
           deadline: str | None) -> int | Outcome:
    """Ask every MinIO site for its site-replication status and give one verdict with every reason.

    CRITICAL (exit 4): replication disabled, a site unreachable or reported offline, fewer sites than expected, a
    bucket missing on a site, a bucket without versioning or without its replication rule to a peer.
    A version that failed to replicate longer ago than --max-failed-age is CRITICAL too.
    WARNING (exit 3): configuration mismatches (bucket, policy, user, group, ILM rule), a queue above
    --max-queued, versions waiting in a bucket's replication backlog, failures in the last hour while the
    backlog is not empty, a lifecycle rule that expires noncurrent versions.
    """
    limit = deadline_seconds(deadline, "status")
    overrides: dict[str, Any] = {**_site_flags(sites), "replication.expected_sites": expected_sites,
                                 "replication.max_queued": max_queued,
                                 "replication.max_failed_last_hour": max_failed_last_hour,
                                 "replication.max_failed_age": max_failed_age}
    if no_backlog:
        overrides["replication.backlog_check"] = False
    settings = within_deadline(app.settings(overrides), limit)
    progress = Progress()
    report = run_with_deadline(
        lambda: replication_status(settings, configured_sites(settings), thresholds_from(settings),
                                   check_buckets=not no_bucket_check, progress=progress),
        limit, progress, "replication status")
    app.add_metrics(status_metrics(report))
    app.result(report.to_dict(), lambda: render_status(app, report))
    verdict = report.verdict
    # Reasons come worst first; a level is named where it changes: "CRITICAL: a; b; WARNING: c".
    reasons = [(f"{r.level.label}: " if i == 0 or r.level != verdict.reasons[i - 1].level else "") + r.message
               for i, r in enumerate(verdict.reasons)]
    return conclude(verdict.exit_code, _first(reasons) or verdict.level.label)


# --- verify --------------------------------------------------------------------------------------------------

def _render_verify(app: App, report: VerifyReport) -> None:
    app.echo(f"verify {report.source.alias} ({report.source.endpoint}) -> {report.target.alias} "
             f"({report.target.endpoint}), settle window {report.settle_seconds} s")
    for b in report.buckets:
        if b.problem:
            app.echo(f"bucket {b.bucket}: {one_line(b.problem)}")
            continue
        c = b.counts
        what = f"sampled {b.sampled} of {c.source_entries}" if b.sampled is not None else \
            f"source {c.source_entries}, target {c.target_entries}"
        app.echo(f"bucket {b.bucket} ({b.mode}): {what}; matched {c.matched}, missing {c.missing}, "
                 f"extra {c.extra}, mismatched {c.mismatch}, unsettled {c.unsettled}")
        if b.sampled and b.sound:
            bound = b.to_dict()["bad_fraction_upper_bound_95"]
            app.echo(f"  with 95% confidence, at most {bound:.2%} of the bucket is missing or different on the target")
        elif b.sampled:
            app.echo(f"  {b.unproven} sampled object(s) were answered by site {report.target.alias} without proof it "
                     "holds them itself (not a replica, not written there): no estimate for this bucket")
            for item in b.unproven_examples:
                app.echo(f"  unproven {one_line(item['key'])} [target: {one_line(str(item['target_status']))}, "
                         f"source: {one_line(str(item['source_status']))}]")
        if b.read_data is not None:
            rd = b.read_data
            app.echo(f"  read data {rd.percent:g}% (seed {rd.seed}): {rd.read} of {rd.selected} versions read on "
                     f"both sites, {rd.bytes_read} bytes; unreadable {rd.unreadable}, differing {rd.differing}")
            for item in rd.problems:
                app.echo(f"  {item['kind']:<10} {one_line(item['key'])}: {one_line(item['detail'])}")
        for diff in b.examples:
            entry = diff.source or diff.target
            vid = f" version {entry.version_id}" if entry and entry.version_id not in (None, "null") else ""
            extra = f" ({', '.join(diff.fields)})" if diff.fields else ""
            rs = b.replication_status.get(f"{diff.key}@{entry.version_id}" if entry and entry.version_id
                                          else diff.key)
            state = f" [x-amz-replication-status: {rs}]" if rs else ""
            app.echo(f"  {diff.kind:<8} {one_line(diff.key)}{one_line(vid)}{extra}{one_line(state)}")
        shown = len(b.examples)
        total = c.missing + c.extra + c.mismatch
        if total > shown:
            app.echo(f"  ... {total - shown} more (use --json for all)")
    verdict = {0: "OK", 3: "WARNING (extra objects on the target)", 4: "CRITICAL"}[report.exit_code]
    app.echo(f"verdict: {verdict}")


@replication_group.command("verify")
@global_options
@click.option("--site", "sites", multiple=True, metavar="ALIAS=URL", help=_SITE_HELP)
@click.option("--source", default=None, metavar="SITE",
              help="Site that should be complete: an alias, ALIAS=URL or a URL (default: the first site).")
@click.option("--target", default=None, metavar="SITE",
              help="Site it replicates to (default: the second site).")
@click.option("--bucket", "buckets", multiple=True, help="Bucket to compare (repeatable; default: s3.bucket, "
              "else every bucket on the source).")
@click.option("--prefix", default="", help="Only keys under this prefix.")
@click.option("--mode", type=click.Choice(["auto", "versions", "latest"]), default="auto", show_default=True,
              help="versions: every version by version id; latest: each key's current object; auto: versions when "
                   "both buckets are versioned.")
@click.option("--ignore-version-id", is_flag=True,
              help="In latest mode, do not compare version ids (replication that does not keep them, e.g. "
                   "weed filer.sync).")
@click.option("--settle", "settle", type=click.IntRange(min=0), default=None,
              help="Ignore differences younger than this many seconds (replication.settle_seconds).")
@click.option("--examples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Differences to show per bucket (--json streams all of them).")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Check N random source objects with HEAD on the target instead of listing the target.")
@click.option("--read-data", "read_data", type=click.FloatRange(min=0, max=100, min_open=True), default=None,
              metavar="PCT", help="Also download PCT percent of the versions from both sites and compare their "
                                  "hashes with each other and with the ETag (restic's --read-data-subset).")
@click.option("--seed", type=int, default=None,
              help="Seed of --sample and --read-data: the same seed picks the same objects (default: random, "
                   "reported).")
@click.option("--max-rate", type=click.FloatRange(min=1), default=None, metavar="BYTES",
              help="Limit --read-data to this many bytes per second, both sites together.")
@click.option("--deadline", default=None, metavar="DURATION", help=_DEADLINE_HELP.format("6h"))
@metrics_option
@pass_app
def verify_cmd(app: App, sites: tuple[str, ...], source: str | None, target: str | None, buckets: tuple[str, ...],
               prefix: str, mode: str, ignore_version_id: bool, settle: int | None, examples: int,
               sample: int | None, read_data: float | None, seed: int | None, max_rate: float | None,
               deadline: str | None) -> int | Outcome:
    """Compare what two S3 endpoints hold, bucket by bucket: missing, extra and mismatched objects.

    Works on any S3 endpoints (MinIO, SeaweedFS, AWS S3). Exit 4 when an object is missing or different on the
    target after the settle window (also: a sampled answer not proven to come from the target itself, a version
    unreadable or different under --read-data), 3 when the target only has extra objects, 0 otherwise.
    """
    limit = deadline_seconds(deadline, "verify")
    settings = within_deadline(app.settings({**_site_flags(sites), "replication.settle_seconds": settle}), limit)
    known = parse_sites(settings.replication.sites)
    src = _pick(known, source, 0, "source")
    dst = _pick(known, target, 1, "target")
    if (src.endpoint, src.alias) == (dst.endpoint, dst.alias):
        raise UsageError("source and target are the same site")
    if max_rate is not None and read_data is None:
        raise UsageError("--max-rate limits --read-data; give --read-data PCT too")
    if seed is None and read_data is not None:
        seed = secrets.randbelow(2**31)  # reported, so the same subset can be read again

    def stream(bucket: str, diff: Any) -> None:
        app.emit({"event": "replication.difference", "bucket": bucket, **diff.to_dict()})

    progress = Progress()

    def work() -> VerifyReport:
        names = list(buckets) or default_buckets(settings, src)
        return verify(settings, src, dst, names, prefix=prefix, mode=mode,
                      settle_seconds=settings.replication.settle_seconds, examples=examples, sample=sample,
                      check_version_id=False if ignore_version_id else None,
                      on_difference=stream if app.json_mode else None, seed=seed, read_data=read_data,
                      max_rate=max_rate, progress=progress, emit=app.emit)

    progress.plan(f"bucket {b}" for b in buckets)
    report = run_with_deadline(work, limit, progress, f"replication verify {src.alias} -> {dst.alias}")
    app.add_metrics(verify_metrics(report))
    app.result(report.to_dict(), lambda: _render_verify(app, report))
    return conclude(report.exit_code, _verify_reason(report))


def _verify_reason(report: VerifyReport) -> str:
    """Per bucket, what made the verdict: the problem, or the counts of differences."""
    parts = []
    for b in report.buckets:
        if b.problem:
            parts.append(f"bucket {b.bucket}: {b.problem}")
            continue
        c = b.counts
        found = [f"{n} {kind}" for kind, n in (("missing", c.missing), ("mismatched", c.mismatch),
                                                ("extra", c.extra), ("unproven", b.unproven)) if n]
        if b.read_data is not None and b.read_data.failed:
            found.append(f"{b.read_data.unreadable} unreadable, {b.read_data.differing} differing under --read-data")
        if found:
            parts.append(f"bucket {b.bucket}: {', '.join(found)}")
    label = {3: "WARNING", 4: "CRITICAL"}.get(report.exit_code, "")
    return f"{label}: {report.source.alias} -> {report.target.alias}: {_first(parts)}"


# --- probe ---------------------------------------------------------------------------------------------------

@replication_group.command("probe")
@global_options
@click.option("--site", "sites", multiple=True, metavar="ALIAS=URL", help=_SITE_HELP)
@click.option("--source", default=None, metavar="SITE", help="Site to write the canary on (default: the first).")
@click.option("--target", default=None, metavar="SITE", help="Site to watch (default: the second).")
@click.option("--bucket", default=None, help="Bucket for the canary (default: s3.bucket).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to wait for the canary and for its delete (replication.probe_timeout).")
@click.option("--max-lag", type=click.FloatRange(min=0), default=None,
              help="Lag in seconds above which the result is WARNING (exit 3): a replication-lag SLO.")
@click.option("--deadline", default=None, metavar="DURATION",
              help=_DEADLINE_HELP.format("twice --timeout plus 30 s"))
@metrics_option
@pass_app
def probe_cmd(app: App, sites: tuple[str, ...], source: str | None, target: str | None, bucket: str | None,
              timeout: float | None, max_lag: float | None, deadline: str | None) -> int | Outcome:
    """Write a canary object on one site and measure how long until the other shows it, and its delete.

    The canary (under .drtool/replication-probe/) is removed from both sites whatever happens. Exit 0 within
    --max-lag, 3 above it, 4 when the canary or its delete did not arrive before --timeout.
    """
    settings = app.settings(_site_flags(sites))
    wait = timeout if timeout is not None else float(settings.replication.probe_timeout)
    limit = deadline_seconds(deadline, "probe", 2 * wait + 30)
    if limit > 0:
        wait = min(wait, limit * 0.4)  # both waits and the clean-up fit inside the deadline
    settings = within_deadline(app.settings(_site_flags(sites)), limit)
    known = parse_sites(settings.replication.sites)
    src = _pick(known, source, 0, "source")
    dst = _pick(known, target, 1, "target")
    bucket = bucket or settings.s3.bucket
    if not bucket:
        raise ConfigError("no bucket for the canary", hint="pass --bucket or set s3.bucket")
    progress = Progress()
    result = run_with_deadline(lambda: run_probe(settings, src, dst, bucket=bucket, timeout=wait, progress=progress),
                               limit, progress, f"replication probe {src.alias} -> {dst.alias}")
    level, why = probe_verdict(result, max_lag)
    payload = {**result.to_dict(), "verdict": level.label, "max_lag_seconds": max_lag}
    app.add_metrics(probe_metrics(result))

    def render() -> None:
        lag = f"{result.put_lag:.2f} s" if result.put_lag is not None else "not seen"
        dlag = f"{result.delete_lag:.2f} s" if result.delete_lag is not None else "not seen"
        app.echo(f"probe {src.alias} -> {dst.alias} bucket {bucket}: put lag {lag}, delete lag {dlag}")
        if result.error:
            app.echo(f"  {one_line(result.error)}")
        app.echo("  canary removed from both sites" if result.cleaned_up
                 else f"  could not check or remove the canary on: {', '.join(result.leftovers or [])}")
        app.echo(f"verdict: {level.label}")

    app.result(payload, render)
    return conclude(exit_code(level),
                    f"{level.label}: {src.alias} -> {dst.alias} bucket {bucket}: {why or 'canary not seen in time'}")
