"""Secrets from files (`DRTOOL_<KEY>_FILE`, `<name>_file` in drtool.toml) and the system-wide configuration file.

Kubernetes and Docker mount secrets as files, systemd passes credentials as files: an environment variable holding
the secret itself ends up in `ps e`, crash reports and `docker inspect`. The end-to-end case runs `config check`
against the real Postgres and MinIO with both secrets read from files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import drtool.config as config
from drtool.config import load_settings
from drtool.errors import ConfigError
from tests.foundation.cli_runner import run_script


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(0o600)
    return path


def test_env_file_form_reads_the_secret_and_drops_one_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pg", "pw from a file\n")
    settings = load_settings(environ={"DRTOOL_POSTGRES_PASSWORD_FILE": str(path)})
    assert settings.postgres.password == "pw from a file"
    assert settings.sources["postgres.password"] == "env:DRTOOL_POSTGRES_PASSWORD_FILE"


def test_both_forms_at_once_are_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pg", "one")
    with pytest.raises(ConfigError, match="both DRTOOL_POSTGRES_PASSWORD and DRTOOL_POSTGRES_PASSWORD_FILE"):
        load_settings(environ={"DRTOOL_POSTGRES_PASSWORD_FILE": str(path), "DRTOOL_POSTGRES_PASSWORD": "two"})


@pytest.mark.parametrize("content, problem", [("", "is empty"), ("x" * (64 * 1024 + 1), "is over"),
                                              (b"\xff\xfe".decode("latin-1"), "not UTF-8")])
def test_bad_secret_files_name_the_file_not_the_content(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(environ={"DRTOOL_S3_SECRET_KEY_FILE": str(path)})
    assert "DRTOOL_S3_SECRET_KEY_FILE" in str(caught.value)
    assert content[:20] not in str(caught.value) or not content


def test_a_missing_secret_file_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"secret setting s3\.secret_key .*No such file"):
        load_settings(environ={"DRTOOL_S3_SECRET_KEY_FILE": str(tmp_path / "absent")})


def test_toml_file_form(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "s3", "from-a-file\n")
    toml = tmp_path / "drtool.toml"
    toml.write_text(f'[s3]\nsecret_key_file = "{path}"\n')
    settings = load_settings(environ={}, config_path=toml)
    assert settings.s3.secret_key == "from-a-file"
    toml.write_text(f'[s3]\nsecret_key_file = "{path}"\nsecret_key = "inline"\n')
    with pytest.raises(ConfigError, match=r"both s3\.secret_key and s3\.secret_key_file"):
        load_settings(environ={}, config_path=toml)


def test_a_non_secret_setting_has_no_file_form(tmp_path: Path) -> None:
    toml = tmp_path / "drtool.toml"
    toml.write_text('[s3]\nbucket_file = "/etc/passwd"\n')
    with pytest.raises(ConfigError, match=r"unknown setting s3\.bucket_file"):
        load_settings(environ={}, config_path=toml)


def test_system_config_is_read_when_there_is_no_local_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "drtool.toml"
    system.parent.mkdir()
    system.write_text('[s3]\nbucket = "from-etc"\n')
    monkeypatch.setattr(config, "SYSTEM_CONFIG_FILE", system)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = load_settings(environ={})
    assert settings.s3.bucket == "from-etc" and settings.sources["s3.bucket"] == f"file:{system}"
    (work / "drtool.toml").write_text('[s3]\nregion = "eu-west-1"\n')  # a local file wins, and is not merged
    settings = load_settings(environ={})
    assert settings.s3.region == "eu-west-1" and settings.s3.bucket is None


def test_config_check_with_secrets_from_files(pg: Any, minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    bucket = f"secretfile-{tmp_path.name[-8:].lower().replace('_', '-')}"
    site.s3_client().create_bucket(Bucket=bucket)
    pg_file = secret_file(tmp_path, "pg", pg.password + "\n")
    s3_file = secret_file(tmp_path, "s3", site.secret_key)
    env = {"DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
           "DRTOOL_POSTGRES_PASSWORD_FILE": str(pg_file), "DRTOOL_POSTGRES_DATABASE": "postgres",
           "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
           "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY_FILE": str(s3_file)}
    run = run_script("config", "check", env=env, cwd=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    shown = run_script("config", "show", env=env, cwd=tmp_path)
    assert shown.code == 0 and "env:DRTOOL_S3_SECRET_KEY_FILE" in shown.stdout, shown.stdout
    for secret in (pg.password, site.secret_key):
        assert secret not in run.stdout + run.stderr + shown.stdout + shown.stderr
