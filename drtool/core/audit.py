"""`drtool audit`: the findings model, the catalog of every finding id, the score and the renderings.

Pure: no network, no SDK. The catalog is the single list of finding ids; docs/audit.md documents each of them and
`tests/audit/test_audit_docs.py` keeps the two equal, so an id that alerting or a runbook relies on cannot change or
vanish silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from drtool.core.metrics import Metric
from drtool.core.terminal import one_line


class Severity(IntEnum):
    """Ordered, so that the worst finding decides the exit code."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Check:
    """What a finding id means: the system it belongs to, its severity and why it matters for a recovery."""

    id: str
    system: str
    severity: Severity
    title: str
    why: str


def _c(id: str, severity: Severity, title: str, why: str) -> Check:
    return Check(id, id.split(".", 1)[0], severity, title, why)


W, C, INFO = Severity.WARNING, Severity.CRITICAL, Severity.INFO

MIN_FREE_PERCENT = 10.0  # free share of a MinIO drive below which the audit warns (AuditOptions.min_free_percent)
TLS_EXPIRY_WARNING_DAYS = 14  # two weeks: enough for a certificate renewal that needs a person and a change window

CATALOG: dict[str, Check] = {c.id: c for c in (
    _c("s3.unreachable", C, "object storage does not answer",
       "nothing can be snapshotted or restored while the bucket cannot be read"),
    _c("s3.bucket_missing", C, "bucket does not exist",
       "the files, chunk files or restore points that should be there are not"),
    _c("s3.probe_failed", C, "a write/delete probe of a drtool-owned key failed",
       "snapshots, locks and drill records cannot be written: the next snapshot fails"),
    _c("s3.versioning_off", C, "bucket versioning is not Enabled",
       "snapshots pin object versions; without versioning an overwrite or delete destroys the pinned copy"),
    _c("s3.object_lock_off", W, "the snapshot bucket has no Object Lock",
       "a stolen key or a mistaken `rm -r` can delete every restore point (ransomware's first move)"),
    _c("s3.lifecycle_expires_restore_points", C, "lifecycle expires noncurrent versions before retention ends",
       "restore points older than the expiry reference object versions the server has already deleted"),
    _c("s3.anonymous_access", C, "the bucket can be read or listed without credentials",
       "user uploads and snapshots (the whole database) are readable by anyone who reaches the endpoint"),
    _c("s3.plain_http", W, "the S3 endpoint is plain http",
       "keys, signatures and the database dumps travel unencrypted and can be altered on the way"),
    _c("s3.tls_invalid", C, "the S3 endpoint's TLS certificate is expired or not valid",
       "clients that verify certificates (Dify's boto3, drtool, mc) refuse the endpoint: uploads, snapshots and "
       "restores stop"),
    _c("s3.tls_expiring", W, f"the S3 endpoint's TLS certificate expires within {TLS_EXPIRY_WARNING_DAYS} days",
       "when it expires every verifying client refuses the endpoint: uploads, snapshots and restores stop"),
    _c("s3.root_credentials", W, "drtool uses the root or default MinIO credentials",
       "a leak of drtool's key is a leak of the whole server, Object Lock governance and every bucket included"),
    _c("s3.policy_too_wide", W, "the credential's policy allows more than docs/iam.md lists",
       "a leaked or misused drtool key can do more than drtool needs: delete or overwrite other buckets' objects, "
       "change users or replication, and so take the restore points down with the data"),
    _c("s3.multipart_refused", C, "a multipart upload probe was refused",
       "drtool writes snapshot dumps and manifests as multipart uploads: they fail while a single PUT still "
       "works (Dify itself saves every file with one PutObject, so it has no multipart threshold to read; a "
       "refused abort only warns: interrupted uploads then leave their parts behind)"),
    _c("s3.encryption_off", INFO, "the bucket has no default server-side encryption",
       "info, not a warning: it does not stop a recovery (and a lost KMS key would), but the dumps and users' files "
       "lie in the clear on the drives and on every replica"),
    _c("minio.audit_log_off", W, "MinIO's audit log has no target",
       "without a record of every PUT, GET and DELETE, what was changed, read or destroyed before an incident "
       "cannot be established, nor which restore point predates it"),
    _c("minio.audit_log_offline", W, "MinIO's audit log target is offline",
       "audit records are not delivered while the target is down: the trail has a gap"),
    _c("minio.low_free_space", W, f"a MinIO drive has less free space than audit.min_free_percent "
       f"(default {MIN_FREE_PERCENT:g} %)",
       "a full drive makes MinIO refuse writes: Dify's uploads fail and the next snapshot cannot be written; "
       "versioned buckets grow with every overwrite, so it fills faster than the data seems to"),
    _c("minio.site_replication_off", W, "MinIO site replication is not enabled",
       "with one site, losing its disks loses the objects and the snapshots together"),
    _c("minio.site_offline", C, "a replication site is down or reported offline",
       "writes are not reaching the other site: its copy falls behind for as long as the site stays down"),
    _c("minio.replication_critical", C, "site replication is CRITICAL",
       "the other site may be missing buckets or versions a restore would need"),
    _c("minio.replication_warning", W, "site replication has warnings",
       "configuration drift or a backlog between sites makes the replica less complete than it looks"),
    _c("drtool.no_snapshot", C, "there is no committed snapshot",
       "there is nothing to restore the database from"),
    _c("drtool.snapshot_too_old", C, "the newest committed snapshot is older than the RPO target",
       "a restore now would lose more data than the recovery point objective allows"),
    _c("drtool.snapshot_unsigned", W, "the newest snapshot is not signed",
       "a restore cannot prove the snapshot was written by drtool and not swapped by whoever holds a bucket key"),
    _c("drtool.drill_overdue", W, "no successful restore drill recently",
       "an untested backup is a hope: only a drill proves restore works and measures the real RTO"),
    _c("drtool.chunks_missing", C, "a high-quality dataset has no chunk file",
       "its vector index cannot be rebuilt from object storage after the vector database is lost"),
    _c("drtool.embedding_cache_coverage", INFO, "share of the texts a rebuild finds in Dify's embedding cache",
       "every text not in the cache is sent to the embedding model during a rebuild: the model must be up and the "
       "rebuild takes longer (and costs more with a paid model) the lower the share"),
    _c("postgres.unreachable", C, "PostgreSQL does not answer",
       "snapshots cannot dump the database and the audit of datasets is skipped"),
    _c("postgres.no_pitr", INFO, "no WAL archiving: the RPO is the snapshot interval",
       "without archive_mode/WAL archiving, the newest restorable state is the newest logical snapshot"),
    _c("postgres.pg_dump_older", C, "pg_dump is older than the server",
       "snapshot create refuses to run (an older pg_dump cannot dump a newer server)"),
    _c("postgres.plugin_db_not_covered", W, "the Dify plugin daemon's database is not in the snapshots",
       "a Dify restored without it has no installed plugins, so no model provider: it can neither embed nor "
       "answer"),
    _c("postgres.dump_unreadable", C, "the configured role cannot read every table pg_dump dumps",
       "pg_dump stops at the first table it may not read (permission denied): every snapshot fails until it can"),
    _c("vector.unreachable", C, "the vector database does not answer",
       "Dify's retrieval is down and a rebuild has nowhere to write"),
    _c("vector.collection_missing", C, "a high-quality dataset's vector collection does not exist",
       "Dify's retrieval finds nothing in that dataset until its index is rebuilt"),
    _c("vector.count_short", W, "a collection holds fewer vectors than the dataset's indexed texts",
       "the missing chunks are invisible to retrieval; the index was restored from an older state or a rebuild "
       "or an indexing run did not finish"),
    _c("vector.embedding_mismatch", C, "the rebuild embedding model differs from a dataset's",
       "a rebuild would fill the index with vectors Dify's queries cannot match (other model or dimension)"),
    _c("audit.check_failed", W, "a check could not be completed",
       "what was not checked may be broken; the evidence says which check and why"),
)}

