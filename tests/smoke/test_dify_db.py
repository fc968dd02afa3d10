"""`dify_db` holds Dify's knowledge-base tables, and the seed summary describes exactly what is in them."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable

from tests.stack.dify_db import DifyDatabase
from tests.stack.dify_seed import SEEDED_TABLES, dify_text_hash

# What Dify embeds (api/commands/vector.py, dataset indexing): completed, enabled, unarchived documents and
# their completed, enabled segments; for hierarchical_model documents their child chunks instead.
INDEXED_NODES_SQL = """
SELECT s.dataset_id::text, s.index_node_id
  FROM document_segments s JOIN documents d ON d.id = s.document_id
 WHERE d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
   AND s.status = 'completed' AND s.enabled AND d.doc_form <> 'hierarchical_model'
UNION ALL
SELECT c.dataset_id::text, c.index_node_id
  FROM child_chunks c JOIN document_segments s ON s.id = c.segment_id JOIN documents d ON d.id = c.document_id
 WHERE d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
   AND s.status = 'completed' AND s.enabled AND d.doc_form = 'hierarchical_model'
"""


def test_every_table_has_the_rows_the_seed_reports(dify_db: DifyDatabase) -> None:
    assert dify_db.seed is not None
    with dify_db.connect() as conn:
        for table in SEEDED_TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None and row[0] == dify_db.seed.counts[table], table
    assert dify_db.seed.counts["child_chunks"] > 0
    assert dify_db.seed.counts["embeddings"] > 0


def test_column_types_are_dify_types(dify_db: DifyDatabase) -> None:
    with dify_db.connect() as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            ).fetchall()
        )
    assert types["datasets.id"] == "uuid"
    assert types["datasets.retrieval_model"] == "jsonb"
    assert types["datasets.index_struct"] == "text"
    assert types["documents.doc_metadata"] == "jsonb"
    assert types["documents.created_at"] == "timestamp without time zone"
    assert types["embeddings.embedding"] == "bytea"
    assert types["child_chunks.segment_id"] == "uuid"


def test_seed_expectations_match_what_dify_would_index(dify_db: DifyDatabase) -> None:
    seed = dify_db.seed
    assert seed is not None
    with dify_db.connect() as conn:
        indexed = conn.execute(INDEXED_NODES_SQL).fetchall()
        forms = dict(conn.execute("SELECT id::text, chunk_structure FROM datasets").fetchall())
        structs = dict(conn.execute("SELECT id::text, index_struct FROM datasets").fetchall())
        disabled = conn.execute("SELECT count(*) FROM document_segments WHERE NOT enabled").fetchone()
        archived = conn.execute("SELECT count(*) FROM documents WHERE archived").fetchone()
        qa = conn.execute("SELECT count(*) FROM documents WHERE doc_form = 'qa_model'").fetchone()
    for dataset in seed.datasets:
        assert {node for ds, node in indexed if ds == dataset.id} == set(dataset.index_nodes)
        assert json.loads(structs[dataset.id]) == {
            "type": "milvus",
            "vector_store": {"class_prefix": f"Vector_index_{dataset.id.replace('-', '_')}_Node"},
        }
    assert sorted(forms.values()) == ["hierarchical_model", "text_model"]
    assert disabled == (1,) and archived == (1,) and qa == (1,)
    assert len(indexed) == seed.expected_vectors


def test_object_keys_and_embedding_cache_follow_dify(dify_db: DifyDatabase) -> None:
    seed = dify_db.seed
    assert seed is not None
    with dify_db.connect() as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM upload_files").fetchall()]
        tool_keys = [k for (k,) in conn.execute("SELECT file_key FROM tool_files").fetchall()]
        cache = conn.execute("SELECT hash, embedding, model_name, provider_name FROM embeddings").fetchall()
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert any(k.startswith("image_files/") for k in keys)
    for key in keys:
        assert re.fullmatch(rf"(upload|image)_files/{seed.tenant_id}/{uuid}\.[a-z]+", key), key
    assert all(k.startswith(f"tools/{seed.tenant_id}/") for k in tool_keys)
    assert set(seed.files) == set(keys) | set(tool_keys)
    all_texts = {text for d in seed.datasets for text in d.index_nodes.values()}
    hashes = {dify_text_hash(text) for text in all_texts}
    for text_hash, blob, model, provider in cache:
        assert text_hash in hashes
        vector = pickle.loads(blob)  # our own fixture data, not untrusted input
        assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1.0) < 1e-6
        assert (model, provider) == (seed.embedding_model, seed.embedding_provider)


def test_factory_makes_unseeded_and_resized_databases(dify_db_factory: Callable[..., DifyDatabase]) -> None:
    empty = dify_db_factory(seed=False)
    bigger = dify_db_factory(datasets=3, documents_per_dataset=4, segments_per_document=2, seed=7)
    with empty.connect() as conn:
        assert conn.execute("SELECT count(*) FROM datasets").fetchone() == (0,)
    assert bigger.seed is not None and len(bigger.dataset_ids) == 3
    with bigger.connect() as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (12,)
