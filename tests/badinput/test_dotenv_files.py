"""Dify `.env` files as bytes on disk (tests/foundation/test_dotenv_properties.py covers parsed text): encodings,
NUL bytes and odd line separators are refused naming the file and line, and a value that passes the parser but
not a setting's type is refused naming the setting, through the same loader every command uses."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drtool.config import load_settings
from drtool.core.dotenv import decode_dotenv, parse_dotenv
from drtool.errors import ConfigError
from tests.badinput.strategies import PROFILE, SMALL, error_message

VARS = st.sampled_from(["STORAGE_TYPE", "OPENDAL_SCHEME", "OPENDAL_S3_ROOT", "S3_ENDPOINT", "S3_BUCKET_NAME",
                        "S3_USE_AWS_MANAGED_IAM", "DB_HOST", "DB_PORT", "DB_PASSWORD", "VECTOR_STORE", "REDIS_HOST",
                        "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USE_SSL", "MILVUS_URI", "WEAVIATE_ENDPOINT"])
VALUES = st.text(max_size=20) | st.sampled_from(["s3", "opendal", "true", "-1", "99999999999999999999", "x:y",
                                                 "http://[::1", "'unterminated", '"a\\"b"', "1 # comment"])


def _line_of(message: str, path: Path) -> int:
    match = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
    assert match, message
    return int(match.group(1))


@PROFILE
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_name_the_line(data: bytes) -> None:
    try:
        text = decode_dotenv(data, "docker/.env")
    except ConfigError as exc:
        start = re.match(r"docker/\.env:(\d+): not valid UTF-8", exc.message)
        assert start and exc.exit_code == 2
        # The line named is the one holding the first undecodable byte.
        good = data.decode("utf-8", "replace").split("\n")
        assert "\ufffd" in good[int(start.group(1)) - 1] or int(start.group(1)) == 1
        return
    try:
        parse_dotenv(text, "docker/.env")
    except ConfigError as exc:
        assert re.match(r"docker/\.env:\d+: ", exc.message) and exc.exit_code == 2


def test_line_numbers_are_the_editor_s() -> None:
    """Form feeds and other Unicode separators used to shift line numbers (str.splitlines)."""
    text = "A=1\x0c\nB=2\u2028x\nC=\x1c\nbad line\n"
    try:
        parse_dotenv(text, "f.env")
    except ConfigError as exc:
        assert exc.message.startswith("f.env:4: not a KEY=VALUE line")
    else:
        raise AssertionError("accepted")
    assert parse_dotenv("A=1\r\nB='x'\r\n", "f.env") == {"A": "1", "B": "x"}


@SMALL
@given(st.dictionaries(VARS, VALUES, max_size=8))
def test_loader_reads_or_names_the_setting(env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dify.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in env.items() if "\n" not in v and "\r" not in v),
                        encoding="utf-8")
        _load_or_refuse(path)


def _load_or_refuse(path: Path) -> None:
    try:
        settings = load_settings(environ={}, dify_env_path=path)
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert exc.message.startswith(f"{path}:") or re.search(
            r"setting [a-z_0-9]+\.[a-z_0-9]+ \(from dify-env:[A-Z_0-9]+\)", exc.message), exc.message
        return
    assert settings is not None


def test_cli_refuses_broken_env_files_without_traceback(tmp_path: Path) -> None:
    from tests.foundation.cli_runner import run_script

    cases = {
        "latin1.env": (b"DB_HOST=db\nDB_PASSWORD=caf\xe9\n", "latin1.env:2: not valid UTF-8"),
        "nul.env": (b"DB_HOST=db\x00\n", "nul.env:1: contains a NUL byte"),
        "quote.env": (b"# c\n\nDB_PASSWORD=\"open\n", "quote.env:3: unterminated \" quote"),
        "port.env": (b"DB_PORT=fivefour\n", "invalid value 'fivefour' for setting postgres.port"),
        "noeq.env": (b"\xef\xbb\xbfDB_HOST db\n", "noeq.env:1: not a KEY=VALUE line"),
        "ipv6.env": (b"STORAGE_TYPE=s3\nS3_ENDPOINT=http://[::1:9000\n",
                     "invalid URL for setting s3.endpoint (from dify-env:S3_ENDPOINT)"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        run = run_script("--dify-env", str(path), "config", "check")
        assert run.code == 2, (name, run.stderr)
        assert expected in error_message(run.stderr), (name, run.stderr)
        assert "Traceback" not in run.stderr and "unexpected error" not in run.stderr
