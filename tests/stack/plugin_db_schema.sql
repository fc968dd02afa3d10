-- The Dify plugin daemon's database (Dify's DB_PLUGIN_DATABASE, default dify_plugin), minimal but faithful.
--
-- Reconstructed, not copied: the daemon creates these tables with gorm AutoMigrate from its model structs
-- (langgenius/dify-plugin-daemon commit bdb5642a19009c944b78eca12f3d176801a4a8be, internal/db/init.go:14-28,
-- internal/types/models/*.go). gorm on PostgreSQL maps `size:N` strings to varchar(N), strings without a size to
-- text, Go int to bigint, time.Time to timestamptz and `serializer:json` to text; every model embeds
-- models.Model (base.go:10-14): a UUIDv7 `id` primary key and created_at/updated_at. Index names follow gorm's
-- idx_<table>_<column> convention. Not in AutoMigrate, so not here: plugin_invocations (statistic.go).

CREATE TABLE plugins (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    plugin_unique_identifier varchar(255),
    plugin_id                varchar(255),
    refers                   bigint DEFAULT 0,
    install_type             varchar(127),
    manifest_type            varchar(127),
    remote_declaration       text,
    source                   varchar(63) DEFAULT ''
);
CREATE UNIQUE INDEX idx_plugin_unique_identifier ON plugins (plugin_unique_identifier);
CREATE INDEX idx_plugins_plugin_id ON plugins (plugin_id);
CREATE INDEX idx_plugins_install_type ON plugins (install_type);

CREATE TABLE serverless_runtimes (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    plugin_unique_identifier varchar(255) UNIQUE,
    function_url             varchar(255),
    function_name            varchar(127),
    type                     varchar(127),
    checksum                 varchar(127)
);
CREATE INDEX idx_serverless_runtimes_checksum ON serverless_runtimes (checksum);

CREATE TABLE plugin_declarations (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    plugin_unique_identifier varchar(255) UNIQUE,
    plugin_id                varchar(255),
    declaration              text  -- the JSON manifest, icon and asset media ids included
);
CREATE INDEX idx_plugin_declarations_plugin_id ON plugin_declarations (plugin_id);

CREATE TABLE plugin_installations (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    tenant_id                uuid,
    plugin_id                varchar(255),
    plugin_unique_identifier varchar(255),
    runtime_type             varchar(127),
    endpoints_setups         bigint,
    endpoints_active         bigint,
    source                   varchar(63),
    meta                     text
);
CREATE UNIQUE INDEX idx_tenant_plugin ON plugin_installations (tenant_id, plugin_id);
CREATE INDEX idx_plugin_installations_tenant_id ON plugin_installations (tenant_id);
CREATE INDEX idx_plugin_installations_plugin_id ON plugin_installations (plugin_id);
CREATE INDEX idx_plugin_installations_plugin_unique_identifier ON plugin_installations (plugin_unique_identifier);

-- model.go, tool.go, agent.go, datasource.go, trigger.go: the same shape, one table per plugin category.
CREATE TABLE ai_model_installations (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    provider                 varchar(127) NOT NULL,
    tenant_id                uuid NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id                varchar(255)
);
CREATE INDEX idx_ai_model_installations_provider ON ai_model_installations (provider);
CREATE INDEX idx_ai_model_installations_tenant_id ON ai_model_installations (tenant_id);
CREATE INDEX idx_ai_model_installations_plugin_unique_identifier ON ai_model_installations (plugin_unique_identifier);
CREATE INDEX idx_ai_model_installations_plugin_id ON ai_model_installations (plugin_id);

CREATE TABLE tool_installations (LIKE ai_model_installations INCLUDING ALL);
CREATE TABLE agent_strategy_installations (LIKE ai_model_installations INCLUDING ALL);
CREATE TABLE datasource_installations (LIKE ai_model_installations INCLUDING ALL);
CREATE TABLE trigger_installations (LIKE ai_model_installations INCLUDING ALL);

CREATE TABLE endpoints (
    id         uuid PRIMARY KEY,
    created_at timestamptz,
    updated_at timestamptz,
    name       varchar(127) DEFAULT 'default',
    hook_id    varchar(127) UNIQUE,
    tenant_id  varchar(64),
    user_id    varchar(64),
    plugin_id  varchar(64),
    expired_at timestamptz,
    enabled    boolean,
    settings   text
);
CREATE INDEX idx_endpoints_tenant_id ON endpoints (tenant_id);
CREATE INDEX idx_endpoints_user_id ON endpoints (user_id);
CREATE INDEX idx_endpoints_plugin_id ON endpoints (plugin_id);

CREATE TABLE install_tasks (
    id                uuid PRIMARY KEY,
    created_at        timestamptz,
    updated_at        timestamptz,
    status            varchar(50) NOT NULL,
    tenant_id         uuid NOT NULL,
    total_plugins     bigint NOT NULL,
    completed_plugins bigint NOT NULL,
    plugins           text
);
CREATE INDEX idx_install_tasks_status ON install_tasks (status);

CREATE TABLE tenant_storages (
    id         uuid PRIMARY KEY,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id  varchar(255) NOT NULL,
    plugin_id  varchar(255) NOT NULL,
    size       bigint NOT NULL
);
CREATE INDEX idx_tenant_storages_tenant_id ON tenant_storages (tenant_id);
CREATE INDEX idx_tenant_storages_plugin_id ON tenant_storages (plugin_id);

CREATE TABLE plugin_readme_records (
    id                       uuid PRIMARY KEY,
    created_at               timestamptz,
    updated_at               timestamptz,
    plugin_unique_identifier varchar(255) NOT NULL,
    language                 varchar(10) NOT NULL,
    content                  text NOT NULL
);
CREATE INDEX idx_plugin_readme_records_plugin_unique_identifier ON plugin_readme_records (plugin_unique_identifier);
