"""Settings precedence, Dify .env mapping, validation messages: pure logic, real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from drtool.config import SPECS, load_settings, render_reference
from drtool.core.dotenv import parse_dotenv
from drtool.errors import ConfigError

DIFY_S3_ENV = """\
# excerpt of a Dify docker/.env
STORAGE_TYPE=s3
S3_ENDPOINT=http://minio:9000
S3_BUCKET_NAME=difyai
S3_ACCESS_KEY=dify-access
S3_SECRET_KEY="s3-secret-value"
S3_ADDRESS_STYLE=path
DB_USERNAME=postgres
DB_PASSWORD=difyai123456
DB_HOST=db_postgres
DB_PORT=5432
DB_DATABASE=dify
VECTOR_STORE=weaviate
VECTOR_INDEX_NAME_PREFIX=Vector_index
WEAVIATE_ENDPOINT=http://weaviate:8080
WEAVIATE_API_KEY=WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih
WEAVIATE_GRPC_ENDPOINT=grpc://weaviate:50051
REDIS_HOST=redis
REDIS_PORT=6379
REDIS_PASSWORD=redis-pass-1
"""


def write_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_dify_env_maps_storage_database_vector_and_redis(tmp_path: Path) -> None:
    env = write_file(tmp_path, ".env", DIFY_S3_ENV)
    s = load_settings(environ={}, dify_env_path=env)
    assert (s.s3.endpoint, s.s3.bucket, s.s3.address_style) == ("http://minio:9000", "difyai", "path")
    assert s.s3.secret_key == "s3-secret-value"
    assert (s.postgres.host, s.postgres.port, s.postgres.user, s.postgres.database) == (
        "db_postgres", 5432, "postgres", "dify")
    assert s.vector.store == "weaviate"
    assert s.weaviate.grpc_endpoint == "grpc://weaviate:50051"
    assert s.redis.url == "redis://:redis-pass-1@redis:6379/0"
    assert s.sources["s3.endpoint"] == "dify-env:S3_ENDPOINT"
    assert s.sources["postgres.port"] == "dify-env:DB_PORT"
    assert s.sources["s3.region"] == "default"


def test_opendal_s3_with_root_becomes_key_prefix(tmp_path: Path) -> None:
    env = write_file(tmp_path, ".env", "STORAGE_TYPE=opendal\nOPENDAL_SCHEME=s3\nOPENDAL_S3_BUCKET=files\n"
                "OPENDAL_S3_ENDPOINT=http://minio:9000\nOPENDAL_S3_ACCESS_KEY_ID=k1\n"
                "OPENDAL_S3_SECRET_ACCESS_KEY=sekrit-2\nOPENDAL_S3_ROOT=/dify/data/\n")
    s = load_settings(environ={}, dify_env_path=env)
    assert s.s3.bucket == "files"
    assert s.s3.key_prefix == "dify/data/"
    assert s.s3.address_style == "path"
    assert s.storage_problem is None


@pytest.mark.parametrize("env_text, fragment", [
    ("STORAGE_TYPE=opendal\n", "OpenDAL scheme 'fs'"),
    ("STORAGE_TYPE=local\n", "STORAGE_TYPE=local"),
    ("STORAGE_TYPE=azure-blob\n", "not S3-compatible"),
])
def test_unreadable_storage_is_reported_and_blocks_s3_commands(tmp_path: Path, env_text: str, fragment: str) -> None:
    s = load_settings(environ={}, dify_env_path=write_file(tmp_path, ".env", env_text))
    assert s.storage_problem and fragment in s.storage_problem
    with pytest.raises(ConfigError, match="S3-compatible"):
        s.require_s3()


def test_precedence_flag_over_env_over_file_over_dify_env(tmp_path: Path) -> None:
    env = write_file(tmp_path, ".env", DIFY_S3_ENV)
    toml = write_file(tmp_path, "drtool.toml", '[s3]\nbucket = "from-file"\nregion = "eu-west-1"\n'
                 '[postgres]\nhost = "file-host"\nport = 6543\n')
    environ = {"DRTOOL_S3_BUCKET": "from-env", "DRTOOL_POSTGRES_PORT": "7777"}
    s = load_settings(flags={"s3.bucket": "from-flag"}, environ=environ, config_path=toml, dify_env_path=env)
    assert (s.s3.bucket, s.sources["s3.bucket"]) == ("from-flag", "flag")
    assert (s.postgres.port, s.sources["postgres.port"]) == (7777, "env:DRTOOL_POSTGRES_PORT")
    assert (s.postgres.host, s.sources["postgres.host"]) == ("file-host", f"file:{toml}")
    assert (s.s3.region, s.sources["s3.region"]) == ("eu-west-1", f"file:{toml}")
    assert (s.s3.endpoint, s.sources["s3.endpoint"]) == ("http://minio:9000", "dify-env:S3_ENDPOINT")


def test_config_and_dify_env_paths_come_from_the_environment(tmp_path: Path) -> None:
    env = write_file(tmp_path, ".env", DIFY_S3_ENV)
    toml = write_file(tmp_path, "x.toml", '[vector]\nstore = "milvus"\n')
    s = load_settings(environ={"DRTOOL_CONFIG": str(toml), "DRTOOL_DIFY_ENV": str(env)})
    assert s.vector.store == "milvus"
    assert s.s3.bucket == "difyai"


def test_host_map_replaces_compose_service_names(tmp_path: Path) -> None:
    env = write_file(tmp_path, ".env", DIFY_S3_ENV)
    s = load_settings(flags={"dify.hosts": "db_postgres=10.1.2.3, weaviate=wv.internal,minio=127.0.0.1"},
                      environ={}, dify_env_path=env)
    assert s.postgres.host == "10.1.2.3"
    assert s.weaviate.endpoint == "http://wv.internal:8080"
    assert s.weaviate.grpc_endpoint == "grpc://wv.internal:50051"
    assert s.s3.endpoint == "http://127.0.0.1:9000"
    assert s.redis.url == "redis://:redis-pass-1@redis:6379/0"  # not in the map: unchanged


@pytest.mark.parametrize("environ, fragment", [
    ({"DRTOOL_POSTGRES_PORT": "five"}, "postgres.port (from env:DRTOOL_POSTGRES_PORT): expected a whole number"),
    ({"DRTOOL_S3_ADDRESS_STYLE": "sideways"}, "expected one of auto, virtual, path"),
    ({"DRTOOL_S3_VERIFY_TLS": "maybe"}, "s3.verify_tls (from env:DRTOOL_S3_VERIFY_TLS): expected true or false"),
    ({"DRTOOL_VECTOR_STORE": "pinecone"}, "expected one of milvus, weaviate"),
])
def test_invalid_values_name_setting_source_and_accepted_values(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_invalid_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DRTOOL_EMBEDDING_DIMENSIONS": "x"})
    assert "'x'" in str(info.value)  # not a secret: shown
    spec = SPECS["s3.secret_key"]
    assert spec.secret


def test_unknown_toml_section_and_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[s4\]"):
        load_settings(environ={}, config_path=write_file(tmp_path, "a.toml", "[s4]\nbucket='x'\n"))
    with pytest.raises(ConfigError, match=r"unknown setting s3\.buckt"):
        load_settings(environ={}, config_path=write_file(tmp_path, "b.toml", "[s3]\nbuckt='x'\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={}, config_path=write_file(tmp_path, "c.toml", "[s3\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, config_path=tmp_path / "missing.toml")


def test_dotenv_reader_quotes_comments_and_line_numbers() -> None:
    values = parse_dotenv('A=1\n# c\nexport B="two words" \nC=\'lit $X\'\nD=plain # note\nE=\n', "x.env")
    assert values == {"A": "1", "B": "two words", "C": "lit $X", "D": "plain", "E": ""}
    with pytest.raises(ConfigError, match=r"x.env:3: not a KEY=VALUE line"):
        parse_dotenv("A=1\n\nthis is wrong\n", "x.env")
    with pytest.raises(ConfigError, match=r"x.env:1: unterminated"):
        parse_dotenv('A="open\n', "x.env")


def test_reference_lists_every_setting_with_its_environment_variable() -> None:
    text = render_reference()
    for spec in SPECS.values():
        assert f"`{spec.key}`" in text and f"`{spec.env_var}`" in text


def test_generated_configuration_doc_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == render_reference(), "run `make docs` to regenerate docs/configuration.md"


def test_toml_tables_and_lists_are_refused_where_a_value_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"s3\.bucket .*a single value"):
        load_settings(environ={}, config_path=write_file(tmp_path, "d.toml", "[s3]\nbucket = ['a', 'b']\n"))


def test_a_list_setting_keeps_its_items_whole_from_flags_and_toml_and_splits_a_string(tmp_path: Path) -> None:
    """snapshot.encrypt_to: a recipients-file path with a comma used to be split in two."""
    path = "/etc/drtool/recipients,dr-site.txt"
    flagged = load_settings(environ={}, flags={"snapshot.encrypt_to": (path, "age1xyz")})
    assert flagged.snapshot.encrypt_to == (path, "age1xyz")
    toml = write_file(tmp_path, "d.toml", f"[snapshot]\nencrypt_to = [{path!r}, 'age1xyz']\n")
    assert load_settings(environ={}, config_path=toml).snapshot.encrypt_to == (path, "age1xyz")
    env = load_settings(environ={"DRTOOL_SNAPSHOT_ENCRYPT_TO": "age1a, age1b,"})
    assert env.snapshot.encrypt_to == ("age1a", "age1b")
    assert load_settings(environ={}).snapshot.encrypt_to == ()
    with pytest.raises(ConfigError, match=r"snapshot\.encrypt_to .*a list of strings"):
        load_settings(environ={}, config_path=write_file(tmp_path, "e.toml", "[snapshot]\nencrypt_to = [1, 2]\n"))


def test_recipients_file_with_a_comma_in_its_path_is_read_whole(tmp_path: Path) -> None:
    import pyrage

    from drtool.adapters.age import parse_recipients

    folder = tmp_path / "keys,dr"
    folder.mkdir()
    recipients = folder / "recipients.txt"
    recipients.write_text("# the DR site\n" + str(pyrage.x25519.Identity.generate().to_public()) + "\n")
    assert len(parse_recipients([str(recipients)])) == 1


def test_sites_and_host_maps_are_list_settings_whose_flag_items_stay_whole(tmp_path: Path) -> None:
    """replication.sites and dify.hosts were comma strings joined from the flags and split again: a site whose
    password holds a comma became two broken sites. Flags and TOML arrays keep items whole; the environment's
    single string is split on commas, as before."""
    from drtool.ops.replication.sites import parse_sites
    from drtool.redact import redact

    site = "dr=http://drkey:pa,ss@minio-dr:9000"
    flagged = load_settings(environ={}, flags={"replication.sites": (site, "main=http://minio:9000")})
    assert flagged.replication.sites == (site, "main=http://minio:9000")
    assert [s.alias for s in parse_sites(flagged.replication.sites)] == ["dr", "main"]
    assert "pa,ss" not in redact(f"GET {site}") and "drkey" not in redact("key drkey")
    toml = write_file(tmp_path, "d.toml", f"[replication]\nsites = [{site!r}]\n")
    assert load_settings(environ={}, config_path=toml).replication.sites == (site,)
    env = load_settings(environ={"DRTOOL_REPLICATION_SITES": "a=http://h1:9000,b=http://h2:9000"})
    assert [s.endpoint for s in parse_sites(env.replication.sites)] == ["http://h1:9000", "http://h2:9000"]
    hosts = load_settings(environ={}, flags={"dify.hosts": ("db_postgres=10.1.2.3", "weaviate=wv.internal")},
                          dify_env_path=write_file(tmp_path, ".env", DIFY_S3_ENV))
    assert hosts.dify.hosts == ("db_postgres=10.1.2.3", "weaviate=wv.internal")
    assert hosts.postgres.host == "10.1.2.3" and hosts.weaviate.endpoint == "http://wv.internal:8080"
    with pytest.raises(ConfigError, match=r"invalid dify\.hosts entry 'weaviate'"):
        load_settings(environ={"DRTOOL_DIFY_HOSTS": "db_postgres=10.1.2.3,weaviate"},
                      dify_env_path=write_file(tmp_path, ".env", DIFY_S3_ENV))
