"""Every key of Dify's .env that names a database, storage, vector store or embedding model is accounted for.

The oracle is Dify's own file, not drtool's table: the fixture keeps the section headers of Dify 1.13.3's
docker/.env.example (commit 0055b983), and every key under a database, Redis, storage or vector-store header must
come out of `drtool.core.dify_keys` as mapped, read, or not used with a specific reason. A key the table does not
know, or a family key it drops, fails here; so does a mapping that the accounting does not report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drtool.core.dify_env import map_dify_env
from drtool.core.dify_keys import MAPPED, NOT_USED, READ, KeyAccount, account_keys, family_of, not_protected
from drtool.core.dotenv import parse_dotenv
from tests.foundation.cli_runner import run_script

FIXTURE = Path(__file__).parent / "fixtures" / "dify-1.13.3.env.example"

# Dify's section headers whose every key names a database, storage or vector store (or configures its container).
FAMILY_SECTIONS = {
    "Database Configuration", "Redis Configuration", "File Storage Configuration", "Vector Database Configuration",
    "Environment Variables for database Service", "Environment Variables for weaviate Service",
    "Environment Variables for Chroma", "Environment Variables for Oracle Service",
    "Environment Variables for milvus Service", "Environment Variables for pgvector / pgvector-rs Service",
    "Environment Variables for opensearch",
}
# Keys of mixed sections that name a database, storage, vector store or embedding model.
FAMILY_KEYS_ELSEWHERE = {
    "OPENAI_API_BASE", "DB_PLUGIN_DATABASE", "WORKFLOW_NODE_EXECUTION_STORAGE", "CELERY_BROKER_URL",
    "ENABLE_CLEAN_EMBEDDING_CACHE_TASK", "COMPOSE_PROFILES", "EVENT_BUS_REDIS_URL",
}
# Keys that name none of them: listing these would bury the ones that matter.
UNRELATED = {"CONSOLE_API_URL", "FILES_URL", "MAIL_TYPE", "SMTP_SERVER", "SMTP_PASSWORD", "PLUGIN_DAEMON_KEY",
             "PLUGIN_DAEMON_URL", "CELERY_TASK_ANNOTATIONS", "INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH"}


def sections() -> dict[str, list[str]]:
    """Dify's section header -> the keys under it, in file order."""
    out: dict[str, list[str]] = {}
    current = ""
    lines = FIXTURE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# ---") and i + 1 < len(lines) and lines[i + 1].startswith("# ") \
                and not lines[i + 1].startswith("# ---"):
            current = lines[i + 1][2:].strip()
        elif m := re.match(r"^([A-Z][A-Z0-9_]*)=", line):
            out.setdefault(current, []).append(m.group(1))
    return out


def example_env(**overrides: str) -> dict[str, str]:
    env = parse_dotenv(FIXTURE.read_text(), str(FIXTURE))
    env.update(overrides)
    return env


def accounts(**overrides: str) -> dict[str, KeyAccount]:
    return {a.key: a for a in map_dify_env(example_env(**overrides)).keys}


def test_fixture_is_dify_s_file_with_its_sections() -> None:
    """The oracle must have teeth: the sections and a few hundred keys are really there."""
    found = sections()
    assert set(found) >= FAMILY_SECTIONS, FAMILY_SECTIONS - set(found)
    assert sum(len(v) for v in found.values()) > 400
    assert "PLUGIN_STORAGE_TYPE" in found["Plugin Daemon Configuration"]


