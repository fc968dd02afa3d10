"""Fill Dify's knowledge-base tables with a small, realistic knowledge base.

drtool's export, rebuild and verify paths read exactly these rows, and most of their bugs hide in the cases a
plain happy-path fixture never has. So the seed always contains:
- a ``high_quality`` ``text_model`` dataset and a ``hierarchical_model`` (parent-child) dataset whose child
  chunks, not the parent segments, are what Dify embeds;
- a ``qa_model`` document (the question is embedded, the answer travels along);
- a disabled segment and an archived document, which Dify would NOT index;
- ``upload_files`` rows keyed ``upload_files/<tenant>/<uuid>.<ext>`` (one ``image_files/...`` too) and a
  ``tool_files`` row, with the file bytes returned so tests can put matching objects into a bucket;
- ``index_struct`` JSON pointing at ``Vector_index_<id with _>_Node`` collections;
- an embedding cache (``embeddings``) holding about half of the indexable texts, keyed as Dify keys it.

The text is hand-written English prose (no download), numbered like clauses in real manuals so every chunk is
unique: a duplicate text would collide in Weaviate (uuid5 of the text) and in the embedding cache.

Cached vectors are deterministic pseudo-random unit vectors unless `embed` is given: pass the real model's
encode function when a test compares cached vectors with freshly computed ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_EMBEDDING_PROVIDER",
    "SEEDED_TABLES",
    "AnnotationSeed",
    "SeedSummary",
    "SeededApp",
    "SeededDataset",
    "collection_name_for",
    "dify_text_hash",
    "seed_annotations",
    "seed_knowledge_base",
]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# How a self-hosted OpenAI-compatible embedding endpoint shows up in Dify's datasets table.
DEFAULT_EMBEDDING_PROVIDER = "langgenius/openai_api_compatible/openai_api_compatible"
DEFAULT_DIMENSIONS = 384

# Every table the seed writes (counts has a key for each, 0 when a table got no rows).
SEEDED_TABLES: tuple[str, ...] = (
    "tenants",
    "dataset_collection_bindings",
    "datasets",
    "dataset_process_rules",
    "documents",
    "document_segments",
    "child_chunks",
    "dataset_keyword_tables",
    "upload_files",
    "tool_files",
    "embeddings",
)

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]


def dify_text_hash(text: str) -> str:
    """Dify's ``generate_text_hash``: sha256 of the text followed by the literal "None" (embedding cache key,
    and ``index_node_hash``)."""
    return hashlib.sha256((text + "None").encode("utf-8")).hexdigest()


def collection_name_for(dataset_id: str, prefix: str = "Vector_index") -> str:
    """Dify's collection (class) name for a dataset: ``Vector_index_<id with - -> _>_Node``."""
    return f"{prefix}_{dataset_id.replace('-', '_')}_Node"


@dataclass(frozen=True)
class SeededDataset:
    """One seeded dataset and what Dify would (and would not) have embedded for it."""

    id: str
    name: str
    doc_form: str  # "text_model" or "hierarchical_model" (a text dataset may also hold a qa_model document)
    collection_name: str  # index_struct.vector_store.class_prefix
    document_ids: tuple[str, ...]
    index_nodes: Mapping[str, str]  # index_node_id -> exact text Dify embeds, for every node Dify indexes
    skipped_node_ids: tuple[str, ...]  # nodes present in Postgres that Dify does not index

    @property
    def expected_vectors(self) -> int:
        """How many vectors a complete index of this dataset holds."""
        return len(self.index_nodes)


@dataclass(frozen=True)
class SeedSummary:
    """What seed_knowledge_base wrote; tests assert against this instead of re-deriving it."""

    tenant_id: str
    account_id: str
    embedding_model: str
    embedding_provider: str
    vector_type: str
    datasets: tuple[SeededDataset, ...]
    counts: Mapping[str, int]  # table name -> rows inserted
    files: Mapping[str, bytes] = field(
        repr=False
    )  # object key -> bytes, for every upload_files/tool_files row
    qa_document_ids: tuple[str, ...] = ()
    archived_document_ids: tuple[str, ...] = ()
    disabled_segment_ids: tuple[str, ...] = ()
    cached_hashes: tuple[str, ...] = ()  # embeddings.hash values present in the cache

    @property
    def dataset_ids(self) -> tuple[str, ...]:
        """Ids of the seeded datasets, in creation order."""
        return tuple(d.id for d in self.datasets)

    @property
    def expected_vectors(self) -> int:
        """Vectors over all datasets."""
        return sum(d.expected_vectors for d in self.datasets)


