"""What `drtool verify` reports: the kinds of break, the options, the findings with their first examples, the
verdicts per dataset and for the file references, and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from drtool.ops.verify.annotations import VERIFY_KINDS as ANNOTATION_KINDS

EXAMPLES_PER_KIND = 5

# Every kind of break, in the order the summary lists them.
KINDS: dict[str, str] = {
    "missing_object": "a Postgres row names an object key that does not exist",
    "missing_collection": "a high-quality dataset's vector collection does not exist",
    "missing_vector": "an indexed segment or child chunk has no vector",
    "orphan_vector": "a vector whose doc_id is no indexed segment or child chunk of its dataset",
    "duplicate_vector": "more than one vector for the same doc_id",
    "wrong_document_id": "a vector's metadata document_id differs from the segment's document",
    "wrong_dataset_id": "a vector's metadata dataset_id differs from the dataset that owns the collection",
    "chunk_file_missing": "no chunk file for the dataset in object storage (--deep)",
    "chunk_file_stale": "the chunk file disagrees with Postgres: ids missing or extra, text or owner differs (--deep)",
}
# Annotation-reply collections (issue #13): checked per enabled app by drtool.ops.verify.annotations.
KINDS.update(ANNOTATION_KINDS)


@dataclass
class VerifyOptions:
    datasets: tuple[str, ...] = ()
    deep: bool = False
    check_files: bool = True
    check_vectors: bool = True
    snapshot: str | None = None  # check file references at the versions this snapshot pinned ("latest" or an id)
    identity: str | None = None  # age identity file, for the manifest of an encrypted snapshot
    workers: int = 8
    # Annotation-reply collections of every enabled app. None: unless --dataset or --snapshot narrows the run
    # (drill, which verifies with --snapshot, asks for them explicitly since it rebuilds them too).
    annotations: bool | None = None

    @property
    def with_annotations(self) -> bool:
        if self.annotations is not None:
            return self.annotations
        return not self.datasets and not self.snapshot


@dataclass
class Findings:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, kind: str, **detail: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_PER_KIND:
            shown.append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class DatasetVerdict:
    dataset_id: str
    name: str
    indexing_technique: str | None
    backend: str | None = None
    collection: str | None = None
    indexed_chunks: int = 0
    vectors: int | None = None
    chunk_file: str | None = None
    chunk_file_lines: int | None = None
    breaks: dict[str, int] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.breaks.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class FilesVerdict:
    checked: int = 0
    missing: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    snapshot: str | None = None
    snapshot_authenticated: bool | None = None  # None: no --snapshot
    note: str = ""


@dataclass
class VerifyReport:
    datasets: list[DatasetVerdict]
    files: FilesVerdict
    findings: Findings
    deep: bool
    annotations: list[dict[str, Any]] = field(default_factory=list)  # one verdict per enabled app

    @property
    def ok(self) -> bool:
        return self.findings.total == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "deep": self.deep, "breaks": self.findings.total,
                "counts": {k: self.findings.counts[k] for k in KINDS if k in self.findings.counts},
                "examples": {k: self.findings.examples[k] for k in KINDS if k in self.findings.examples},
                "files": asdict(self.files), "datasets": [d.to_dict() for d in self.datasets],
                "annotations": self.annotations}
