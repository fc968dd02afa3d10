-- Dify's knowledge-base tables, as Dify's migrations create them on PostgreSQL (Dify 1.13.x, api/models/*.py):
-- StringUUID -> uuid, LongText -> text, AdjustedJSON -> jsonb, sa.JSON -> json, DateTime -> timestamp (no zone),
-- BinaryData -> bytea, EnumText -> varchar. Only the tables and columns drtool reads or restores are here,
-- plus the columns that make rows realistic (NOT NULL columns without defaults must be filled, as in Dify).
-- Written for the test suite from the documented model; not copied from Dify.

CREATE TABLE tenants (
    id                 uuid         NOT NULL DEFAULT gen_random_uuid(),
    name               varchar(255) NOT NULL,
    encrypt_public_key text,
    plan               varchar(255) NOT NULL DEFAULT 'basic',
    status             varchar(255) NOT NULL DEFAULT 'normal',
    custom_config      text,
    created_at         timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_at         timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT tenant_pkey PRIMARY KEY (id)
);

CREATE TABLE dataset_collection_bindings (
    id              uuid         NOT NULL DEFAULT gen_random_uuid(),
    provider_name   varchar(255) NOT NULL,
    model_name      varchar(255) NOT NULL,
    type            varchar(40)  NOT NULL DEFAULT 'dataset',
    collection_name varchar(64)  NOT NULL,
    created_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT dataset_collection_bindings_pkey PRIMARY KEY (id)
);
CREATE INDEX provider_model_name_idx ON dataset_collection_bindings (provider_name, model_name);

CREATE TABLE datasets (
    id                       uuid         NOT NULL DEFAULT gen_random_uuid(),
    tenant_id                uuid         NOT NULL,
    name                     varchar(255) NOT NULL,
    description              text,
    provider                 varchar(255) NOT NULL DEFAULT 'vendor',
    permission               varchar(255) NOT NULL DEFAULT 'only_me',
    data_source_type         varchar(255),
    indexing_technique       varchar(255),
    index_struct             text,
    created_by               uuid         NOT NULL,
    created_at               timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_by               uuid,
    updated_at               timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    embedding_model          varchar(255),
    embedding_model_provider varchar(255),
    keyword_number           integer               DEFAULT 10,
    collection_binding_id    uuid,
    retrieval_model          jsonb,
    built_in_field_enabled   boolean      NOT NULL DEFAULT false,
    icon_info                jsonb,
    runtime_mode             varchar(255)          DEFAULT 'general',
    pipeline_id              uuid,
    chunk_structure          varchar(255),
    enable_api               boolean      NOT NULL DEFAULT true,
    is_multimodal            boolean      NOT NULL DEFAULT false,
    CONSTRAINT dataset_pkey PRIMARY KEY (id)
);
CREATE INDEX dataset_tenant_idx ON datasets (tenant_id);
CREATE INDEX retrieval_model_idx ON datasets USING gin (retrieval_model);

CREATE TABLE dataset_process_rules (
    id         uuid         NOT NULL DEFAULT gen_random_uuid(),
    dataset_id uuid         NOT NULL,
    mode       varchar(255) NOT NULL DEFAULT 'automatic',
    rules      text,
    created_by uuid         NOT NULL,
    created_at timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT dataset_process_rule_pkey PRIMARY KEY (id)
);
CREATE INDEX dataset_process_rule_dataset_id_idx ON dataset_process_rules (dataset_id);

CREATE TABLE documents (
    id                      uuid         NOT NULL DEFAULT gen_random_uuid(),
    tenant_id               uuid         NOT NULL,
    dataset_id              uuid         NOT NULL,
    position                integer      NOT NULL,
    data_source_type        varchar(255) NOT NULL,
    data_source_info        text,
    dataset_process_rule_id uuid,
    batch                   varchar(255) NOT NULL,
    name                    varchar(255) NOT NULL,
    created_from            varchar(255) NOT NULL,
    created_by              uuid         NOT NULL,
    created_api_request_id  uuid,
    created_at              timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    processing_started_at   timestamp,
    file_id                 text,
    word_count              integer,
    parsing_completed_at    timestamp,
    cleaning_completed_at   timestamp,
    splitting_completed_at  timestamp,
    tokens                  integer,
    indexing_latency        double precision,
    completed_at            timestamp,
    is_paused               boolean               DEFAULT false,
    paused_by               uuid,
    paused_at               timestamp,
    error                   text,
    stopped_at              timestamp,
    indexing_status         varchar(255) NOT NULL DEFAULT 'waiting',
    enabled                 boolean      NOT NULL DEFAULT true,
    disabled_at             timestamp,
    disabled_by             uuid,
    archived                boolean      NOT NULL DEFAULT false,
    archived_reason         varchar(255),
    archived_by             uuid,
    archived_at             timestamp,
    updated_at              timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    doc_type                varchar(40),
    doc_metadata            jsonb,
    doc_form                varchar(255) NOT NULL DEFAULT 'text_model',
    doc_language            varchar(255),
    need_summary            boolean      NOT NULL DEFAULT false,
    CONSTRAINT document_pkey PRIMARY KEY (id)
);
CREATE INDEX document_dataset_id_idx ON documents (dataset_id);
CREATE INDEX document_is_paused_idx ON documents (is_paused);
CREATE INDEX document_tenant_idx ON documents (tenant_id);
CREATE INDEX document_metadata_idx ON documents USING gin (doc_metadata);

CREATE TABLE document_segments (
    id              uuid         NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       uuid         NOT NULL,
    dataset_id      uuid         NOT NULL,
    document_id     uuid         NOT NULL,
    position        integer      NOT NULL,
    content         text         NOT NULL,
    word_count      integer      NOT NULL,
    tokens          integer      NOT NULL,
    keywords        json,
    index_node_id   varchar(255),
    index_node_hash varchar(255),
    hit_count       integer      NOT NULL DEFAULT 0,
    enabled         boolean      NOT NULL DEFAULT true,
    disabled_at     timestamp,
    disabled_by     uuid,
    status          varchar(255) NOT NULL DEFAULT 'waiting',
    created_by      uuid         NOT NULL,
    created_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    indexing_at     timestamp,
    completed_at    timestamp,
    error           text,
    stopped_at      timestamp,
    answer          text,
    updated_by      uuid,
    updated_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT document_segment_pkey PRIMARY KEY (id)
);
CREATE INDEX document_segment_dataset_id_idx ON document_segments (dataset_id);
CREATE INDEX document_segment_document_id_idx ON document_segments (document_id);
CREATE INDEX document_segment_tenant_dataset_idx ON document_segments (dataset_id, tenant_id);
CREATE INDEX document_segment_tenant_document_idx ON document_segments (document_id, tenant_id);
CREATE INDEX document_segment_node_dataset_idx ON document_segments (index_node_id, dataset_id);
CREATE INDEX document_segment_tenant_idx ON document_segments (tenant_id);

CREATE TABLE child_chunks (
    id              uuid         NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       uuid         NOT NULL,
    dataset_id      uuid         NOT NULL,
    document_id     uuid         NOT NULL,
    segment_id      uuid         NOT NULL,
    position        integer      NOT NULL,
    content         text         NOT NULL,
    word_count      integer      NOT NULL,
    index_node_id   varchar(255),
    index_node_hash varchar(255),
    type            varchar(255) NOT NULL DEFAULT 'automatic',
    created_by      uuid         NOT NULL,
    created_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_by      uuid,
    updated_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    indexing_at     timestamp,
    completed_at    timestamp,
    error           text,
    CONSTRAINT child_chunk_pkey PRIMARY KEY (id)
);
CREATE INDEX child_chunk_dataset_id_idx ON child_chunks (tenant_id, dataset_id, document_id, segment_id, index_node_id);
CREATE INDEX child_chunks_node_idx ON child_chunks (index_node_id, dataset_id);
CREATE INDEX child_chunks_segment_idx ON child_chunks (segment_id);

CREATE TABLE dataset_keyword_tables (
    id               uuid         NOT NULL DEFAULT gen_random_uuid(),
    dataset_id       uuid         NOT NULL,
    keyword_table    text         NOT NULL,
    data_source_type varchar(255) NOT NULL DEFAULT 'database',
    CONSTRAINT dataset_keyword_table_pkey PRIMARY KEY (id),
    CONSTRAINT dataset_keyword_tables_dataset_id_key UNIQUE (dataset_id)
);
CREATE INDEX dataset_keyword_table_dataset_id_idx ON dataset_keyword_tables (dataset_id);

CREATE TABLE embeddings (
    id            uuid         NOT NULL DEFAULT gen_random_uuid(),
    model_name    varchar(255) NOT NULL DEFAULT 'text-embedding-ada-002',
    hash          varchar(64)  NOT NULL,
    embedding     bytea        NOT NULL,
    created_at    timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    provider_name varchar(255) NOT NULL DEFAULT '',
    CONSTRAINT embedding_pkey PRIMARY KEY (id),
    CONSTRAINT embedding_hash_idx UNIQUE (model_name, hash, provider_name)
);
CREATE INDEX created_at_idx ON embeddings (created_at);

CREATE TABLE upload_files (
    id              uuid          NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       uuid          NOT NULL,
    storage_type    varchar(255)  NOT NULL,
    key             varchar(255)  NOT NULL,
    name            varchar(255)  NOT NULL,
    size            integer       NOT NULL,
    extension       varchar(255)  NOT NULL,
    mime_type       varchar(255),
    created_by_role varchar(255)  NOT NULL DEFAULT 'account',
    created_by      uuid          NOT NULL,
    created_at      timestamp     NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    used            boolean       NOT NULL DEFAULT false,
    used_by         uuid,
    used_at         timestamp,
    hash            varchar(255),
    source_url      text          NOT NULL DEFAULT '',
    CONSTRAINT upload_file_pkey PRIMARY KEY (id)
);
CREATE INDEX upload_file_tenant_idx ON upload_files (tenant_id);

CREATE TABLE tool_files (
    id              uuid          NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid          NOT NULL,
    tenant_id       uuid          NOT NULL,
    conversation_id uuid,
    file_key        varchar(255)  NOT NULL,
    mimetype        varchar(255)  NOT NULL,
    original_url    varchar(2048),
    name            varchar(255)  NOT NULL DEFAULT '',
    size            integer       NOT NULL DEFAULT -1,
    CONSTRAINT tool_file_pkey PRIMARY KEY (id)
);
CREATE INDEX tool_file_conversation_id_idx ON tool_files (conversation_id);

-- Annotation replies (issue #13). `apps` is reduced to the columns drtool reads plus Dify's NOT NULL ones;
-- the three annotation tables are as migrations e1901f623fd0, 46976cc39132, f2a6fc85e260, 714aafe25d39 and
-- 246ba09cbbdb leave them (DDL reconstructed in /tmp/research-13.md section 1.1). A row in
-- app_annotation_settings is what "annotation reply enabled" means: disabling deletes it.
CREATE TABLE apps (
    id                  uuid         NOT NULL DEFAULT gen_random_uuid(),
    tenant_id           uuid         NOT NULL,
    name                varchar(255) NOT NULL,
    mode                varchar(255) NOT NULL,
    icon                varchar(255),
    icon_background     varchar(255),
    app_model_config_id uuid,
    status              varchar(255) NOT NULL DEFAULT 'normal',
    enable_site         boolean      NOT NULL,
    enable_api          boolean      NOT NULL,
    api_rpm             integer      NOT NULL DEFAULT 0,
    api_rph             integer      NOT NULL DEFAULT 0,
    is_demo             boolean      NOT NULL DEFAULT false,
    is_public           boolean      NOT NULL DEFAULT false,
    description         text         NOT NULL DEFAULT '',
    created_at          timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_at          timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT app_pkey PRIMARY KEY (id)
);
CREATE INDEX app_tenant_id_idx ON apps (tenant_id);

CREATE TABLE message_annotations (
    id              uuid      NOT NULL DEFAULT gen_random_uuid(),
    app_id          uuid      NOT NULL,
    conversation_id uuid,
    message_id      uuid,
    content         text      NOT NULL,
    account_id      uuid      NOT NULL,
    created_at      timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_at      timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    question        text,
    hit_count       integer   NOT NULL DEFAULT 0,
    CONSTRAINT message_annotation_pkey PRIMARY KEY (id)
);
CREATE INDEX message_annotation_app_idx          ON message_annotations (app_id);
CREATE INDEX message_annotation_conversation_idx ON message_annotations (conversation_id);
CREATE INDEX message_annotation_message_idx      ON message_annotations (message_id);

CREATE TABLE app_annotation_hit_histories (
    id                  uuid      NOT NULL DEFAULT gen_random_uuid(),
    app_id              uuid      NOT NULL,
    annotation_id       uuid      NOT NULL,
    source              text      NOT NULL,
    question            text      NOT NULL,
    account_id          uuid      NOT NULL,
    created_at          timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    score               double precision NOT NULL DEFAULT 0,
    message_id          uuid      NOT NULL,
    annotation_question text      NOT NULL,
    annotation_content  text      NOT NULL,
    CONSTRAINT app_annotation_hit_histories_pkey PRIMARY KEY (id)
);
CREATE INDEX app_annotation_hit_histories_account_idx    ON app_annotation_hit_histories (account_id);
CREATE INDEX app_annotation_hit_histories_annotation_idx ON app_annotation_hit_histories (annotation_id);
CREATE INDEX app_annotation_hit_histories_app_idx        ON app_annotation_hit_histories (app_id);
CREATE INDEX app_annotation_hit_histories_message_idx    ON app_annotation_hit_histories (message_id);

CREATE TABLE app_annotation_settings (
    id                    uuid      NOT NULL DEFAULT gen_random_uuid(),
    app_id                uuid      NOT NULL,
    score_threshold       double precision NOT NULL DEFAULT 0,
    collection_binding_id uuid      NOT NULL,
    created_user_id       uuid      NOT NULL,
    created_at            timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    updated_user_id       uuid      NOT NULL,
    updated_at            timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0),
    CONSTRAINT app_annotation_settings_pkey PRIMARY KEY (id)
);
CREATE INDEX app_annotation_settings_app_idx ON app_annotation_settings (app_id);
