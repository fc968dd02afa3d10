"""export-chunks encodes rows in batches straight from a `COPY ... TO STDOUT` (drtool/ops/export/chunks.py,
encode_node_rows): its bytes must stay exactly those of the reference path, `ChunkFileWriter.write(node_record(node))`
over `DifyReader.iter_index_nodes`, for hostile texts too (COPY's text escaping, JSON escaping, blank texts)."""

from __future__ import annotations

import io
from typing import Any

import psycopg

from drtool.adapters.dify_metadata import DifyReader, IndexNode
from drtool.config import PostgresSettings
from drtool.core.chunk_writer import ChunkFileWriter
from drtool.ops.export.chunks import encode_node_rows, node_record
from tests.export.helpers import Bucket, RunCli

HOSTILE = [
    "tab\there, backslash \\ and \\N and \\t literally",
    "quotes \" ' and a newline\nand CR\r\nand form feed\f and vertical tab\v and bell\x07 and esc\x1b and del\x7f",
    "every control: " + "".join(chr(c) for c in range(1, 32)),
    "unicode: Ünïcödé 中文 emoji 😀 line sep \u2028 para sep \u2029 bom \ufeff nbsp \xa0",
    "\\",
    " \t\n",  # blank: left out
    "\u3000\u2003",  # Unicode blanks: left out too (str.strip)
    "x" * 300_000,  # a huge row
]


def reference_bytes(reader: DifyReader, dataset_id: str) -> tuple[bytes, int]:
    sink = io.BytesIO()
    writer = ChunkFileWriter(sink, "none")
    for node in reader.iter_index_nodes(dataset_id):
        if node.text.strip():
            writer.write(node_record(node))
    writer.close()
    return sink.getvalue(), writer.count


def copy_path_bytes(reader: DifyReader, dataset_id: str) -> tuple[bytes, int]:
    blocks, total, forms = [], 0, {}
    for rows in reader.iter_index_node_rows(dataset_id):
        block, count = encode_node_rows(rows, dataset_id, forms)
        blocks.append(block)
        total += count
    return b"".join(blocks), total


def make_hostile(dify_db: Any) -> None:
    first, second = dify_db.seed.datasets
    with psycopg.connect(dify_db.dsn) as conn:
        for dataset in (first, second):
            for text, node_id in zip(HOSTILE, dataset.index_nodes, strict=False):
                conn.execute("UPDATE document_segments SET content = %s, answer = CASE WHEN answer IS NULL THEN NULL"
                             " ELSE %s END WHERE index_node_id = %s", (text, text[::-1], node_id))
                conn.execute("UPDATE child_chunks SET content = %s WHERE index_node_id = %s", (text, node_id))
        conn.execute("UPDATE documents SET name = %s WHERE id = %s", ("na\tme \\ \"x\"\n😀", first.document_ids[0]))
        conn.execute("UPDATE documents SET name = '' WHERE id = %s", (second.document_ids[0],))
        conn.execute("UPDATE document_segments SET answer = '' WHERE answer IS NOT NULL AND index_node_id = ANY(%s)",
                     (list(second.index_nodes)[-3:],))


def test_copy_path_writes_the_reference_bytes_for_hostile_rows(pg: Any, dify_db: Any) -> None:
    make_hostile(dify_db)
    settings = PostgresSettings(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                                database=dify_db.dbname, sslmode="disable")
    with DifyReader(settings) as reader:
        for dataset in dify_db.seed.datasets:
            expected, count = reference_bytes(reader, dataset.id)
            assert count > 10 and b"\\u0007" in expected and b"x" * 300_000 in expected  # the hostile rows
            assert copy_path_bytes(reader, dataset.id) == (expected, count)


def test_encode_node_rows_matches_node_record_field_by_field() -> None:
    rows = [("n1", "t\x00\"\\", "d1", None, 3, "text_model", None, None, ""),
            ("n2", "ok", "d2", "h", 0, "qa_model", None, "", "doc.pdf"),
            ("n3", "child", "d3", "h3", -7, "hierarchical_model", "seg", None, "x\u2028"),
            ("n4", "  ", "d4", None, 1, "text_model", None, None, "blank")]
    forms: dict[str, int] = {}
    block, count = encode_node_rows(rows, "ds\"1", forms)
    sink = io.BytesIO()
    writer = ChunkFileWriter(sink, "none")
    for r in rows[:3]:
        writer.write(node_record(IndexNode(id=r[0], text=r[1], dataset_id="ds\"1", document_id=r[2], doc_hash=r[3],
                                           position=r[4], doc_form=r[5], parent_id=r[6], answer=r[7],
                                           document_name=r[8])))
    writer.close()
    assert (block, count) == (sink.getvalue(), 3)
    assert forms == {"text_model": 1, "qa_model": 1, "hierarchical_model": 1}


