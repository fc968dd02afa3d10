"""Turn MinIO's site-replication answers into one verdict with every reason listed (pure: no network).

Modules, lowest first (each imports only those above it):
- verdict.py: levels, reasons and the verdict (`Level`, `Reason`, `Verdict`, `decide`, `exit_code`); why each level.
- site_answers.py: what one site's admin API said (`SiteAnswer`, `Thresholds`) -> reasons (`site_reasons`,
  `offline_peers`).
- bucket_config.py: a replicated bucket's own configuration (`BucketConfig`) -> reasons (`bucket_config_reasons`).
- backlog.py: MinIO's replication diff counted per bucket (`Backlog`) -> reasons (`backlog_reasons`,
  `drop_healed_hourly_failures`).
"""
