"""Planning inputs of a rebuild: the chunk file of a dataset (found by HEAD, read as it streams), the dataset
folders a listing shows, and whether Dify's model name matches ours. Shared by rebuild, verify and annotations."""

from __future__ import annotations

import io
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from drtool.core import naming
from drtool.core.chunks import CHUNK_FILE_NAMES, Chunk, Rejection, compression_for, iter_lines, parse_lines
from drtool.core.streams import CountingRawStream
from drtool.errors import NotFoundError


@dataclass
class Plan:
    dataset_id: str
    collection: str
    collection_source: str
    chunk_key: str
    chunk_etag: str
    chunk_size: int
    dify_model: str | None = None
    dify_provider: str | None = None


class ChunkFile(NamedTuple):
    """A chunk or annotation file as its HEAD shows it; `metadata` is what export-chunks stored with it."""

    key: str
    etag: str
    size: int
    metadata: dict[str, str]


def head_chunk_file(store: Any, folder: str) -> ChunkFile | None:
    """The file a reader takes in `folder`: the first of CHUNK_FILE_NAMES that exists. One lookup for datasets and
    annotation files, so rebuild, verify and export agree on which name shadows which."""
    for name in CHUNK_FILE_NAMES:
        head = store.head(f"{folder}{name}")
        if head is not None:
            return ChunkFile(f"{folder}{name}", str(head.get("ETag", "")).strip('"'),
                             int(head.get("ContentLength", 0)), head.get("Metadata") or {})
    return None


def find_chunk_file(store: Any, dataset_id: str) -> tuple[str, str, int]:
    found = head_chunk_file(store, f"datasets/{dataset_id}/processed/")
    if found is not None:
        return found.key, found.etag, found.size
    raise NotFoundError(f"no chunk file for dataset {dataset_id} at {store.url(f'datasets/{dataset_id}/processed/')}"
                        f"({', '.join(CHUNK_FILE_NAMES)})",
                        hint="check --dataset and s3.bucket/s3.key_prefix, or run drtool export-chunks first",
                        system="object store")


def read_chunk_file(store: Any, key: str, *, dataset_id: str, kind: str,
                    counter: list[CountingRawStream] | None = None) -> Generator[Chunk | Rejection, None, None]:
    """Each line of the file as a Chunk or a Rejection, read as it streams; CorruptStream stops it. The one reader
    of rebuild and verify, so both judge a file alike. `counter` receives the byte-counting body (progress);
    close() the generator to close the body when stopping early."""
    body = CountingRawStream(store.open(key))
    if counter is not None:
        counter.append(body)
    source = store.url(key)
    try:
        yield from parse_lines(iter_lines(io.BufferedReader(body, 1 << 20), compression_for(key), source), source,
                               dataset_id=dataset_id, kind=kind)
    finally:
        body.close()


def split_dify_ids(folders: Iterable[str]) -> tuple[list[str], list[str]]:
    """(Dify ids, other names) among folder names from a listing: a planted `datasets/../` is not a dataset."""
    names = sorted(d for d in folders if d)
    return [n for n in names if naming.is_dify_id(n)], [n for n in names if not naming.is_dify_id(n)]


def list_datasets(store: Any) -> tuple[list[str], list[str]]:
    return split_dify_ids(store.list_folders("datasets/"))


def same_model(dify_model: str, ours: str) -> bool:
    a, b = dify_model.strip().lower(), ours.strip().lower()
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)
