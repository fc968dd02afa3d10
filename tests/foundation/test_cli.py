"""The CLI contract every command follows: exit codes, --json on stdout, no secrets, no raw tracebacks."""

from __future__ import annotations

from pathlib import Path

from tests.foundation.cli_runner import ProcessRun, run_script
from tests.foundation.test_settings import DIFY_S3_ENV

SECRETS = ("dify-access", "s3-secret-value", "difyai123456", "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih", "redis-pass-1")


def test_help_and_version() -> None:
    run = run_script("--help")
    assert run.code == 0
    assert "Exit codes" in run.stdout and "config" in run.stdout
    version = run_script("--version")
    assert version.code == 0 and version.stdout.startswith("drtool, version ")


def test_config_show_dify_env_json_masks_every_secret(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(DIFY_S3_ENV)
    run = run_script("config", "show", "--dify-env", str(env), "--json")
    assert run.code == 0, run.stderr
    (event,) = run.json_lines()
    rows = {r["setting"]: r for r in event["settings"]}
    assert rows["s3.bucket"] == {"setting": "s3.bucket", "value": "difyai", "source": "dify-env:S3_BUCKET_NAME"}
    assert rows["s3.secret_key"]["value"] == "***"
    assert rows["postgres.password"]["value"] == "***"
    assert rows["weaviate.api_key"]["value"] == "***"
    assert rows["redis.url"]["value"] == "redis://:***@redis:6379/0"
    assert rows["vector.store"]["value"] == "weaviate"
    for secret in SECRETS:
        assert secret not in run.stdout and secret not in run.stderr


def test_global_options_work_before_and_after_the_command(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(DIFY_S3_ENV)
    before = run_script("--json", "--dify-env", str(env), "config", "show")
    after = run_script("config", "show", "--dify-env", str(env), "--json")
    assert before.code == after.code == 0

    def stable(run: ProcessRun) -> list[dict[str, object]]:  # the time of a run is its own
        return [{k: v for k, v in e.items() if k not in ("ts", "duration_seconds")} for e in run.json_lines()]

    assert stable(before) == stable(after)


def test_human_output_shows_sources(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(DIFY_S3_ENV)
    run = run_script("config", "show", "--dify-env", str(env), env={"DRTOOL_S3_BUCKET": "override"})
    assert run.code == 0
    line = next(line for line in run.stdout.splitlines() if line.startswith("s3.bucket"))
    assert "override" in line and "env:DRTOOL_S3_BUCKET" in line
    for secret in SECRETS:
        assert secret not in run.stdout


def test_usage_errors_exit_2() -> None:
    assert run_script("no-such-command").code == 2
    assert run_script("config", "show", "--no-such-flag").code == 2


def test_invalid_setting_exits_2_with_a_message_naming_it(tmp_path: Path) -> None:
    run = run_script("config", "show", env={"DRTOOL_POSTGRES_PORT": "abc"})
    assert run.code == 2
    assert "postgres.port" in run.stderr and "env:DRTOOL_POSTGRES_PORT" in run.stderr
    assert "Traceback" not in run.stderr


def test_invalid_setting_in_json_mode_emits_an_error_result() -> None:
    run = run_script("--json", "config", "show", env={"DRTOOL_S3_ADDRESS_STYLE": "diagonal"})
    assert run.code == 2
    (event,) = run.json_lines()
    assert event["event"] == "result" and event["error"] == "ConfigError" and event["exit_code"] == 2
    assert "s3.address_style" in str(event["message"])


def test_unsupported_dify_storage_is_reported(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STORAGE_TYPE=local\nDB_HOST=db\n")
    run = run_script("config", "show", "--dify-env", str(env))
    assert run.code == 0
    assert "STORAGE_TYPE=local" in run.stdout and "not S3-compatible" in run.stdout


def test_config_check_with_nothing_configured_is_a_usage_error(tmp_path: Path) -> None:
    run = run_script("config", "check", cwd=tmp_path)
    assert run.code == 2
    assert "no system is configured" in run.stderr