def test_export_of_hostile_rows_round_trips(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                            run_cli: RunCli) -> None:
    make_hostile(dify_db)
    code, _events = run_cli("export-chunks", "--all", "--compression", "zstd")
    assert code == 0
    for dataset in dify_db.seed.datasets:
        texts = {c.id: c.text for c in bucket.chunks(f"datasets/{dataset.id}/processed/chunks.jsonl.zst")}
        for text, node_id in zip(HOSTILE, dataset.index_nodes, strict=False):
            assert texts.get(node_id) == (text if text.strip() else None)


def test_both_read_paths_write_the_reference_bytes(pg: Any, dify_db: Any, monkeypatch: Any) -> None:
    """The rows stream in libpq's chunked-rows mode where libpq allows it (here: psycopg-binary bundles libpq 17+),
    else through `COPY ... TO STDOUT`: both must give the reference bytes for hostile rows, and the chunked mode
    must be what this environment uses (so the test above covers it)."""
    from drtool.adapters import dify_metadata

    make_hostile(dify_db)
    settings = PostgresSettings(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                                database=dify_db.dbname, sslmode="disable")
    assert dify_metadata._chunked_rows()
    outputs = []
    for chunked in (True, False):
        monkeypatch.setattr(dify_metadata, "_chunked_rows", lambda chunked=chunked: chunked)
        with DifyReader(settings) as reader:
            outputs.append([(reference_bytes(reader, d.id), copy_path_bytes(reader, d.id))
                            for d in dify_db.seed.datasets])
    for per_dataset in outputs:
        for expected, got in per_dataset:
            assert expected[1] > 10 and got == expected


def test_encode_node_rows_across_documents_parents_names_and_blanks() -> None:
    """encode_node_rows escapes a document's (and a parent segment's) parts once per run of rows: every change of
    document, name or parent, to and from None, and blank rows between them, must still give node_record's bytes."""
    rows = [("a1", "one", "d1", "h", 0, "text_model", None, None, "n1"),
            ("a2", " \u3000", "d1", "h", 1, "text_model", None, None, "n1"),  # blank
            ("a3", "two", "d1", None, 2, "text_model", None, "", "n1"),
            ("b1", "three", "d2", "h", 0, "qa_model", None, "ans", "n1"),  # another document, same name
            ("b2", "four", "d2", "h", 1, "qa_model", None, None, None),
            ("c1", "five", "d3", "h", 0, "hierarchical_model", "s1", None, ""),
            ("c2", "six", "d3", "h", 1, "hierarchical_model", "s1", None, ""),
            ("c3", "\t\n", "d3", "h", 2, "hierarchical_model", "s2", None, ""),  # blank
            ("c4", "seven", "d3", "h", 3, "hierarchical_model", "s2", None, "n\"2"),
            ("e1", "eight", "d4", "h", 0, "text_model", None, None, "n\"2"),  # parent back to None
            ("f1", "", "d5", "h", 0, "economy_model", None, None, "x")]  # blank: its form is not counted
    forms: dict[str, int] = {"text_model": 5}  # counts add to what earlier batches found
    block, count = encode_node_rows(rows, "ds", forms)
    sink = io.BytesIO()
    writer = ChunkFileWriter(sink, "none")
    for r in rows:
        if r[1].strip():
            writer.write(node_record(IndexNode(id=r[0], text=r[1], dataset_id="ds", document_id=r[2],
                                               doc_hash=r[3], position=r[4], doc_form=r[5], parent_id=r[6],
                                               answer=r[7], document_name=r[8])))
    writer.close()
    assert (block, count) == (sink.getvalue(), 8)
    assert forms == {"text_model": 8, "qa_model": 2, "hierarchical_model": 3}
