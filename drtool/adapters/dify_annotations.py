"""Dify's annotation-reply tables, read the way Dify's annotation tasks read them, streamed with server-side cursors.

An app's annotations are in Dify's vector store only while annotation reply is enabled, which Dify records as a
row in `app_annotation_settings` (disabling deletes the row; there is no flag). `flask vdb-migrate --scope
annotation` rebuilds exactly the apps with `apps.status = 'normal'` and such a row, embedding each
`message_annotations` row's question with the model of the setting's `dataset_collection_bindings` row; drtool
exports and verifies the same set. Reads share the DifyReader's REPEATABLE READ snapshot, so the annotation
files and the dataset files of one export describe one moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from drtool.adapters.dify_metadata import FETCH_ROWS, DifyReader
from drtool.errors import NotFoundError

ANNOTATION_TABLES = ("apps", "app_annotation_settings", "message_annotations")


@dataclass(frozen=True)
class AnnotationApp:
    """An app with annotation reply enabled, and the binding that names its embedding model."""

    app_id: str
    tenant_id: str
    name: str
    score_threshold: float
    binding_id: str
    provider_name: str | None  # None: the binding row is missing (Dify then answers no annotation either)
    model_name: str | None
    binding_collection: str | None  # only Qdrant uses it; every other store has one collection per app


@dataclass(frozen=True, slots=True)
class AnnotationRow:
    id: str
    app_id: str
    question: str | None
    content: str

    @property
    def embedded_text(self) -> str:
        """What Dify embeds: `question_text`, the question, or the answer when an old row has no question."""
        return self.question if self.question and self.question.strip() else self.content

    @property
    def question_missing(self) -> bool:
        return not (self.question and self.question.strip())


_APPS_SQL = """
SELECT a.id::text, a.tenant_id::text, a.name, s.score_threshold, s.collection_binding_id::text,
       b.provider_name, b.model_name, b.collection_name
FROM app_annotation_settings s
JOIN apps a ON a.id = s.app_id AND a.status = 'normal'
LEFT JOIN dataset_collection_bindings b ON b.id = s.collection_binding_id
{where}
ORDER BY a.created_at, a.id, s.created_at, s.id
"""

_ROWS_SQL = """
SELECT id::text, app_id::text, question, content FROM message_annotations
WHERE app_id = %(app)s ORDER BY created_at, id
"""


def tables_present(reader: DifyReader) -> bool:
    """Annotation reply exists in Dify since late 2023; a database without its tables has nothing to cover."""
    try:
        row = reader.conn.execute("SELECT count(*) FROM unnest(%s::text[]) t WHERE to_regclass('public.' || t) "
                                  "IS NOT NULL", (list(ANNOTATION_TABLES),)).fetchone()
    except psycopg.Error as exc:
        raise reader._error(exc) from None
    return bool(row) and int(row[0]) == len(ANNOTATION_TABLES)


def enabled_apps(reader: DifyReader, app_ids: tuple[str, ...] = ()) -> list[AnnotationApp]:
    """Apps with annotation reply enabled, oldest first (one entry per app: a duplicate setting row, which Dify
    never writes, keeps the oldest, as Dify's `.first()` would). An asked-for app that is not enabled is a
    NotFoundError."""
    where, params = "", {}
    if app_ids:
        where, params = "WHERE a.id::text = ANY(%(ids)s)", {"ids": list(app_ids)}
    try:
        rows = reader.conn.execute(_APPS_SQL.format(where=where), params).fetchall()
    except psycopg.Error as exc:
        raise reader._error(exc) from None
    apps: dict[str, AnnotationApp] = {}
    for app_id, tenant, name, threshold, binding, provider, model, collection in rows:
        apps.setdefault(app_id, AnnotationApp(app_id, tenant, name, float(threshold or 0), binding, provider, model,
                                              collection))
    unknown = sorted(set(app_ids) - apps.keys())
    if unknown:
        raise NotFoundError(f"app(s) without annotation reply enabled (no app_annotation_settings row, or app "
                            f"not 'normal'): {', '.join(unknown)}", hint="check --app (an app id is a UUID)",
                            system=f"postgres {reader.settings.host}:{reader.settings.port}")
    return list(apps.values())


def iter_annotations(reader: DifyReader, app_id: str) -> Iterator[AnnotationRow]:
    """Every annotation of an app, streamed in a deterministic order (creation time, then id)."""
    try:
        with reader.conn.cursor(name=f"drtool_annotations_{app_id.replace('-', '')[:32]}") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(_ROWS_SQL, {"app": app_id})
            for row_id, owner, question, content in cur:
                yield AnnotationRow(row_id, owner, question, content or "")
    except psycopg.Error as exc:
        raise reader._error(exc) from None
