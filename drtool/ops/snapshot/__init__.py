"""Snapshots: taking them, reading them back, checking them, restoring them, and pruning them.

Modules, lowest first (each imports only those above it):
- destination.py: where snapshots live (`Destination`, `open_destination`, `destination_store`).
- listing.py: the source bucket's version listing, parallel by sub-prefix, under a request-rate cap.
- dump_upload.py: pg_dump's output streamed into a multipart upload (both dumps of a snapshot).
- pinning.py: the manifest: the listing streamed and the version current at the fence pinned (`write_manifest`).
- catalog.py: reading snapshots back: list, load, resolve, stream and decrypt artifacts, SHA256SUMS.
- auth.py: signing at create, and the signature and digest check every reader runs first.
- stores.py: extra stores (plugin storage elsewhere, archive storage): configured, pinned, read, checked.
- databases.py: the plugin daemon's database: settings, its dump at its own exported snapshot, restore target.
- preflight.py: what `snapshot create` checks before it writes anything.
- create.py: `drtool snapshot create` (`create_snapshot`).
- verify.py: `drtool snapshots verify`.
- retention.py: `snapshots prune`, `snapshots gc`, `snapshots unlock`.
- restore_result.py: what one restore reports (`RestoreResult`).
- restore_objects.py: restore, the objects of the main manifest.
- restore_database.py: restore, the database targets, their checks and pg_restore.
- restore_stores.py: restore, the extra stores (`--stores`).
- restore.py: `drtool restore` (`restore`): the order of the steps above, under the per-target locks.
"""