SYSTEMS = ("s3", "minio", "drtool", "postgres", "vector", "audit")


@dataclass(frozen=True)
class Finding:
    """One thing the audit saw that puts a recovery at risk: evidence (what was seen) and the exact fix."""

    id: str
    evidence: str
    fix: str
    target: str = ""  # which bucket, site, dataset... (several findings may share an id)
    severity: Severity | None = None  # None: the catalog's

    @property
    def check(self) -> Check:
        return CATALOG[self.id]

    @property
    def level(self) -> Severity:
        return self.check.severity if self.severity is None else self.severity

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {"id": self.id, "system": c.system, "severity": self.level.label, "target": self.target or None,
                "title": c.title, "evidence": self.evidence, "why": c.why, "fix": self.fix}


@dataclass
class AuditResult:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # "system: what" for every check that ran
    skipped: list[str] = field(default_factory=list)  # "system: why" for every check that did not
    gauges: list[Metric] = field(default_factory=list)  # measurements a check reports besides its findings

    def counts(self) -> dict[str, int]:
        out = {s.label: 0 for s in Severity}
        for f in self.findings:
            out[f.level.label] += 1
        return out

    @property
    def worst(self) -> Severity | None:
        return max((f.level for f in self.findings), default=None)

    @property
    def score(self) -> int:
        return score(self.findings)

    @property
    def exit_code(self) -> int:
        """0 when nothing is at warning or above, 3 for warnings, 4 for a critical finding."""
        worst = self.worst
        return 4 if worst == Severity.CRITICAL else 3 if worst == Severity.WARNING else 0

    def ordered(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SYSTEMS.index(f.check.system), -f.level, f.id, f.target))

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "counts": self.counts(), "findings": [f.to_dict() for f in self.ordered()],
                "checked": list(self.checked), "skipped": list(self.skipped)}