@pytest.mark.parametrize("overrides", [
    {}, {"STORAGE_TYPE": "s3"}, {"OPENDAL_SCHEME": "s3"}, {"VECTOR_STORE": "milvus"}, {"VECTOR_STORE": "pgvector"},
    {"VECTOR_STORE": "qdrant"}, {"DB_TYPE": "mysql"}, {"STORAGE_TYPE": "azure-blob"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "as-shipped")
def test_no_family_key_of_dify_s_env_example_is_silent(overrides: dict[str, str]) -> None:
    found = accounts(**overrides)
    expected = {k for name, keys in sections().items() if name in FAMILY_SECTIONS for k in keys}
    expected |= FAMILY_KEYS_ELSEWHERE
    expected |= {k for k in sections()["Plugin Daemon Configuration"]
                 if re.match(r"PLUGIN_(STORAGE|S3|AWS|AZURE|TENCENT|ALIYUN|VOLCENGINE)_|PLUGIN_.*_PATH$", k)}
    silent = expected - set(found)
    assert not silent, f"family keys nobody accounts for: {sorted(silent)}"
    assert not (UNRELATED & set(found)), UNRELATED & set(found)
    unknown = [k for k, a in found.items() if not a.known]
    assert not unknown, f"keys only a catch-all matched (give them a reason): {unknown}"
    for key, a in found.items():
        assert a.status in (MAPPED, READ, NOT_USED), key
        if a.status == MAPPED:
            assert a.settings, key
        else:
            assert len(a.reason) > 20, (key, a.reason)


def test_every_mapped_value_is_reported_as_mapped_to_its_setting() -> None:
    """The accounting is derived from what the mapping did: it cannot claim less, or more."""
    for overrides in ({}, {"STORAGE_TYPE": "s3"}, {"OPENDAL_SCHEME": "s3", "OPENDAL_S3_BUCKET": "b"},
                      {"VECTOR_STORE": "milvus"}):
        mapping = map_dify_env(example_env(**overrides))
        by_key = {a.key: a for a in mapping.keys}
        for setting, (_, var) in mapping.values.items():
            assert by_key[var].status == MAPPED and setting in by_key[var].settings, (overrides, setting, var)
        for a in mapping.keys:
            if a.status == MAPPED:
                assert any(v[1] == a.key for v in mapping.values.values()) or a.settings == ("redis.url",), a


def test_what_the_issue_names_is_reported_with_its_reason() -> None:
    found = accounts()
    plugin_db = found["DB_PLUGIN_DATABASE"]  # issue #13: snapshots dump the plugin daemon's database too
    assert plugin_db.status == MAPPED and plugin_db.settings == ("postgres.plugin_database",)
    # As shipped the plugin daemon stores plugins on its local volume: said not protected on every plugin key.
    for key in ("PLUGIN_STORAGE_TYPE", "PLUGIN_S3_ENDPOINT", "PLUGIN_AWS_SECRET_KEY"):
        assert "PLUGIN_STORAGE_TYPE=local" in found[key].reason and "NOT PROTECTED" in found[key].reason, key
    # Archive storage is disabled as shipped: said so (workflow runs stay in the main database).
    assert "disabled here" in found["ARCHIVE_STORAGE_ARCHIVE_BUCKET"].reason
    assert found["ARCHIVE_STORAGE_ENABLED"].status == READ
    # aws_s3 in Dify's own bucket: mapped, and its prefixes pinned; in another bucket: pinned as an extra store.
    same = accounts(STORAGE_TYPE="s3", S3_BUCKET_NAME="difyai", PLUGIN_STORAGE_TYPE="aws_s3",
                    PLUGIN_STORAGE_OSS_BUCKET="difyai", PLUGIN_S3_ENDPOINT="")
    assert same["PLUGIN_STORAGE_OSS_BUCKET"].settings == ("snapshot.plugin_storage_bucket",)
    assert "pin its prefixes" in same["PLUGIN_S3_USE_PATH_STYLE"].reason
    other = accounts(STORAGE_TYPE="s3", S3_BUCKET_NAME="difyai", PLUGIN_STORAGE_TYPE="aws_s3",
                     PLUGIN_STORAGE_OSS_BUCKET="plugins")
    assert "extra store" in other["PLUGIN_S3_USE_PATH_STYLE"].reason
    assert not [a.key for a in not_protected(list(other.values())) if a.key.startswith("PLUGIN_")]
    # As shipped Dify keeps files on local disk (opendal + fs): not protected, said on the keys that decide it.
    assert "NOT PROTECTED" in found["OPENDAL_SCHEME"].reason
    assert "NOT PROTECTED" in found["OPENDAL_FS_ROOT"].reason
    assert "only when STORAGE_TYPE=s3" in found["S3_BUCKET_NAME"].reason
    assert "only when VECTOR_STORE=qdrant" in found["QDRANT_URL"].reason
    assert found["WEAVIATE_ENDPOINT"].settings == ("weaviate.endpoint",)
    assert "container" in found["WEAVIATE_PERSISTENCE_DATA_PATH"].reason
    assert "not Dify's file storage" in found["MINIO_ACCESS_KEY"].reason


def test_the_selected_backend_flips_what_is_used() -> None:
    s3 = accounts(STORAGE_TYPE="s3")
    assert s3["S3_BUCKET_NAME"].settings == ("s3.bucket",)
    assert "empty here: s3.access_key" in s3["S3_ACCESS_KEY"].reason  # blank in the fixture: said so, not "unknown"
    assert "only when STORAGE_TYPE=opendal" in s3["OPENDAL_FS_ROOT"].reason
    # Dify's files are protected; only the plugin daemon's local storage (the example's default) is not.
    assert {a.key for a in not_protected(list(map_dify_env(example_env(STORAGE_TYPE="s3")).keys))} \
        <= {k for k in example_env() if k.startswith("PLUGIN_")}
    assert not not_protected(list(map_dify_env(example_env(STORAGE_TYPE="s3", PLUGIN_STORAGE_TYPE="aws_s3",
                                                           PLUGIN_STORAGE_OSS_BUCKET="difyai",
                                                           S3_BUCKET_NAME="difyai", PLUGIN_S3_ENDPOINT="")).keys))
    qdrant = accounts(VECTOR_STORE="qdrant")
    assert "NOT PROTECTED" in qdrant["QDRANT_URL"].reason
    assert qdrant["VECTOR_STORE"].status == READ
    mysql = accounts(DB_TYPE="mysql")
    assert mysql["DB_HOST"].status == NOT_USED and "NOT PROTECTED" in mysql["DB_HOST"].reason


def test_plugin_and_archive_storage_keys_map_to_their_extra_stores() -> None:
    """Issue 13: the plugin daemon's and archive storage's own endpoint, bucket, region and credentials."""
    plugin = map_dify_env(example_env(PLUGIN_STORAGE_TYPE="aws_s3", PLUGIN_STORAGE_OSS_BUCKET="plugins",
                                      PLUGIN_S3_ENDPOINT="http://minio:9000", PLUGIN_AWS_REGION="eu-west-1",
                                      PLUGIN_AWS_ACCESS_KEY="plugin-ak", PLUGIN_AWS_SECRET_KEY="plugin-sk"),
                          host_map={"minio": "10.0.0.7"})
    assert {k: v for k, v in plugin.values.items() if k.startswith("snapshot.plugin")} == {
        "snapshot.plugin_storage_bucket": ("plugins", "PLUGIN_STORAGE_OSS_BUCKET"),
        "snapshot.plugin_storage_endpoint": ("http://10.0.0.7:9000", "PLUGIN_S3_ENDPOINT"),
        "snapshot.plugin_storage_region": ("eu-west-1", "PLUGIN_AWS_REGION"),
        "snapshot.plugin_storage_access_key": ("plugin-ak", "PLUGIN_AWS_ACCESS_KEY"),
        "snapshot.plugin_storage_secret_key": ("plugin-sk", "PLUGIN_AWS_SECRET_KEY")}
    by_key = {a.key: a for a in plugin.keys}
    for key in ("PLUGIN_STORAGE_OSS_BUCKET", "PLUGIN_S3_ENDPOINT", "PLUGIN_AWS_REGION", "PLUGIN_AWS_ACCESS_KEY",
                "PLUGIN_AWS_SECRET_KEY"):
        assert by_key[key].status == MAPPED, key
    archive_env = dict(ARCHIVE_STORAGE_ENDPOINT="http://archive:9000", ARCHIVE_STORAGE_ARCHIVE_BUCKET="runs",
                       ARCHIVE_STORAGE_EXPORT_BUCKET="exports", ARCHIVE_STORAGE_ACCESS_KEY="arch-ak",
                       ARCHIVE_STORAGE_SECRET_KEY="arch-sk", ARCHIVE_STORAGE_REGION="auto")
    off = map_dify_env(example_env(**archive_env))  # ARCHIVE_STORAGE_ENABLED=false in the fixture
    assert not [k for k in off.values if k.startswith("snapshot.archive")]
    on = map_dify_env(example_env(ARCHIVE_STORAGE_ENABLED="true", **archive_env))
    assert {k: v[0] for k, v in on.values.items() if k.startswith("snapshot.archive")} == {
        "snapshot.archive_storage_bucket": "runs", "snapshot.archive_storage_endpoint": "http://archive:9000",
        "snapshot.archive_storage_region": "auto", "snapshot.archive_storage_access_key": "arch-ak",
        "snapshot.archive_storage_secret_key": "arch-sk"}
    by_key = {a.key: a for a in on.keys}
    for key in ("ARCHIVE_STORAGE_ARCHIVE_BUCKET", "ARCHIVE_STORAGE_ENDPOINT", "ARCHIVE_STORAGE_ACCESS_KEY",
                "ARCHIVE_STORAGE_SECRET_KEY", "ARCHIVE_STORAGE_REGION"):
        assert by_key[key].status == MAPPED, key
    assert by_key["ARCHIVE_STORAGE_EXPORT_BUCKET"].status == NOT_USED
    assert "not pinned" in by_key["ARCHIVE_STORAGE_EXPORT_BUCKET"].reason
    assert not [a for a in not_protected(list(on.keys)) if a.key.startswith("ARCHIVE_")]


def test_extra_store_credentials_are_secrets_with_file_forms(tmp_path: Path) -> None:
    """The store keys follow s3.secret_key: `_FILE` in the environment, `_file` in drtool.toml, masked in output."""
    from drtool.config import load_settings, setting_specs

    specs = {sp.key: sp for sp in setting_specs()}
    for store in ("plugin", "archive"):
        for part in ("access_key", "secret_key"):
            assert specs[f"snapshot.{store}_storage_{part}"].secret, (store, part)
    secret = tmp_path / "plugin-secret"
    secret.write_text("plugin-sk-from-file\n")
    settings = load_settings(environ={"DRTOOL_SNAPSHOT_PLUGIN_STORAGE_SECRET_KEY_FILE": str(secret)},
                             config_path=_drtool_toml(tmp_path, f'[snapshot]\narchive_storage_secret_key_file = '
                                                                f'"{secret}"\n'))
    assert settings.snapshot.plugin_storage_secret_key == "plugin-sk-from-file"
    assert settings.snapshot.archive_storage_secret_key == "plugin-sk-from-file"


def _drtool_toml(folder: Path, text: str) -> Path:
    path = folder / "drtool.toml"
    path.write_text(text)
    return path


def test_a_family_key_newer_than_the_table_is_listed_not_dropped() -> None:
    found = {a.key: a for a in account_keys({"DB_SOMETHING_NEW": "x", "FOO_VECTOR_BAR": "y", "UNRELATED": "z"}, {})}
    assert set(found) == {"DB_SOMETHING_NEW", "FOO_VECTOR_BAR"}
    assert not found["DB_SOMETHING_NEW"].known and "no drtool setting" in found["DB_SOMETHING_NEW"].reason
    assert family_of("UNRELATED") is None


def test_config_show_lists_every_family_key_in_text_and_json_without_values(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    secret = "pw-Zq8-not-to-be-printed"
    env_file.write_text(FIXTURE.read_text().replace("DB_PASSWORD=\n", f"DB_PASSWORD={secret}\n"))
    expected = {a.key for a in map_dify_env(example_env(DB_PASSWORD=secret)).keys}
    text = run_script("--dify-env", str(env_file), "config", "show", cwd=tmp_path)
    assert text.code == 0, text.stderr
    shown = {line.split()[0] for line in text.stdout.split("Dify .env keys", 1)[1].splitlines()[1:] if line.strip()}
    assert shown == expected
    assert "DB_PLUGIN_DATABASE" in text.stdout and "postgres.plugin_database" in text.stdout
    assert "not covered yet (issue #13)" in text.stdout  # Aliyun SLS Logstore still is not
    run = run_script("--dify-env", str(env_file), "config", "show", "--json", cwd=tmp_path)
    assert run.code == 0, run.stderr
    (result,) = [e for e in run.json_lines() if "dify_keys" in e]
    rows = result["dify_keys"]
    assert isinstance(rows, list) and {r["key"] for r in rows} == expected
    assert all(r["status"] == "mapped" or r["reason"] for r in rows)
    assert secret not in text.stdout + text.stderr + run.stdout + run.stderr
    assert secret not in json.dumps(rows)