# ----------------------------------------------------------------------------------------------------
# Text. Written for these tests; each topic is a pool of sentences that segments are composed from.

_TOPICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Employee Handbook",
        "employee-handbook",
        (
            "Full-time employees accrue two vacation days per month, up to thirty days in total.",
            "Unused vacation days carry over into the first quarter of the next calendar year.",
            "Requests for leave longer than one week must be approved by your manager two weeks in advance.",
            "Sick leave does not require a doctor's note for absences of three days or fewer.",
            "The office is open from seven in the morning until eight in the evening on weekdays.",
            "Remote work is allowed up to three days a week once the probation period has ended.",
            "Every new hire is paired with a buddy who answers practical questions during the first month.",
            "Expense reports must include a scanned receipt for any purchase above twenty-five euros.",
            "Travel by train is preferred over flying for journeys shorter than five hours.",
            "Company laptops are encrypted and must be locked whenever you leave your desk.",
            "Security incidents, including lost badges, are reported to the help desk immediately.",
            "Annual performance reviews take place in March and focus on goals agreed the year before.",
            "Parental leave is paid at full salary for the first sixteen weeks.",
            "The learning budget covers conferences, books and online courses related to your role.",
            "Overtime is compensated with time off within the following two months.",
            "Personal data about colleagues may only be shared with the people who need it to do their work.",
        ),
    ),
    (
        "SolarEdge X200 Inverter Manual",
        "inverter-manual",
        (
            "The inverter must be mounted vertically on a wall that can bear at least forty kilograms.",
            "Leave thirty centimetres of free space above and below the unit so that air can circulate.",
            "Before opening the cover, switch off the AC breaker and wait five minutes for the capacitors "
            "to discharge.",
            "A green status light means the inverter is feeding power into the grid.",
            "A blinking orange light indicates that the grid voltage is outside the permitted range.",
            "The display shows the energy produced today, this month and since installation.",
            "Connect the monitoring cable to the RJ45 port on the left side of the housing.",
            "Firmware updates are installed from a USB stick formatted with the FAT32 file system.",
            "The operating temperature range is from minus twenty to plus sixty degrees Celsius.",
            "Above forty-five degrees the inverter reduces its output to protect the electronics.",
            "Clean the cooling fins once a year with a soft brush, never with a pressure washer.",
            "Error code E21 means an insulation fault was detected on the DC side.",
            "If error E21 persists after a restart, disconnect the panels and call a certified installer.",
            "The warranty covers ten years and can be extended to twenty years after registration.",
            "Each string of panels must not exceed an open-circuit voltage of one thousand volts.",
            "Night consumption of the inverter is below one watt.",
        ),
    ),
    (
        "Sourdough Baking Notes",
        "sourdough-notes",
        (
            "A healthy starter doubles in volume within six hours of feeding at room temperature.",
            "Feed the starter with equal weights of flour and water, by weight rather than by volume.",
            "Whole rye flour makes a starter more active than white wheat flour does.",
            "The autolyse step rests flour and water for an hour before salt and starter are added.",
            "Stretch and fold the dough every thirty minutes during the first two hours of bulk "
            "fermentation.",
            "Bulk fermentation is finished when the dough has grown by about half and shows bubbles on "
            "the sides.",
            "Shaping builds surface tension, which helps the loaf rise upward instead of spreading.",
            "A cold proof overnight in the refrigerator deepens the flavour and makes scoring easier.",
            "Preheat the Dutch oven for forty-five minutes at two hundred and fifty degrees.",
            "Bake with the lid on for twenty minutes to trap steam, then remove it to brown the crust.",
            "The bread is done when the inside reaches ninety-six degrees Celsius.",
            "Let the loaf cool for at least an hour, because the crumb keeps setting after baking.",
            "A dense, gummy crumb usually means the dough was underproofed.",
            "Large irregular holes come from high hydration and gentle handling.",
            "Store sourdough cut side down on a wooden board rather than in a plastic bag.",
            "A starter kept in the refrigerator needs feeding only once a week.",
        ),
    ),
    (
        "Astronomy Club Observing Guide",
        "observing-guide",
        (
            "Let your eyes adapt to the dark for twenty minutes before observing faint objects.",
            "Use a red flashlight, because red light does not spoil night vision.",
            "The Andromeda Galaxy is visible to the naked eye from a dark site in autumn.",
            "Saturn's rings are best seen at a magnification of around one hundred times.",
            "A full moon washes out faint galaxies, so plan deep-sky sessions around the new moon.",
            "Binoculars with a magnification of seven to ten are ideal for beginners.",
            "Jupiter's four largest moons change position from one night to the next.",
            "Collimate a reflector telescope whenever it has been transported by car.",
            "Dew forms on the lens when the optics cool below the dew point of the air.",
            "A dew heater strip keeps the objective a few degrees above ambient temperature.",
            "The Perseid meteor shower peaks around the twelfth of August every year.",
            "Light pollution maps help to find observing sites far from city lights.",
            "Record the date, time, seeing and instrument for every observation in your logbook.",
            "Never point a telescope at the Sun without a certified solar filter over the aperture.",
            "The Orion Nebula is a stellar nursery about thirteen hundred light years away.",
            "Club members meet on the first Friday of each month at the observatory car park.",
        ),
    ),
)