def score(findings: Iterable[Finding]) -> int:
    """100 minus 25 per critical and 10 per warning finding, at least 0: a number to trend, not a verdict (the
    exit code is the verdict)."""
    penalty = sum(25 if f.level == Severity.CRITICAL else 10 if f.level == Severity.WARNING else 0 for f in findings)
    return max(0, 100 - penalty)


def render_table(result: AuditResult, *, fix_hints: bool = False) -> list[str]:
    """Findings grouped by system, worst first, then the score: what a person reads in a terminal or cron mail."""
    lines: list[str] = []
    ordered = result.ordered()
    for system in SYSTEMS:
        mine = [f for f in ordered if f.check.system == system]
        if not mine:
            continue
        lines.append(f"{system}")
        for f in mine:
            where = f" [{one_line(f.target)}]" if f.target else ""
            lines.append(f"  {f.level.label.upper():<8} {f.id}{where}: {f.check.title}")
            lines.append(f"           seen: {one_line(f.evidence)}")
            if fix_hints:
                lines.append(f"           fix:  {one_line(f.fix)}")
    if not ordered:
        lines.append("no findings")
    counts = result.counts()
    lines.append(f"score {result.score}/100: {counts['critical']} critical, {counts['warning']} warning, "
                 f"{counts['info']} info; {len(result.checked)} checks run, {len(result.skipped)} skipped")
    for s in result.skipped:
        lines.append(f"  skipped {one_line(s)}")
    return lines


def _md(value: Any) -> str:
    return one_line(str(value).replace("\n", " ")).replace("|", "\\|")


def render_markdown(result: AuditResult, *, when: str) -> str:
    """The report for a ticket, like the drill report: verdict and score first, then each finding with its fix."""
    counts = result.counts()
    verdict = {4: "CRITICAL", 3: "WARNING", 0: "OK"}[result.exit_code]
    out = [f"# drtool audit {when}: {verdict}", "",
           "| | |", "|---|---|", f"| score | {result.score}/100 |",
           f"| critical | {counts['critical']} |", f"| warning | {counts['warning']} |", f"| info | {counts['info']} |",
           f"| exit code | {result.exit_code} |", ""]
    out += ["## Findings", ""]
    if not result.findings:
        out += ["None.", ""]
    out += ["| severity | id | target | seen |", "|---|---|---|---|"] if result.findings else []
    for f in result.ordered():
        out.append(f"| {f.level.label} | `{f.id}` | {_md(f.target)} | {_md(f.evidence)} |")
    out.append("")
    for f in result.ordered():
        out += [f"### `{f.id}` {_md(f.target)}", "", f"- **{f.level.label}**: {_md(f.check.title)}",
                f"- seen: {_md(f.evidence)}", f"- why it matters: {_md(f.check.why)}", f"- fix: `{_md(f.fix)}`", ""]
    out += ["## Checks run", ""] + [f"- {_md(c)}" for c in result.checked] + [""]
    if result.skipped:
        out += ["## Skipped", ""] + [f"- {_md(s)}" for s in result.skipped] + [""]
    return "\n".join(out)


def metrics(result: AuditResult) -> list[Metric]:
    """One gauge per severity count, one per catalog id (0 when absent, so an alert can clear), and the score."""
    out = [Metric("drtool_audit_findings", "Findings of the last audit by severity.", float(n), {"severity": sev})
           for sev, n in result.counts().items()]
    per_id: dict[str, int] = dict.fromkeys(CATALOG, 0)
    for f in result.findings:
        per_id[f.id] += 1
    out += [Metric("drtool_audit_finding", "Findings of the last audit with this id (0: not found).", float(n),
                   {"id": fid, "severity": CATALOG[fid].severity.label}) for fid, n in per_id.items()]
    out.append(Metric("drtool_audit_score", "Score of the last audit (100: no warning or critical finding).",
                      float(result.score)))
    return out + list(result.gauges)


