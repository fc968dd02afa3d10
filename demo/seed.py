"""A Dify-shaped knowledge base made of real text that every Python installation carries offline.

The text is Python's own language reference as shipped in the standard library module ``pydoc_data.topics``
(what ``help("assert")`` prints), under the Python Software Foundation License (PSF-2.0, permissive). Each
pydoc topic becomes one uploaded document; its paragraphs are packed into segments the way Dify's automatic
splitter packs them (about 800 characters, never mid-paragraph unless a paragraph is longer than that).

Two datasets, both ``high_quality`` (embedded), as a stock Dify would hold them:
- "Python reference: statements", a ``text_model`` dataset: each segment is embedded;
- "Python reference: data model", a ``hierarchical_model`` (parent-child) dataset: each segment is a parent and
  its paragraphs are the child chunks that Dify embeds instead.

The rows follow tests/stack/dify_schema.sql (Dify's own columns); the raw files go into the bucket under the
keys ``upload_files`` names, so snapshots pin them and ``verify`` can resolve them.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

__all__ = ["LICENSE_NOTE", "SeededKB", "pydoc_documents", "seed_pydoc_knowledge_base"]

LICENSE_NOTE = (
    f"Python {sys.version_info.major}.{sys.version_info.minor} language reference (stdlib module "
    "pydoc_data.topics), Python Software Foundation License (PSF-2.0)"
)
MODEL = "all-MiniLM-L6-v2"
PROVIDER = "langgenius/huggingface_hub/huggingface_hub"
SEGMENT_CHARS = 800
MAX_TOPIC_CHARS = 12_000  # the longest topics (special names, compound statements) would dominate the demo
_NS = uuid.UUID("6f1c2a10-5b1e-4d0e-9a51-7d2c1f0a9e11")  # ids are uuid5 of names: the demo is reproducible


def _id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def _text_hash(text: str) -> str:
    """Dify's generate_text_hash (index_node_hash)."""
    return hashlib.sha256((text + "None").encode()).hexdigest()


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, with paragraphs longer than SEGMENT_CHARS cut at line ends."""
    out: list[str] = []
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        while len(para) > SEGMENT_CHARS:
            cut = para.rfind("\n", 0, SEGMENT_CHARS)
            cut = cut if cut > SEGMENT_CHARS // 4 else SEGMENT_CHARS
            out.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            out.append(para)
    return out


def _segments(text: str) -> list[list[str]]:
    """Paragraphs packed greedily into segments of at most SEGMENT_CHARS characters."""
    segments: list[list[str]] = []
    current: list[str] = []
    size = 0
    for para in _paragraphs(text):
        if current and size + len(para) + 2 > SEGMENT_CHARS:
            segments.append(current)
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        segments.append(current)
    return segments


@dataclass(frozen=True)
class Document:
    """One pydoc topic as an uploaded document: its file bytes and its segments (lists of paragraphs)."""

    topic: str
    body: bytes
    segments: list[list[str]]


def pydoc_documents(max_chunks: int) -> tuple[list[Document], list[Document]]:
    """The documents of the two datasets, stopping once about `max_chunks` embeddable chunks are reached."""
    from pydoc_data.topics import topics

    statements: list[Document] = []
    data_model: list[Document] = []
    seen: set[str] = set()
    chunks = 0
    for name in sorted(topics):
        text = topics[name]
        if len(text) > MAX_TOPIC_CHARS or chunks >= max_chunks:
            continue
        segments = [s for s in _segments(text) if "\n\n".join(s) not in seen]
        if not segments:
            continue
        # Statement topics are named after keywords; everything else describes the data model and library.
        hierarchical = not name.isalpha() or name in {"types", "numbers", "integers", "strings", "lists", "dict"}
        if hierarchical:
            segments = [[p for p in s if p not in seen] for s in segments]
            segments = [s for s in segments if s]
            seen.update(p for s in segments for p in s)
            chunks += sum(len(s) for s in segments)
        else:
            chunks += len(segments)
        seen.update("\n\n".join(s) for s in segments)
        doc = Document(name, text.encode(), segments)
        (data_model if hierarchical else statements).append(doc)
    return statements, data_model


@dataclass
class SeededKB:
    """What was seeded: ids, and how many vectors a complete index holds."""

    tenant_id: str
    dataset_ids: list[str]
    documents: int
    segments: int
    expected_vectors: int
    files: dict[str, bytes] = field(repr=False)


def _insert(conn: psycopg.Connection[Any], table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(map(sql.Placeholder, columns)),
    )
    with conn.cursor() as cur:
        cur.executemany(statement, rows)


def seed_pydoc_knowledge_base(conn: psycopg.Connection[Any], *, max_chunks: int = 160) -> SeededKB:
    """Insert the tenant, both datasets, their documents, segments, child chunks and files; commit."""
    statements, data_model = pydoc_documents(max_chunks)
    now = datetime.now().replace(microsecond=0)
    tenant, account, binding = _id("tenant"), _id("account"), _id("binding")
    rows: dict[str, list[dict[str, Any]]] = {}

    def add(table: str, **row: Any) -> None:
        rows.setdefault(table, []).append(row)

    add("tenants", id=tenant, name="Python docs team", plan="basic", status="normal",
        encrypt_public_key="-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
        created_at=now - timedelta(days=30), updated_at=now - timedelta(days=30))
    add("dataset_collection_bindings", id=binding, provider_name=PROVIDER, model_name=MODEL, type="dataset",
        collection_name=f"Vector_index_{binding.replace('-', '_')}_Node", created_at=now - timedelta(days=30))
    files: dict[str, bytes] = {}
    dataset_ids: list[str] = []
    n_docs = n_segments = n_vectors = 0
    for title, docs, hierarchical in (("Python reference: statements", statements, False),
                                      ("Python reference: data model", data_model, True)):
        dataset = _id("dataset", title)
        dataset_ids.append(dataset)
        doc_form = "hierarchical_model" if hierarchical else "text_model"
        collection = f"Vector_index_{dataset.replace('-', '_')}_Node"
        created = now - timedelta(days=20)
        add("datasets", id=dataset, tenant_id=tenant, name=title, description=f"{title} ({LICENSE_NOTE})",
            provider="vendor", permission="all_team_members", data_source_type="upload_file",
            indexing_technique="high_quality",
            index_struct=json.dumps({"type": "milvus", "vector_store": {"class_prefix": collection}}),
            created_by=account, created_at=created, updated_by=account, updated_at=created,
            embedding_model=MODEL, embedding_model_provider=PROVIDER, collection_binding_id=binding,
            retrieval_model=Jsonb({"search_method": "semantic_search", "reranking_enable": False, "top_k": 3,
                                   "score_threshold_enabled": False, "score_threshold": 0.5}),
            chunk_structure=doc_form, is_multimodal=False)
        rule = _id("rule", dataset)
        segmentation: dict[str, Any] = {"separator": "\n\n", "max_tokens": 200, "chunk_overlap": 0}
        rules: dict[str, Any] = {"pre_processing_rules": [], "segmentation": segmentation}
        if hierarchical:
            rules |= {"parent_mode": "paragraph", "subchunk_segmentation": {"separator": "\n\n", "max_tokens": 200}}
        add("dataset_process_rules", id=rule, dataset_id=dataset, mode="hierarchical" if hierarchical else "custom",
            rules=json.dumps(rules), created_by=account, created_at=created)
        for position, doc in enumerate(docs, start=1):
            document, upload = _id("document", dataset, doc.topic), _id("upload", dataset, doc.topic)
            key = f"upload_files/{tenant}/{upload}.txt"
            files[key] = doc.body
            stamp = created + timedelta(minutes=position)
            add("upload_files", id=upload, tenant_id=tenant, storage_type="s3", key=key, name=f"{doc.topic}.txt",
                size=len(doc.body), extension="txt", mime_type="text/plain", created_by_role="account",
                created_by=account, created_at=stamp, used=True, used_by=account, used_at=stamp,
                hash=hashlib.sha3_256(doc.body).hexdigest(), source_url="")
            words = len(doc.body.split())
            add("documents", id=document, tenant_id=tenant, dataset_id=dataset, position=position,
                data_source_type="upload_file", data_source_info=json.dumps({"upload_file_id": upload}),
                dataset_process_rule_id=rule, batch=stamp.strftime("%Y%m%d%H%M%S") + f"{position:06d}",
                name=f"{doc.topic}.txt", created_from="web", created_by=account, created_at=stamp,
                processing_started_at=stamp, word_count=words, parsing_completed_at=stamp,
                cleaning_completed_at=stamp, splitting_completed_at=stamp, tokens=len(doc.body) // 4,
                indexing_latency=1.0, completed_at=stamp + timedelta(seconds=5), is_paused=False,
                indexing_status="completed", enabled=True, archived=False, updated_at=stamp,
                doc_metadata=Jsonb({"language": "en", "source": "pydoc_data.topics", "topic": doc.topic}),
                doc_form=doc_form, doc_language="English")
            n_docs += 1
            for k, paragraphs in enumerate(doc.segments, start=1):
                content = "\n\n".join(paragraphs)
                segment = _id("segment", document, str(k))
                add("document_segments", id=segment, tenant_id=tenant, dataset_id=dataset, document_id=document,
                    position=k, content=content, word_count=len(content), tokens=max(1, len(content) // 4),
                    keywords=json.dumps([]), index_node_id=_id("node", segment),
                    index_node_hash=_text_hash(content), hit_count=0, enabled=True, status="completed",
                    created_by=account, created_at=stamp, indexing_at=stamp, completed_at=stamp,
                    updated_at=stamp)
                n_segments += 1
                if not hierarchical:
                    n_vectors += 1
                    continue
                for c, child in enumerate(paragraphs, start=1):
                    add("child_chunks", id=_id("child", segment, str(c)), tenant_id=tenant, dataset_id=dataset,
                        document_id=document, segment_id=segment, position=c, content=child,
                        word_count=len(child), index_node_id=_id("child-node", segment, str(c)),
                        index_node_hash=_text_hash(child), type="automatic", created_by=account,
                        created_at=stamp, updated_at=stamp, indexing_at=stamp, completed_at=stamp)
                    n_vectors += 1
    for table in ("tenants", "dataset_collection_bindings", "datasets", "dataset_process_rules", "upload_files",
                  "documents", "document_segments", "child_chunks"):
        _insert(conn, table, rows.get(table, []))
    conn.commit()
    return SeededKB(tenant, dataset_ids, n_docs, n_segments, n_vectors, files)
