"""`drtool audit`: read the live systems and report what puts a recovery at risk (docs/audit.md lists every finding).

Modules, lowest first (each imports only those above it):
    context.py        the options, the audited bucket, `AuditRun` (settings, S3 clients, findings, `guarded`)
    checks_bucket.py  one bucket's settings: plain http, root credentials, write probe, versioning, Object Lock,
                      lifecycle, bucket policy, anonymous access
    checks_s3.py      one bucket's default encryption and KMS, the multipart probe, the credential's policy scope
    checks_tls.py     the TLS certificate of every https S3 endpoint
    checks_minio.py   the MinIO admin API: site replication, the audit log target, each site's `admin info`
    checks_storage.py free space on the MinIO drives
    checks_pg.py      Postgres: reachable, PITR, pg_dump's version, what the role may read, the plugin database
    checks_drtool.py  drtool's own state: newest snapshot, last drill, chunk files, rebuild model
    checks_cache.py   how much of a rebuild Dify's embedding cache would answer
    checks_vector.py  vector stores reachable, each dataset's collection there and as full as Postgres says
    runner.py         `run_audit`: which checks run, in which order
"""