def quote_ident(name: str) -> str:
    """A Postgres identifier as SQL text, quoted unless it is a plain lower-case name (names come from the catalog,
    so they may hold quotes or spaces: the fix must be pasteable, not injectable)."""
    if name and name[0].isalpha() and all(ch.islower() or ch.isdigit() or ch == "_" for ch in name) \
            and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def pg_grant_fix(role: str, schemas: list[str], no_usage: list[str]) -> str:
    """The GRANTs that let `role` dump these schemas, to run as the tables' owner or a superuser; plus the default
    privileges, since a table created tomorrow by the same owner would otherwise break the snapshot again."""
    r = quote_ident(role)
    parts = [f"GRANT USAGE ON SCHEMA {quote_ident(s)} TO {r};" for s in no_usage]
    for s in schemas:
        q = quote_ident(s)
        parts += [f"GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO {r};",
                  f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {q} TO {r};",
                  f"ALTER DEFAULT PRIVILEGES FOR ROLE <owner> IN SCHEMA {q} GRANT SELECT ON TABLES TO {r};"]
    return ("as the tables' owner or a superuser: " + " ".join(parts) +
            f" (PostgreSQL 14+: GRANT pg_read_all_data TO {r};)")


@dataclass(frozen=True)
class CertFacts:
    """What a TLS certificate says about itself, for the evidence of a finding."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime


def cert_facts(der: bytes) -> CertFacts:
    """Parse the server's leaf certificate (DER, as `getpeercert(binary_form=True)` returns it)."""
    # cryptography's x509 adds tens of ms to every audit; only the TLS check parses a certificate
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return CertFacts(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.not_valid_before_utc,
                     cert.not_valid_after_utc)


def tls_verdict(facts: CertFacts, now: datetime, verify_error: str | None,
                warn_days: float = TLS_EXPIRY_WARNING_DAYS) -> tuple[str, str] | None:
    """(finding id, evidence) for a certificate, or None when it is fine.

    Expired, not yet valid, or refused by the verification drtool's own clients do (chain, name) is
    `s3.tls_invalid`; valid but ending within `warn_days` is `s3.tls_expiring`. The dates are checked even when
    verification is off: other clients (Dify's) still verify.
    """
    about = f"certificate {facts.subject} (issuer {facts.issuer}) valid until {facts.not_after.isoformat()}"
    left = (facts.not_after - now).total_seconds() / 86400
    if left < 0:
        return "s3.tls_invalid", f"{about}: expired {-left:.1f} day(s) ago"
    if now < facts.not_before:
        return "s3.tls_invalid", f"{about}: not valid before {facts.not_before.isoformat()}"
    if verify_error:
        return "s3.tls_invalid", f"{about}: verification failed: {verify_error}"
    if left < warn_days:
        return "s3.tls_expiring", f"{about}: expires in {left:.1f} day(s) (warning below {warn_days:g})"
    return None


@dataclass(frozen=True)
class DriveSpace:
    """One drive of a MinIO server as `admin info` reports it."""

    server: str
    path: str
    total: int
    available: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.available / self.total if self.total else 0.0


def low_free_drives(info: dict[str, Any], min_free_percent: float = MIN_FREE_PERCENT) -> list[DriveSpace]:
    """The online drives in MinIO's `admin info` answer (servers[].drives[]: totalspace, availspace, state) whose
    free share is below `min_free_percent`, fullest first. Per drive, not summed: an erasure set stops taking
    writes when its drives are full, however empty the other pools are. Offline drives and drives that report no
    size are left out (they are not a space problem, and the site-replication and healing checks see them)."""
    low: list[DriveSpace] = []
    for server in info.get("servers") or []:
        if not isinstance(server, dict):
            continue
        for drive in server.get("drives") or server.get("disks") or []:
            if not isinstance(drive, dict) or drive.get("state", "ok") != "ok":
                continue
            try:
                total, avail = int(drive.get("totalspace") or 0), int(drive.get("availspace") or 0)
            except (TypeError, ValueError):
                continue
            if total <= 0:
                continue
            d = DriveSpace(str(server.get("endpoint") or "?"), str(drive.get("path") or drive.get("endpoint") or "?"),
                           total, avail)
            if d.free_percent < min_free_percent:
                low.append(d)
    return sorted(low, key=lambda d: (d.free_percent, d.server, d.path))


def finding_event(f: Finding) -> dict[str, Any]:
    return {"event": "audit.finding", **f.to_dict()}
