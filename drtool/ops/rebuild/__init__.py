"""`drtool rebuild-index`: re-embed the chunk files in object storage into the collections Dify queries.

Modules, in the order a run uses them:
    options.py    what a run is asked (Options), what it answers per dataset (DatasetReport), its exit code
    progress.py   the Progress protocol a display implements, its event form (drill) and the silent default
    plan.py       a dataset's chunk file (found by HEAD, read as it streams), dataset folders, model names
    ledger.py     the checkpoint ledger in object storage that `--resume` finishes from
    rebuilder.py  Rebuilder: the run, its decisions (resume or start over, where to build)
    dry_run.py    `--dry-run`: what would be embedded and where it would build, nothing written
    build.py      the streaming build: cache lookups, embedding workers, ordered inserts, checkpoints
    gate.py       the verification gate: count, self-retrieval recall@k, Dify's filtered query
    switch.py     blue/green switch or rollback, and Dify's Redis indexing keys
    shards.py     the sharded rebuild: N workers into one build collection, then `--finalize`
    sidecar.py    drtool's own embedding cache next to the chunks (vectors by text digest)
    annotations.py  AnnotationRebuilder: the same run on the apps' annotation-reply files and collections
"""
