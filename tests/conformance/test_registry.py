"""The registry is the only place that picks a vector store: its names, its errors, and what it costs at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from drtool.adapters import vector_stores
from drtool.config import SPECS, load_settings
from drtool.core.ports import VECTOR_STORES
from drtool.errors import ConfigError, ExitCode
from tests.conformance.backends import BACKENDS

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_is_registered_once_and_the_settings_offer_exactly_those() -> None:
    assert vector_stores.names() == VECTOR_STORES
    assert SPECS["vector.store"].choices == VECTOR_STORES
    for name in VECTOR_STORES:
        entry = vector_stores.get(name)
        assert entry.name == name
        assert entry.section in {key.split(".")[0] for key in SPECS}  # a settings section of its own
    assert {spec.store for spec in BACKENDS} == set(VECTOR_STORES)  # each backend has a conformance entry


def test_the_cli_offers_the_registered_names() -> None:
    from drtool.cli.main import cli

    for command, option in (("rebuild-index", "target"), ("verify", "vector_store")):
        loaded = cli.get_command(click.Context(cli), command)
        assert loaded is not None
        params = {p.name: p for p in loaded.params}
        assert tuple(params[option].type.choices) == VECTOR_STORES  # type: ignore[attr-defined]


def test_an_unknown_or_missing_choice_is_a_usage_error() -> None:
    with pytest.raises(ConfigError) as caught:
        vector_stores.get("qdrant")
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(ConfigError):
        vector_stores.get(None)


@pytest.mark.parametrize("name", VECTOR_STORES)
def test_an_unconfigured_backend_says_which_setting_to_give(name: str) -> None:
    settings = load_settings(flags={"vector.store": name}, environ={}, config_path=None)
    entry = vector_stores.get(name)
    assert not entry.configured(settings)
    assert vector_stores.to_check(settings) == [entry]  # config check still reports it, as failing
    with pytest.raises(ConfigError) as caught:
        vector_stores.open_store(settings)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint == entry.hint and entry.hint


def test_help_imports_no_vector_sdk() -> None:
    """`drtool --help` (and every cron run's start-up) must not pay for pymilvus or weaviate-client."""
    code = ("import sys\nfrom click.testing import CliRunner\nfrom drtool.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['rebuild-index', '--help'])\nassert r.exit_code == 0, r.output\n"
            "import drtool.adapters.vector_stores, drtool.ops.check, drtool.ops.verify.closure, drtool.ops.drill.run\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pymilvus', 'weaviate')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert out.strip() == "[]"