_QA_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "How do I reset my password?",
        "Open the login page, choose 'Forgot password' and follow the link in the e-mail.",
    ),
    ("Who approves a leave request?", "Your direct manager approves leave; HR is informed automatically."),
    (
        "Where do I find my payslip?",
        "Payslips are published in the HR portal on the last working day of the month.",
    ),
    (
        "Can I bring my dog to the office?",
        "Dogs are welcome on the second floor if they are calm and house-trained.",
    ),
    (
        "How do I book a meeting room?",
        "Use the calendar app and add the room as a resource to the invitation.",
    ),
    (
        "What is the Wi-Fi password for guests?",
        "Guests receive a personal code from the reception desk each day.",
    ),
    ("How much can I spend on a business dinner?", "Up to sixty euros per person, drinks included."),
    (
        "When is the office closed?",
        "The office is closed on public holidays and between Christmas and New Year.",
    ),
    ("How do I report a broken chair?", "Create a facilities ticket in the help desk portal with a photo."),
    (
        "Who do I contact about my pension plan?",
        "Write to the benefits team, who answer within three working days.",
    ),
    (
        "Is there a gym discount?",
        "Employees get a forty percent discount at two partner gyms near the office.",
    ),
    (
        "How do I change my bank details?",
        "Update them in the HR portal before the fifteenth to affect this month.",
    ),
)

_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----"
)

