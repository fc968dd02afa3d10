"""`drtool verify [--deep]`: referential closure across Postgres, object storage and the vector index.

Modules, lowest first (each imports only those above it):
    scanners.py     one vector-store connection per backend (`Scanners`), a dataset's collection (`collection_of`)
    annotations.py  annotation-reply collections: each enabled app's annotations in its collection, and its file
    report.py       the kinds of break, the options, the findings and verdicts, the report
    files.py        file references: every object key Postgres names exists (now, or pinned by a snapshot)
    datasets.py     per dataset: every indexed text has its vector, no orphans, and (--deep) the chunk file agrees
    closure.py      `verify`: the run, in one Postgres snapshot, in the order above
"""
