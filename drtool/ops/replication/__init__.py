"""`drtool replication status|verify|probe`: MinIO site replication checked, compared and timed.

Modules, lowest first (each imports only those above it):
- deadline.py: `--deadline`: one wall-clock limit per command, the `Progress` it reports, capped request timeouts.
- sites.py: the sites (`Site`, `parse_sites`, `configured_sites`) and a client, store or admin API for each one.
- status.py: `replication status`: every site asked, every replicated bucket checked, one verdict; its metrics.
- probe.py: `replication probe`: a canary's put and delete lag, its verdict against `--max-lag`, its metrics.
- summary.py: the replication verdict and lag `snapshot create` and the drill record (`replication_summary`).
- read_data.py: `replication verify --read-data`: a reproducible subset of versions read and hashed on both sites.
- verify.py: `replication verify`: two sites' listings merge-joined (or sampled), per bucket; its metrics.
"""
