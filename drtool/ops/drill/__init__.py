"""`drtool drill`: a real restore from a snapshot into scratch targets, timed, verified, reported, then removed.

Modules, lowest first (each imports only those above it):
    options.py  the options, the outcome, the scratch targets and the state every phase reads and adds to
    history.py  the drill history in object storage (one record per drill) and the report files
    pinned.py   the source bucket with the chunk files the snapshot pinned read at their pinned versions
    scratch.py  preflight (checks before anything is created) and the removal of every scratch target
    restore.py  phases 1-2: snapshot_check and restore_database, the restored rows pointed at scratch collections
    rebuild.py  phase 3: rebuild_index of the datasets and annotation-reply apps into scratch collections
    verify.py   phase 4: verify --snapshot --annotations against the scratch targets
    run.py      `run_drill`: the phases in order, cleanup, the RPO, the record, its history entry and reports
"""
