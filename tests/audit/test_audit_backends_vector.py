"""`vector.count_short` against the real Weaviate and pgvector servers, not only Milvus Lite
(test_audit_checks_more.py): the collection-count check goes through the VectorStore port, so each backend's
`serves` and `count` are what decide the finding.

The world's datasets are re-labelled as indexed in the backend under test (`index_struct.type`), their collections
built in Dify's layout through drtool's own adapter (opened by the registry, as the audit opens it) with one
vector per text Dify indexes, then two objects of the second dataset are deleted in the store: exactly
`vector.count_short` for that dataset, with the numbers.

The file name sorts before test_audit_findings.py on purpose (as test_audit_checks_more.py's does): its site-down
test leaves failed replications in MinIO's last-hour counters, a `minio.replication_warning` that would be a second
finding here."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from drtool.adapters import vector_stores
from drtool.adapters.dify_metadata import DifyReader
from drtool.config import PostgresSettings, load_settings
from drtool.core import naming
from tests.audit.conftest import AuditWorld
from tests.audit.test_audit_findings import only
from tests.conformance.backends import BACKENDS, BackendSpec
from tests.stack.dify_seed import DEFAULT_DIMENSIONS

SPECS = [pytest.param(s, id=s.id) for s in BACKENDS if s.id in ("weaviate", "pgvector")]


@pytest.fixture(params=SPECS)
def backend(request: pytest.FixtureRequest) -> tuple[BackendSpec, dict[str, Any]]:
    spec: BackendSpec = request.param
    return spec, spec.flags(request)


def _delete_two(store: Any, spec: BackendSpec, name: str, rows: list[tuple[str, dict[str, Any], list[float]]]) -> None:
    """Delete two stored objects the way each store addresses them: Weaviate by its deterministic object UUID
    (object_key), pgvector by doc_id (its row id)."""
    gone = rows[:2]
    if spec.store == "weaviate":
        collection = store.client.collections.get(name)
        for text, meta, _ in gone:
            collection.data.delete_by_id(store.object_key(text, meta))
    else:
        assert store.delete_doc_ids(name, [meta["doc_id"] for _, meta, _ in gone]) == 2


@pytest.fixture
def built(world: AuditWorld, backend: tuple[BackendSpec, dict[str, Any]],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """Both high-quality datasets' collections in the backend, the second two objects short: (its id, texts)."""
    spec, flags = backend
    settings = load_settings(flags={"vector.store": spec.store, **flags}, environ={}, config_path=None)
    env = {f"DRTOOL_{k.replace('.', '_').upper()}": str(v) for k, v in flags.items()}
    for k, v in {**env, "DRTOOL_VECTOR_STORE": spec.store}.items():
        monkeypatch.setenv(k, v)
    pgs = world.env
    pg = PostgresSettings(host=pgs["DRTOOL_POSTGRES_HOST"], port=int(pgs["DRTOOL_POSTGRES_PORT"]),
                          user=pgs["DRTOOL_POSTGRES_USER"], password=pgs["DRTOOL_POSTGRES_PASSWORD"],
                          database=pgs["DRTOOL_POSTGRES_DATABASE"], sslmode="disable")
    with DifyReader(pg) as reader:
        datasets = [d for d in reader.datasets() if d.indexing_technique == "high_quality"]
        nodes = {d.id: list(reader.iter_index_nodes(d.id)) for d in datasets}
    assert len(datasets) == 2 and all(len(n) > 3 for n in nodes.values())
    rng = random.Random(15)
    store = vector_stores.open_store(settings)
    names: list[str] = []
    try:
        with world.db.connect(autocommit=True) as conn:
            for d in datasets:
                name = str(naming.from_index_struct(d.index_struct)[1])
                conn.execute("UPDATE datasets SET index_struct = %s WHERE id::text = %s",
                             (json.dumps({"type": spec.store, "vector_store": {"class_prefix": name}}), d.id))
                names.append(name)
                store.create(name, DEFAULT_DIMENSIONS)
                rows = [(n.text, {"doc_id": n.id, "doc_hash": n.doc_hash, "document_id": n.document_id,
                                  "dataset_id": d.id}, [rng.uniform(-1, 1) for _ in range(DEFAULT_DIMENSIONS)])
                        for n in nodes[d.id]]
                store.insert(name, rows)
                store.finish(name)
                assert store.count(name) == len(rows), "a complete index first"
        second = datasets[1]
        _delete_two(store, spec, names[1], [(n.text, {"doc_id": n.id, "doc_hash": n.doc_hash,
                                                      "document_id": n.document_id, "dataset_id": second.id}, [])
                                            for n in nodes[second.id]])
        assert store.count(names[1]) == len(nodes[second.id]) - 2, "the two objects are gone from the store"
        yield second.id, len(nodes[second.id])
    finally:
        for name in names:
            store.purge(name)
        store.close()


def test_two_deleted_objects_are_count_short(world: AuditWorld, built: tuple[str, int]) -> None:
    dataset_id, expected = built
    finding = only(world, "vector.count_short", "warning", "--no-probe")
    assert finding["target"] == dataset_id
    assert f"holds {expected - 2} vector(s); Postgres has {expected} " in str(finding["evidence"])
    assert "(2 missing)" in str(finding["evidence"])
    assert f"drtool verify --dataset {dataset_id}" in str(finding["fix"])