_EXTENSIONS: tuple[tuple[str, str], ...] = (
    ("pdf", "application/pdf"),
    ("md", "text/markdown"),
    ("txt", "text/plain"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
)


# ----------------------------------------------------------------------------------------------------


def _new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _keywords(text: str) -> list[str]:
    words = [w.strip(".,;:'()").lower() for w in text.split()]
    long_words = [w for w in words if len(w) > 6]
    return sorted(set(long_words))[:5]


def _pseudo_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text (stands in for a model when none is given)."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _file_bytes(ext: str, title: str, body: str) -> bytes:
    """Small file contents whose first bytes look like the format (the tests only move and hash them)."""
    text = f"{title}\n\n{body}\n"
    if ext == "pdf":
        return b"%PDF-1.7\n% drtool test fixture\n" + text.encode() + b"\n%%EOF\n"
    if ext == "docx":
        return b"PK\x03\x04" + text.encode()
    if ext == "md":
        return f"# {title}\n\n{body}\n".encode()
    return text.encode()


class _Inserter:
    """Collects rows per table and writes them with executemany (one round trip per table)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, table: str, **row: Any) -> None:
        self.rows.setdefault(table, []).append(row)

    def flush(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        counts = dict.fromkeys(SEEDED_TABLES, 0)
        with conn.cursor() as cur:
            for table, rows in self.rows.items():
                by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for row in rows:  # rows of one table may leave different optional columns out
                    by_columns.setdefault(tuple(row), []).append(row)
                for columns, group in by_columns.items():
                    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                        sql.SQL(", ").join(map(sql.Placeholder, columns)),
                    )
                    cur.executemany(statement, group)
                counts[table] = len(rows)
        return counts


def seed_knowledge_base(
    conn: psycopg.Connection[Any],
    *,
    datasets: int = 2,
    documents_per_dataset: int = 3,
    segments_per_document: int = 5,
    vector_type: str = "milvus",
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    embedding_provider: str = DEFAULT_EMBEDDING_PROVIDER,
    dimensions: int = DEFAULT_DIMENSIONS,
    embed: Embed | None = None,
    seed: int | None = None,
) -> SeedSummary:
    """Insert one tenant's knowledge base into a database that has dify_schema.sql applied, and commit.

    Dataset i is a text_model dataset when i is even and a hierarchical_model one when i is odd. With at least
    two documents, the last document of the first dataset is a qa_model document; the archived document is the
    last one of the last dataset (or, with a single dataset of three or more documents, its second one); the
    second segment of the first document of the first dataset is disabled. `seed` makes ids reproducible.
    """
    if datasets < 1 or documents_per_dataset < 1 or segments_per_document < 1:
        raise ValueError("datasets, documents_per_dataset and segments_per_document must be >= 1")
    rng = random.Random(seed)
    rows = _Inserter()
    now = datetime.now().replace(microsecond=0)  # Dify stores naive UTC-ish timestamps without zone
    tenant_id, account_id = _new_uuid(rng), _new_uuid(rng)
    files: dict[str, bytes] = {}
    qa_docs: list[str] = []
    archived_docs: list[str] = []
    disabled_segments: list[str] = []
    seeded: list[SeededDataset] = []
    texts_to_cache: list[str] = []

    rows.add(
        "tenants",
        id=tenant_id,
        name="Acme Robotics",
        plan="basic",
        status="normal",
        encrypt_public_key=_PUBLIC_KEY,
        created_at=now - timedelta(days=400),
        updated_at=now - timedelta(days=400),
    )
    binding_id = _new_uuid(rng)
    rows.add(
        "dataset_collection_bindings",
        id=binding_id,
        provider_name=embedding_provider,
        model_name=embedding_model,
        type="dataset",
        collection_name=collection_name_for(binding_id),
        created_at=now - timedelta(days=300),
    )

    qa_position = (0, documents_per_dataset - 1) if documents_per_dataset >= 2 else None
    if datasets >= 2:
        archived_position: tuple[int, int] | None = (datasets - 1, documents_per_dataset - 1)
    elif documents_per_dataset >= 3:
        archived_position = (0, 1)
    else:
        archived_position = None
    disabled_position = (0, 0, 1) if segments_per_document >= 2 else None

    for d in range(datasets):
        hierarchical = d % 2 == 1
        doc_form = "hierarchical_model" if hierarchical else "text_model"
        title, slug, sentences = _TOPICS[d % len(_TOPICS)]
        name = title if d < len(_TOPICS) else f"{title} ({d // len(_TOPICS) + 1})"
        dataset_id = _new_uuid(rng)
        collection = collection_name_for(dataset_id)
        created = now - timedelta(days=200 - d)
        rows.add(
            "datasets",
            id=dataset_id,
            tenant_id=tenant_id,
            name=name,
            description=f"{name}: the current edition, uploaded by the documentation team.",
            provider="vendor",
            permission="all_team_members",
            data_source_type="upload_file",
            indexing_technique="high_quality",
            index_struct=json.dumps({"type": vector_type, "vector_store": {"class_prefix": collection}}),
            created_by=account_id,
            created_at=created,
            updated_by=account_id,
            updated_at=created,
            embedding_model=embedding_model,
            embedding_model_provider=embedding_provider,
            collection_binding_id=binding_id,
            retrieval_model=Jsonb(
                {
                    "search_method": "semantic_search",
                    "reranking_enable": False,
                    "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
                    "top_k": 3,
                    "score_threshold_enabled": False,
                    "score_threshold": 0.5,
                }
            ),
            chunk_structure=doc_form,
            is_multimodal=False,
        )
        rule_id = _new_uuid(rng)
        if hierarchical:
            rules = {
                "pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": True}],
                "segmentation": {"separator": "\n\n", "max_tokens": 1024},
                "parent_mode": "paragraph",
                "subchunk_segmentation": {"separator": "\n", "max_tokens": 256},
            }
        else:
            rules = {
                "pre_processing_rules": [
                    {"id": "remove_extra_spaces", "enabled": True},
                    {"id": "remove_urls_emails", "enabled": False},
                ],
                "segmentation": {"delimiter": "\n", "max_tokens": 500, "chunk_overlap": 50},
            }
        rows.add(
            "dataset_process_rules",
            id=rule_id,
            dataset_id=dataset_id,
            mode="hierarchical" if hierarchical else "automatic",
            rules=json.dumps(rules),
            created_by=account_id,
            created_at=created,
        )

        document_ids: list[str] = []
        index_nodes: dict[str, str] = {}
        skipped: list[str] = []
        keyword_table: dict[str, list[str]] = {}
        for j in range(documents_per_dataset):
            document_id = _new_uuid(rng)
            document_ids.append(document_id)
            is_qa = qa_position == (d, j)
            is_archived = archived_position == (d, j)
            doc_doc_form = "qa_model" if is_qa else doc_form
            ext, mime = _EXTENSIONS[(d + j) % len(_EXTENSIONS)]
            doc_title = f"{title} part {j + 1}" if not is_qa else f"{title} FAQ"
            file_name = f"{slug}-{'faq' if is_qa else f'part-{j + 1}'}.{ext}"
            upload_id = _new_uuid(rng)
            key = f"upload_files/{tenant_id}/{upload_id}.{ext}"
            doc_created = created + timedelta(hours=j + 1)

            segment_texts: list[tuple[str, str | None, list[str]]] = []  # (content, answer, children)
            for k in range(segments_per_document):
                p = j * segments_per_document + k
                if is_qa:
                    question, qa_answer = _QA_PAIRS[p % len(_QA_PAIRS)]
                    if p >= len(_QA_PAIRS):
                        question = f"{question[:-1]} (question {p + 1})?"
                    segment_texts.append((question, qa_answer, []))
                elif hierarchical:
                    children = [
                        f"{j + 1}.{k + 1}.{c + 1} {sentences[(p * 3 + c) % len(sentences)]}" for c in range(3)
                    ]
                    segment_texts.append(("\n".join(children), None, children))
                else:
                    first = sentences[p % len(sentences)]
                    second = sentences[(p + 1 + p // len(sentences)) % len(sentences)]
                    segment_texts.append((f"{j + 1}.{k + 1} {first} {second}", None, []))
            body = "\n\n".join(c if a is None else f"Q: {c}\nA: {a}" for c, a, _ in segment_texts)
            content = _file_bytes(ext, doc_title, body)
            files[key] = content
            rows.add(
                "upload_files",
                id=upload_id,
                tenant_id=tenant_id,
                storage_type="s3",
                key=key,
                name=file_name,
                size=len(content),
                extension=ext,
                mime_type=mime,
                created_by_role="account",
                created_by=account_id,
                created_at=doc_created,
                used=True,
                used_by=account_id,
                used_at=doc_created,
                hash=hashlib.sha3_256(content).hexdigest(),
                source_url="",
            )
            word_count = sum(len(c) + len(a or "") for c, a, _ in segment_texts)
            rows.add(
                "documents",
                id=document_id,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                position=j + 1,
                data_source_type="upload_file",
                data_source_info=json.dumps({"upload_file_id": upload_id}),
                dataset_process_rule_id=rule_id,
                batch=doc_created.strftime("%Y%m%d%H%M%S") + f"{j:06d}",
                name=file_name,
                created_from="web",
                created_by=account_id,
                created_at=doc_created,
                processing_started_at=doc_created + timedelta(seconds=2),
                word_count=word_count,
                parsing_completed_at=doc_created + timedelta(seconds=4),
                cleaning_completed_at=doc_created + timedelta(seconds=4),
                splitting_completed_at=doc_created + timedelta(seconds=5),
                tokens=word_count // 4,
                indexing_latency=7.5,
                completed_at=doc_created + timedelta(seconds=9),
                is_paused=False,
                indexing_status="completed",
                enabled=True,
                archived=is_archived,
                archived_reason="rule_modified" if is_archived else None,
                archived_by=account_id if is_archived else None,
                archived_at=doc_created + timedelta(days=30) if is_archived else None,
                updated_at=doc_created + timedelta(days=30 if is_archived else 0),
                doc_type=None,
                doc_metadata=Jsonb({"language": "en", "source": file_name}),
                doc_form=doc_doc_form,
                doc_language="English",
            )
            if is_qa:
                qa_docs.append(document_id)
            if is_archived:
                archived_docs.append(document_id)

            for k, (text, answer, children) in enumerate(segment_texts):
                segment_id, node_id = _new_uuid(rng), _new_uuid(rng)
                disabled = disabled_position == (d, j, k)
                if disabled:
                    disabled_segments.append(segment_id)
                rows.add(
                    "document_segments",
                    id=segment_id,
                    tenant_id=tenant_id,
                    dataset_id=dataset_id,
                    document_id=document_id,
                    position=k + 1,
                    content=text,
                    word_count=len(text) + len(answer or ""),
                    tokens=max(1, (len(text) + len(answer or "")) // 4),
                    keywords=json.dumps(_keywords(text)),
                    index_node_id=node_id,
                    index_node_hash=dify_text_hash(text),
                    hit_count=k % 3,
                    enabled=not disabled,
                    disabled_at=doc_created + timedelta(days=3) if disabled else None,
                    disabled_by=account_id if disabled else None,
                    status="completed",
                    created_by=account_id,
                    created_at=doc_created,
                    indexing_at=doc_created + timedelta(seconds=6),
                    completed_at=doc_created + timedelta(seconds=9),
                    answer=answer,
                    updated_at=doc_created + timedelta(days=3 if disabled else 0),
                )
                for word in _keywords(text):
                    keyword_table.setdefault(word, []).append(node_id)
                indexable = not disabled and not is_archived
                if hierarchical and not is_qa:
                    skipped.append(node_id)  # parents are stored, only their children are embedded
                    for c, child in enumerate(children):
                        child_node = _new_uuid(rng)
                        rows.add(
                            "child_chunks",
                            id=_new_uuid(rng),
                            tenant_id=tenant_id,
                            dataset_id=dataset_id,
                            document_id=document_id,
                            segment_id=segment_id,
                            position=c + 1,
                            content=child,
                            word_count=len(child),
                            index_node_id=child_node,
                            index_node_hash=dify_text_hash(child),
                            type="automatic",
                            created_by=account_id,
                            created_at=doc_created,
                            updated_at=doc_created,
                            indexing_at=doc_created + timedelta(seconds=6),
                            completed_at=doc_created + timedelta(seconds=9),
                        )
                        if indexable:
                            index_nodes[child_node] = child
                        else:
                            skipped.append(child_node)
                elif indexable:
                    index_nodes[node_id] = text
                else:
                    skipped.append(node_id)

        rows.add(
            "dataset_keyword_tables",
            id=_new_uuid(rng),
            dataset_id=dataset_id,
            data_source_type="database",
            keyword_table=json.dumps(
                {
                    "__type__": "keyword_table",
                    "__data__": {"index_id": dataset_id, "summary": None, "table": keyword_table},
                }
            ),
        )
        # Cache every other indexable text, so rebuilds see both cache hits and misses.
        texts_to_cache.extend(list(index_nodes.values())[::2])
        seeded.append(
            SeededDataset(
                id=dataset_id,
                name=name,
                doc_form=doc_form,
                collection_name=collection,
                document_ids=tuple(document_ids),
                index_nodes=index_nodes,
                skipped_node_ids=tuple(skipped),
            )
        )

    # An image Dify extracted from the first PDF, and one file a tool produced.
    image_id = _new_uuid(rng)
    image_key = f"image_files/{tenant_id}/{image_id}.png"
    image_bytes = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(image_key.encode()).digest() * 8
    files[image_key] = image_bytes
    rows.add(
        "upload_files",
        id=image_id,
        tenant_id=tenant_id,
        storage_type="s3",
        key=image_key,
        name="image.png",
        size=len(image_bytes),
        extension="png",
        mime_type="image/png",
        created_by_role="account",
        created_by=account_id,
        created_at=now - timedelta(days=100),
        used=False,
        hash=hashlib.sha3_256(image_bytes).hexdigest(),
        source_url="",
    )
    tool_key = f"tools/{tenant_id}/{uuid.UUID(int=rng.getrandbits(128)).hex}.csv"
    tool_bytes = b"month,kwh\n2026-01,312\n2026-02,355\n2026-03,498\n"
    files[tool_key] = tool_bytes
    rows.add(
        "tool_files",
        id=_new_uuid(rng),
        user_id=account_id,
        tenant_id=tenant_id,
        conversation_id=_new_uuid(rng),
        file_key=tool_key,
        mimetype="text/csv",
        original_url=None,
        name="production.csv",
        size=len(tool_bytes),
    )

    vectors = (
        [list(map(float, v)) for v in embed(texts_to_cache)]
        if embed is not None and texts_to_cache
        else [_pseudo_embedding(t, dimensions) for t in texts_to_cache]
    )
    cached_hashes: list[str] = []
    for text, vector in zip(texts_to_cache, vectors, strict=True):
        text_hash = dify_text_hash(text)
        cached_hashes.append(text_hash)
        rows.add(
            "embeddings",
            id=_new_uuid(rng),
            model_name=embedding_model,
            hash=text_hash,
            embedding=pickle.dumps(vector, protocol=pickle.HIGHEST_PROTOCOL),
            created_at=now - timedelta(days=10),
            provider_name=embedding_provider,
        )

    counts = rows.flush(conn)
    conn.commit()
    return SeedSummary(
        tenant_id=tenant_id,
        account_id=account_id,
        embedding_model=embedding_model,
        embedding_provider=embedding_provider,
        vector_type=vector_type,
        datasets=tuple(seeded),
        counts=counts,
        files=files,
        qa_document_ids=tuple(qa_docs),
        archived_document_ids=tuple(archived_docs),
        disabled_segment_ids=tuple(disabled_segments),
        cached_hashes=tuple(cached_hashes),
    )


# ----------------------------------------------------------------------------------------------------
# Annotation replies (issue #13): apps whose question/answer pairs Dify answers directly. Seeded by a separate
# call so that every database made by seed_knowledge_base alone stays exactly as before.

_ANNOTATIONS: tuple[tuple[str | None, str], ...] = (
    ("How many vacation days do full-time employees accrue each month?",
     "Two days per month, up to thirty days in total."),
    ("Can unused vacation days be carried over into the next year?",
     "Yes, into the first quarter of the next calendar year."),
    ("Who approves a request for remote work?", "Your line manager approves it in the HR portal."),
    ("What does the red status light on the X200 inverter mean?",
     "A ground fault: switch the inverter off and call an installer."),
    ("How often should the inverter's air filter be cleaned?", "Every six months, or monthly in dusty sites."),
    ("Which firmware version added the export limiter?", "Firmware 4.2 added the export limiter."),
    (None, "Reset the inverter by holding the power button for ten seconds."),  # old row: no question
    ("Where do I report a lost badge?", "At the reception desk, which issues a temporary badge."),
)


@dataclass(frozen=True)
class SeededApp:
    """One app and its annotations; `enabled` means it has an app_annotation_settings row."""

    id: str
    name: str
    enabled: bool
    status: str
    score_threshold: float
    binding_id: str | None
    annotations: Mapping[str, tuple[str | None, str]]  # annotation id -> (question, content)

    @property
    def collection_name(self) -> str:
        """Dify's per-app annotation collection: gen_collection_name_by_id(app_id)."""
        return collection_name_for(self.id)

    def embedded_texts(self) -> dict[str, str]:
        """annotation id -> the text Dify embeds (the question, or the answer when there is no question)."""
        return {a: (q if q and q.strip() else c) for a, (q, c) in self.annotations.items()}


@dataclass(frozen=True)
class AnnotationSeed:
    binding_id: str
    apps: tuple[SeededApp, ...]

    @property
    def enabled(self) -> tuple[SeededApp, ...]:
        """Apps whose annotations Dify keeps in a vector collection (setting row present, app status normal)."""
        return tuple(a for a in self.apps if a.enabled and a.status == "normal")


def seed_annotations(
    conn: psycopg.Connection[Any],
    summary: SeedSummary,
    *,
    score_threshold: float = 0.8,
    seed: int | None = None,
) -> AnnotationSeed:
    """Add three apps to a database seeded by seed_knowledge_base, and commit:

    - "Support bot": annotation reply enabled, four annotations, one of them without a question (an old row:
      Dify embeds its answer), and a hit-history row;
    - "HR bot": enabled, three annotations;
    - "Draft bot": one annotation, reply disabled (no settings row), so Dify has no vectors for it.

    Both enabled apps use one `annotation` binding of the summary's embedding model, as Dify shares a binding
    per (provider, model, type).
    """
    rng = random.Random(seed)
    rows = _Inserter()
    now = datetime.now().replace(microsecond=0)
    binding_id = _new_uuid(rng)
    rows.add("dataset_collection_bindings", id=binding_id, provider_name=summary.embedding_provider,
             model_name=summary.embedding_model, type="annotation",
             collection_name=collection_name_for(_new_uuid(rng)), created_at=now - timedelta(days=90))
    plan = (("Support bot", True, (3, 4, 5, 6)), ("HR bot", True, (0, 1, 2)), ("Draft bot", False, (7,)))
    apps: list[SeededApp] = []
    for number, (name, enabled, picks) in enumerate(plan):
        app_id = _new_uuid(rng)
        created = now - timedelta(days=80 - number)
        rows.add("apps", id=app_id, tenant_id=summary.tenant_id, name=name, mode="chat", status="normal",
                 enable_site=True, enable_api=True, created_at=created, updated_at=created)
        annotations: dict[str, tuple[str | None, str]] = {}
        for i, pick in enumerate(picks):
            question, content = _ANNOTATIONS[pick]
            annotation_id = _new_uuid(rng)
            annotations[annotation_id] = (question, content)
            rows.add("message_annotations", id=annotation_id, app_id=app_id, conversation_id=None, message_id=None,
                     content=content, account_id=summary.account_id, question=question, hit_count=i,
                     created_at=created + timedelta(minutes=i), updated_at=created + timedelta(minutes=i))
        if enabled:
            rows.add("app_annotation_settings", id=_new_uuid(rng), app_id=app_id, score_threshold=score_threshold,
                     collection_binding_id=binding_id, created_user_id=summary.account_id,
                     updated_user_id=summary.account_id, created_at=created, updated_at=created)
        first_id, (first_q, first_c) = next(iter(annotations.items()))
        rows.add("app_annotation_hit_histories", id=_new_uuid(rng), app_id=app_id, annotation_id=first_id,
                 source="api", question=first_q or first_c, account_id=summary.account_id, score=0.93,
                 message_id=_new_uuid(rng), annotation_question=first_q or "", annotation_content=first_c,
                 created_at=created + timedelta(days=1))
        apps.append(SeededApp(id=app_id, name=name, enabled=enabled, status="normal",
                              score_threshold=score_threshold, binding_id=binding_id if enabled else None,
                              annotations=annotations))
    rows.flush(conn)
    conn.commit()
    return AnnotationSeed(binding_id=binding_id, apps=tuple(apps))
