"""`drtool audit`: read the live systems and report what puts a recovery at risk.

Read-only by design: the only write is a probe of one drtool-owned key (`<snapshot.prefix>/audit/probe`) in each
bucket, deleted again by version, because "can drtool still write here?" cannot be answered by reading. Each check
catches its own failures and turns them into an `audit.check_failed` finding, so one system that is down never hides
what the audit could say about the others.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from drtool.adapters import s3 as s3a
from drtool.config import S3Settings, Settings
from drtool.core.audit import MIN_FREE_PERCENT, AuditResult, Finding, Severity
from drtool.core.retention import Policy
from drtool.errors import AuthError, ConfigError, DrtoolError, NotFoundError, UnavailableError
from drtool.ops import (
    audit_checks_cache,
    audit_checks_pg,
    audit_checks_s3,
    audit_checks_storage,
    audit_checks_tls,
    audit_checks_vector,
)

log = logging.getLogger("drtool.audit")

DEFAULT_KEYS = {"minioadmin"}  # MinIO's documented default root user


@dataclass(frozen=True)
class AuditOptions:
    rpo_hours: float = 26.0  # nightly snapshots plus slack
    drill_max_age_days: float = 14.0  # weekly drills, one may be missed
    probe: bool = True
    min_free_percent: float = MIN_FREE_PERCENT  # a MinIO drive with less free space is a warning


@dataclass
class AuditedBucket:
    role: str  # "dify", "snapshot" or "dify+snapshot"
    s3: S3Settings

    @property
    def name(self) -> str:
        return str(self.s3.bucket)


class AuditRun:
    def __init__(self, settings: Settings, options: AuditOptions) -> None:
        self.settings = settings
        self.options = options
        self.result = AuditResult()
        self.now = datetime.now(UTC)
        self._clients: dict[tuple[Any, ...], Any] = {}  # S3 clients take ~0.25 s each to make: one per key
        self._dest: Any = None

    def client(self, s3: S3Settings, *, anonymous: bool = False) -> Any:
        key = (s3.endpoint, s3.region, s3.address_style, s3.verify_tls, s3.ca_bundle, anonymous,
               None if anonymous else (s3.access_key, s3.secret_key, s3.use_instance_credentials))
        if key not in self._clients:
            self._clients[key] = s3a.make_anonymous_client(s3) if anonymous else s3a.make_client(s3, max_attempts=2)
        return self._clients[key]

    def destination(self) -> Any:
        from drtool.ops.snapshot.destination import Destination, destination_settings

        if self._dest is None:
            s3 = destination_settings(self.settings)
            self._dest = Destination(s3=s3, client=self.client(s3), bucket=str(s3.bucket),
                                     prefix=self.settings.snapshot.prefix)
        return self._dest

    def add(self, fid: str, evidence: str, fix: str, target: str = "", severity: Severity | None = None) -> None:
        self.result.findings.append(Finding(fid, evidence, fix, target, severity))

    def guarded(self, what: str, fn: Callable[[], None]) -> None:
        """Run one check; a failure becomes a finding that names the check, never the end of the audit."""
        try:
            fn()
            self.result.checked.append(what)
        except Exception as exc:
            message = str(exc) if isinstance(exc, DrtoolError) else f"{type(exc).__name__}: {exc}"
            hint = getattr(exc, "hint", None)
            self.add("audit.check_failed", f"{what}: {message}", hint or "fix the cause and run drtool audit again",
                     target=what)

    # --- object storage -----------------------------------------------------------------------------------------
    def buckets(self) -> list[AuditedBucket]:
        from drtool.ops.snapshot.destination import destination_settings

        out: list[AuditedBucket] = []
        s3 = self.settings.s3
        if s3.bucket:
            out.append(AuditedBucket("dify", s3))
        else:
            self.result.skipped.append("s3: s3.bucket is not set")
        try:
            dest = destination_settings(self.settings)
        except DrtoolError:
            return out
        if out and dest.bucket == s3.bucket and (dest.endpoint or "") == (s3.endpoint or ""):
            out[0] = AuditedBucket("dify+snapshot", s3)
        else:
            out.append(AuditedBucket("snapshot", dest))
        return out

    def audit_bucket(self, b: AuditedBucket) -> None:
        target = f"{b.role} bucket {b.name}"
        self.tls_check(b, target)
        client = self.client(b.s3)
        try:
            client.head_bucket(Bucket=b.name)
        except Exception as exc:
            err = s3a.translate_error(exc, what=f"bucket {b.name}", endpoint=b.s3.endpoint)
            if isinstance(err, NotFoundError) or s3a.http_status(exc) == 404:
                self.add("s3.bucket_missing", f"HEAD bucket {b.name}: 404 on {b.s3.endpoint or 'AWS S3'}",
                         f"mc mb --with-versioning ALIAS/{b.name}" +
                         (" --with-lock" if "snapshot" in b.role else ""), target)
            elif isinstance(err, AuthError):
                self.add("audit.check_failed", f"HEAD bucket {b.name}: {err}", err.hint or "check the key's policy",
                         target)
            else:
                self.add("s3.unreachable", f"HEAD bucket {b.name}: {err}",
                         err.hint or "check s3.endpoint and that the server runs", target)
            return
        self.result.checked.append(f"s3: {target} exists")
        self.credential_checks(b, target)
        self.guarded(f"s3: {target} credential policy", lambda: audit_checks_s3.policy_scope(self, b, target))
        if self.options.probe:
            self.guarded(f"s3: {target} write/delete probe", lambda: self.probe(b, client, target))
            self.guarded(f"s3: {target} multipart probe",
                         lambda: audit_checks_s3.multipart_probe(self, b, client, target))
        self.guarded(f"s3: {target} versioning", lambda: self.versioning(b, client, target))
        if "snapshot" in b.role:
            self.guarded(f"s3: {target} object lock", lambda: self.object_lock(b, client, target))
        self.guarded(f"s3: {target} lifecycle", lambda: self.lifecycle(b, client, target))
        self.guarded(f"s3: {target} bucket policy", lambda: self.policy(b, client, target))
        self.guarded(f"s3: {target} anonymous list", lambda: self.anonymous_list(b, target))
        self.guarded(f"s3: {target} encryption", lambda: audit_checks_s3.encryption(self, b, client, target))

    def tls_check(self, b: AuditedBucket, target: str) -> None:
        endpoint = b.s3.endpoint or ""
        if endpoint.lower().startswith("http://"):
            host = (urlsplit(endpoint).hostname or "").lower()
            loopback = host == "localhost" or host.startswith("127.") or host == "::1"
            self.add("s3.plain_http", f"endpoint {endpoint}" + (" (loopback: info only)" if loopback else ""),
                     "serve MinIO over TLS (certs in ~/.minio/certs or a TLS proxy), then set s3.endpoint / "
                     "snapshot.endpoint to https://... (Dify: S3_ENDPOINT=https://...)", target,
                     Severity.INFO if loopback else None)

    def credential_checks(self, b: AuditedBucket, target: str) -> None:
        endpoint = b.s3.endpoint or ""
        key = b.s3.access_key or ""
        if key in DEFAULT_KEYS:
            self.add("s3.root_credentials", f"access key is the default {key!r}", _user_fix(b), target)
        elif key and endpoint and self.is_root(b):
            self.add("s3.root_credentials", "the MinIO admin API knows this access key as the root user, no IAM user",
                     _user_fix(b), target)

    def is_root(self, b: AuditedBucket) -> bool:
        """MinIO answers `user-info` for an IAM user (a user may read its own) and `XMinioAdminNoSuchUser` for the
        root user, which is not an IAM user; anything else (not MinIO, no admin API) is not evidence of root."""
        from drtool.adapters.minio_admin import MinioAdmin
        from drtool.ops.replication.sites import tls_verify

        admin = MinioAdmin("s3", str(b.s3.endpoint), b.s3.access_key, b.s3.secret_key, region=b.s3.region,
                           verify=tls_verify(self.settings), timeout=10)
        try:
            resp = admin.request("GET", "/minio/admin/v3/user-info", {"accessKey": str(b.s3.access_key)},
                                 what="user info")
        except DrtoolError:
            return False
        finally:
            admin.close()
        return resp.status == 404 and b"XMinioAdminNoSuchUser" in resp.body

    def probe(self, b: AuditedBucket, client: Any, target: str) -> None:
        """Write, read back and delete (by version) one drtool-owned key; while it exists, ask for it without
        credentials: a bucket that serves it to anyone serves every upload and every dump too."""
        key = f"{self.settings.snapshot.prefix.strip('/')}/audit/probe"
        body = f"drtool audit probe {uuid.uuid4()}".encode()
        try:
            put = client.put_object(Bucket=b.name, Key=key, Body=body)
            got = s3a.get_bytes(client, b.name, key)
            if got != body:
                raise ValueError("the probe read back different bytes")
        except Exception as exc:
            err = exc if isinstance(exc, ValueError) else s3a.translate_error(exc, what=f"s3://{b.name}/{key}",
                                                                              endpoint=b.s3.endpoint)
            self.add("s3.probe_failed", f"put/get s3://{b.name}/{key}: {err}",
                     f"grant s3:PutObject, s3:GetObject, s3:DeleteObject on arn:aws:s3:::{b.name}/* "
                     "(docs/iam.md)", target)
            return
        try:
            if self.anonymous_get(b, key):
                self.add("s3.anonymous_access", f"unauthenticated GET s3://{b.name}/{key} returned the object",
                         _anon_fix(b), target)
        finally:
            try:
                version = put.get("VersionId")
                if version and version != "null":
                    client.delete_object(Bucket=b.name, Key=key, VersionId=version)
                else:
                    client.delete_object(Bucket=b.name, Key=key)
            except Exception as exc:
                if self.locked_by_default(client, b):
                    # a default retention locks the probe's version too: a delete marker is all that can be
                    # done, and the locked version expires with the bucket's retention (what Object Lock is for)
                    client.delete_object(Bucket=b.name, Key=key)
                    self.result.checked.append(f"s3: {target} probe version kept by the default retention")
                    return
                err = s3a.translate_error(exc, what=f"delete s3://{b.name}/{key}", endpoint=b.s3.endpoint)
                self.add("s3.probe_failed", f"delete s3://{b.name}/{key}: {err}",
                         f"grant s3:DeleteObject and s3:DeleteObjectVersion on arn:aws:s3:::{b.name}/*", target)

    @staticmethod
    def locked_by_default(client: Any, b: AuditedBucket) -> bool:
        try:
            config = s3a.object_lock_configuration(client, b.name)
        except Exception:
            return False
        return bool(config and (config.get("Rule") or {}).get("DefaultRetention"))

    def _anon_client(self, b: AuditedBucket) -> Any:
        return self.client(b.s3, anonymous=True)

    def anonymous_get(self, b: AuditedBucket, key: str) -> bool:
        try:
            self._anon_client(b).get_object(Bucket=b.name, Key=key)["Body"].read()
            return True
        except Exception:
            return False

    def anonymous_list(self, b: AuditedBucket, target: str) -> None:
        try:
            self._anon_client(b).list_objects_v2(Bucket=b.name, MaxKeys=1)
        except Exception:
            return
        self.add("s3.anonymous_access", f"unauthenticated LIST s3://{b.name} succeeded", _anon_fix(b), target)

    def versioning(self, b: AuditedBucket, client: Any, target: str) -> None:
        status = s3a.bucket_versioning(client, b.name)
        if status != "Enabled":
            self.add("s3.versioning_off", f"versioning of {b.name} is {status}",
                     f"mc version enable ALIAS/{b.name}", target)

    def object_lock(self, b: AuditedBucket, client: Any, target: str) -> None:
        if s3a.object_lock_configuration(client, b.name) is None:
            self.add("s3.object_lock_off", f"GetObjectLockConfiguration of {b.name}: not enabled",
                     "Object Lock can only be enabled when a bucket is created: mc mb --with-lock ALIAS/NEW-BUCKET, "
                     "then set snapshot.bucket=NEW-BUCKET and snapshot.object_lock_days (e.g. 14)", target)

    def lifecycle(self, b: AuditedBucket, client: Any, target: str) -> None:
        snap = self.settings.snapshot
        policy = Policy(keep_last=snap.keep_last, keep_daily=snap.keep_daily, keep_weekly=snap.keep_weekly,
                        keep_monthly=snap.keep_monthly)
        horizon = policy.horizon_days
        for rule_id, days in s3a.noncurrent_expiry_days(client, b.name):
            if days < horizon:
                self.add("s3.lifecycle_expires_restore_points",
                         f"rule {rule_id!r} expires noncurrent versions after {days} day(s); snapshot retention "
                         f"keeps restore points up to {horizon} day(s) (keep_daily={snap.keep_daily}, "
                         f"keep_weekly={snap.keep_weekly}, keep_monthly={snap.keep_monthly})",
                         f"mc ilm rule edit ALIAS/{b.name} --id {rule_id} --noncurrent-expire-days {horizon} "
                         f"(or remove it: mc ilm rule rm ALIAS/{b.name} --id {rule_id})", target)

    def policy(self, b: AuditedBucket, client: Any, target: str) -> None:
        text = s3a.bucket_policy(client, b.name)
        if text is None:
            return
        doc = json.loads(text)
        statements = doc.get("Statement") or []
        if isinstance(statements, dict):
            statements = [statements]
        for st in statements:
            if not isinstance(st, dict) or st.get("Effect") != "Allow":
                continue
            principal = st.get("Principal")
            aws = principal.get("AWS") if isinstance(principal, dict) else principal
            values = aws if isinstance(aws, list) else [aws]
            if "*" in values:
                actions = st.get("Action")
                self.add("s3.anonymous_access", f"bucket policy of {b.name} allows principal '*' {actions}",
                         _anon_fix(b), target)
                return

    # --- MinIO admin ----------------------------------------------------------------------------------------------
    def minio_server_infos(self, what: str) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(site, `admin info` answer) of every MinIO site of replication.sites, or of s3.endpoint when none is
        configured; a site without the admin API or down is recorded as skipped for `what` (a site that is down
        is the site-replication check's finding)."""
        from drtool.adapters.minio_admin import NotMinioError
        from drtool.ops.replication.sites import Site, admin_for, configured_sites

        try:
            sites = configured_sites(self.settings)
        except ConfigError:
            sites = []
        if not sites and self.settings.s3.endpoint:
            sites = [Site("s3", self.settings.s3.endpoint.rstrip("/"))]
        if not sites:
            self.result.skipped.append(f"minio: {what} (no replication.sites and no s3.endpoint)")
            return
        for site in sites:
            admin = admin_for(self.settings, site)
            try:
                info = admin.server_info()
            except NotMinioError:
                self.result.skipped.append(f"minio: {what} of {site.endpoint} (no MinIO admin API)")
                continue
            except UnavailableError:
                self.result.skipped.append(f"minio: {what} of {site.endpoint} (unreachable)")
                continue
            finally:
                admin.close()
            yield site, info

    def minio_audit_log(self) -> None:
        """Every MinIO site (or s3.endpoint) sends its audit log somewhere, and that target is online."""
        for site, info in self.minio_server_infos("audit log"):
            targets: dict[str, str] = {}
            for entry in (info.get("services") or {}).get("audit") or []:
                for name, state in (entry or {}).items():
                    targets[str(name)] = str((state or {}).get("status", "unknown"))
            fix = ("mc admin config set ALIAS audit_webhook enable=on endpoint=https://<collector>/ (or "
                   "audit_kafka); MINIO_AUDIT_WEBHOOK_ENABLE_<ID>=on in the server's environment")
            if not targets:
                self.add("minio.audit_log_off", f"admin info of {site.endpoint}: no audit target", fix,
                         site.endpoint)
            elif not any(status == "online" for status in targets.values()):
                listed = ", ".join(f"{name} {status}" for name, status in sorted(targets.items()))
                self.add("minio.audit_log_offline", f"admin info of {site.endpoint}: {listed}",
                         "bring the audit target's endpoint back (check `mc admin info --json` services.audit)",
                         site.endpoint)

    def minio(self) -> None:
        from drtool.adapters.minio_admin import NotMinioError
        from drtool.ops.replication.sites import Site, admin_for, configured_sites
        from drtool.ops.replication.status import replication_status, thresholds_from

        try:
            sites = configured_sites(self.settings)
        except ConfigError:  # none configured: ask s3.endpoint whether it replicates at all
            sites = []
        if not sites:
            endpoint = self.settings.s3.endpoint
            if not endpoint:
                self.result.skipped.append("minio: no replication.sites and no s3.endpoint")
                return
            admin = admin_for(self.settings, Site("s3", endpoint.rstrip("/")))
            try:
                info = admin.info()
            except NotMinioError:
                self.result.skipped.append("minio: s3.endpoint has no MinIO admin API")
                return
            finally:
                admin.close()
            if not info.get("enabled"):
                self.add("minio.site_replication_off", f"site-replication/info of {endpoint}: enabled=false",
                         "mc admin replicate add ALIAS-A ALIAS-B (a second, empty MinIO with the same root "
                         "credentials), then set replication.sites=A=https://...,B=https://...", endpoint)
            self.result.checked.append("minio: site replication enabled")
            return
        report = replication_status(self.settings, sites, thresholds_from(self.settings), check_buckets=False)
        self.result.checked.append(f"minio: site replication of {len(sites)} site(s)")
        from drtool.core.replication_verdict.site_answers import offline_peers
        from drtool.core.replication_verdict.verdict import Level

        down = [f"site {a.alias} ({a.endpoint}) unreachable" for a in report.answers if a.error is not None]
        for a in report.answers:
            if a.error is None and a.status:
                down += [f"site {a.alias} reports peer {dep or '?'} offline" for dep, _ in offline_peers(a.status)]
        reasons = "; ".join(f"{r.level.label}: {r.message}" for r in report.verdict.reasons)
        if down:
            self.add("minio.site_offline", "; ".join(down) + (f" ({reasons})" if reasons else ""),
                     "start the site again (systemctl start minio / docker compose up -d minio) and watch "
                     "drtool replication status until it is OK", ", ".join(s.alias for s in sites))
        elif report.verdict.level == Level.CRITICAL:
            self.add("minio.replication_critical", reasons, "drtool replication status (each reason names the fix)",
                     ", ".join(s.alias for s in sites))
        elif report.verdict.level == Level.WARNING:
            self.add("minio.replication_warning", reasons, "drtool replication status (each reason names the fix)",
                     ", ".join(s.alias for s in sites))

    # --- drtool's own state -----------------------------------------------------------------------------------------
    def snapshots(self) -> None:
        from drtool.ops.snapshot.catalog import list_snapshots

        dest = self.destination()
        infos = list_snapshots(dest)
        self.result.checked.append("drtool: newest snapshot")
        if not infos:
            self.add("drtool.no_snapshot", f"no committed snapshot under {dest.url}/snapshots/",
                     "drtool snapshot create (and schedule it: playbooks/scheduling/crontab)", dest.url)
            return
        newest = max(infos, key=lambda i: (i.fence, i.id))
        age_h = (self.now - newest.fence).total_seconds() / 3600
        if age_h > self.options.rpo_hours:
            self.add("drtool.snapshot_too_old",
                     f"newest snapshot {newest.id} has fence {newest.fence.isoformat()}, {age_h:.1f} h old; RPO "
                     f"target {self.options.rpo_hours:g} h",
                     "drtool snapshot create now; check the snapshot cron job's mail and "
                     "drtool_snapshot_create_last_success_timestamp_seconds", newest.id)
        if newest.signed_by is None:
            self.add("drtool.snapshot_unsigned", f"COMMITTED of {newest.id} carries no signature",
                     "drtool keys generate --out /etc/drtool/signing.key; set snapshot.signing_key_file and "
                     "snapshot.trusted_keys (docs/snapshots.md)", newest.id)

    def drills(self) -> None:
        from drtool.ops.drill import load_history

        dest = self.destination()
        history = load_history(dest, 200)
        self.result.checked.append("drtool: last successful drill")
        passed = [r for r in history if r.get("outcome") == "passed"]
        limit = self.options.drill_max_age_days
        fix = "drtool drill (weekly; playbooks/scheduling/crontab)"
        if not passed:
            self.add("drtool.drill_overdue", f"no passed drill among the {len(history)} record(s) under "
                                             f"{dest.url}/drills/", fix, dest.url)
            return
        newest = max(passed, key=lambda r: str(r.get("finished_at") or r.get("started_at")))
        when = datetime.fromisoformat(str(newest.get("finished_at") or newest.get("started_at")))
        age_d = (self.now - when).total_seconds() / 86400
        if age_d > limit:
            self.add("drtool.drill_overdue", f"last passed drill {newest.get('drill_id')} ended {when.isoformat()}, "
                                             f"{age_d:.1f} days ago; limit {limit:g} days", fix, dest.url)

    def datasets(self) -> None:
        """Chunk files of high-quality datasets, and the rebuild model against each dataset's model."""
        from drtool.adapters.dify_metadata import DifyReader
        from drtool.core.chunks import CHUNK_FILE_NAMES

        with DifyReader(self.settings.postgres) as reader:
            rows = [d for d in reader.datasets() if d.indexing_technique == "high_quality"]
        self.result.checked.append(f"postgres: {len(rows)} high-quality dataset(s) read")
        if self.settings.s3.bucket:
            store = s3a.BucketStore(self.settings.s3, client=self.client(self.settings.s3))
            for d in rows:
                keys = [f"datasets/{d.id}/processed/{name}" for name in CHUNK_FILE_NAMES]
                if not any(store.head(k) is not None for k in keys):
                    self.add("drtool.chunks_missing", f"none of {', '.join(store.url(k) for k in keys[:1])}[.gz|.zst] "
                                                      f"exists for dataset {d.name!r}",
                             f"drtool export-chunks --dataset {d.id}", d.id)
            self.result.checked.append("drtool: chunk files of high-quality datasets")
        model = self.settings.embedding.model
        if model:
            short = model.rstrip("/").rsplit("/", 1)[-1]
            for d in rows:
                theirs = (d.embedding_model or "").rstrip("/").rsplit("/", 1)[-1]
                if theirs and theirs != short:
                    self.add("vector.embedding_mismatch",
                             f"dataset {d.name!r} was embedded with {d.embedding_model!r} ({d.embedding_provider}); "
                             f"embedding.model for rebuilds is {model!r}",
                             f"set embedding.model={d.embedding_model} (DRTOOL_EMBEDDING_MODEL) and its provider "
                             "settings, or rebuild that dataset with its own --model", d.id)
            self.result.checked.append("vector: rebuild model matches datasets")
        else:
            self.result.skipped.append("vector: embedding.model is not set, model match not checked")

    # --- Postgres ---------------------------------------------------------------------------------------------------
    def postgres(self) -> bool:
        from drtool.adapters import postgres as pga

        pg = self.settings.postgres
        where = f"{pg.host}:{pg.port}/{pg.database}"
        try:
            with pga.connect(pg, autocommit=True) as conn:
                wal = str(conn.execute("SHOW wal_level").fetchone()[0])  # type: ignore[index]
                archive = str(conn.execute("SHOW archive_mode").fetchone()[0])  # type: ignore[index]
                num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
                text = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        except Exception as exc:
            err = exc if isinstance(exc, DrtoolError) else pga.translate_error(exc, pg)
            self.add("postgres.unreachable", f"{where}: {err}", err.hint or "check postgres.* settings", where)
            return False
        self.result.checked.append("postgres: reachable")
        if archive == "off" or wal == "minimal":
            self.add("postgres.no_pitr", f"wal_level={wal}, archive_mode={archive}: restores go back to the newest "
                                         "snapshot only",
                     "for point-in-time recovery: wal_level=replica, archive_mode=on and an archive_command "
                     "(e.g. WAL-G, pgBackRest); else snapshot more often", where)
        major = pga.server_major_of(num)

        def pg_dump() -> None:
            path = pga.find_pg_tool("pg_dump", server_major=major, bin_dir=self.settings.snapshot.pg_bin_dir)
            tool_major, tool_text = pga.tool_version(path)
            if tool_major < major:
                self.add("postgres.pg_dump_older", f"{path} is {tool_text}; the server is {text}",
                         f"apt-get install postgresql-client-{major} (or set snapshot.pg_bin_dir to its bin folder)",
                         where)

        self.guarded("postgres: pg_dump version", pg_dump)
        return True

    # --- vector store -----------------------------------------------------------------------------------------------
    def vector(self) -> None:
        from drtool.adapters import vector_stores

        backends = vector_stores.to_check(self.settings)
        if not backends:
            self.result.skipped.append("vector: no vector store configured")
            return
        for backend in backends:
            where = backend.location(self.settings) or backend.name
            try:
                backend.check(self.settings)
            except Exception as exc:
                hint = getattr(exc, "hint", None) or backend.hint
                self.add("vector.unreachable", f"{backend.name} at {where}: {exc}", hint, where)
                continue
            self.result.checked.append(f"vector: {backend.name} reachable")

    def run(self) -> AuditResult:
        self.guarded("s3: TLS certificates", lambda: audit_checks_tls.certificates(self))
        for b in self.buckets():
            self.guarded(f"s3: {b.role} bucket {b.name}", lambda b=b: self.audit_bucket(b))  # type: ignore[misc]
        self.guarded("minio: site replication", self.minio)
        self.guarded("minio: audit log", self.minio_audit_log)
        self.guarded("minio: free space", lambda: audit_checks_storage.free_space(self))
        if self.settings.s3.bucket or self.settings.snapshot.bucket:
            self.guarded("drtool: snapshots", self.snapshots)
            self.guarded("drtool: drills", self.drills)
        pg_up = self.postgres()
        if pg_up:
            self.guarded("postgres: tables readable by the role", lambda: audit_checks_pg.dump_readable(self))
            self.guarded("drtool: datasets", self.datasets)
            self.guarded("postgres: plugin database", lambda: audit_checks_pg.plugin_database(self))
            self.guarded("drtool: embedding cache coverage", lambda: audit_checks_cache.embedding_cache(self))
        else:
            self.result.skipped.append("drtool: chunk files and models not checked (postgres unreachable)")
        self.guarded("vector: reachable", self.vector)
        if pg_up:
            self.guarded("vector: collection counts", lambda: audit_checks_vector.index_counts(self))
        return self.result


def _user_fix(b: AuditedBucket) -> str:
    return ("mc admin user add ALIAS drtool-backup <secret>; mc admin policy attach ALIAS <policy> --user "
            "drtool-backup (docs/iam.md); then set " +
            ("snapshot.access_key/secret_key" if b.role == "snapshot" else "s3.access_key/secret_key"))


def _anon_fix(b: AuditedBucket) -> str:
    return f"mc anonymous set none ALIAS/{b.name}"


def run_audit(settings: Settings, options: AuditOptions) -> AuditResult:
    return AuditRun(settings, options).run()
