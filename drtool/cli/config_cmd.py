"""`drtool config show` and `drtool config check`."""

from __future__ import annotations

import dataclasses

import click

from drtool.cli.app import App, Outcome, conclude, global_options, pass_app
from drtool.config import SPECS, Settings
from drtool.core.dify_keys import FAMILIES, KeyAccount
from drtool.core.terminal import one_line
from drtool.errors import ExitCode, UsageError
from drtool.redact import MASK, redact


@click.group("config")
def config_group() -> None:
    """Show the effective configuration, or check that every configured system answers."""


def _display(settings: Settings, key: str) -> object:
    value = settings.get(key)
    if value is None or value == "":
        return value
    if isinstance(value, tuple):  # a list setting: a JSON list, and one line on a terminal
        return list(value) if not SPECS[key].secret else MASK
    if SPECS[key].secret:
        # A URL secret (redis://user:pw@host) stays useful with only its password masked.
        return redact(value) if isinstance(value, str) and "://" in value and "@" in value else MASK
    return value


@config_group.command("show")
@global_options
@click.option("--all", "show_all", is_flag=True, help="Also list settings that still have their default.")
@pass_app
def show(app: App, show_all: bool) -> None:
    """Print every effective setting with its source; secrets are shown as ***.

    Sources: flag, env:DRTOOL_*, file:drtool.toml, dify-env:VARIABLE, default.
    """
    settings = app.settings()
    rows = [
        {"setting": key, "value": _display(settings, key), "source": settings.sources[key]}
        for key in SPECS
        if show_all or settings.sources[key] != "default" or settings.get(key) not in (None, "", ())
    ]
    payload = {"event": "result", "settings": rows, "storage_problem": settings.storage_problem,
               "notes": list(settings.notes), "dify_keys": _keys_payload(settings)}

    def render() -> None:
        width = max((len(r["setting"]) for r in rows), default=10)
        for r in rows:
            value = "" if r["value"] is None else r["value"]
            app.echo(f"{r['setting']:<{width}}  {value!s:<40}  {r['source']}")
        if settings.storage_problem:
            app.echo(f"\nwarning: {settings.storage_problem}")
        for note in settings.notes:
            app.echo(f"note: {note}")
        if settings.dify_keys:
            app.echo(f"\nDify .env keys that name a {', '.join(FAMILIES)}:")
            width = max(len(a.key) for a in settings.dify_keys)
            for family in FAMILIES:
                for a in (a for a in settings.dify_keys if a.family == family):
                    app.echo(f"{a.key:<{width}}  {family:<15}  {one_line(a.describe())}")

    app.result(payload, render)


def _keys_payload(settings: Settings) -> list[dict[str, object]]:
    """Every accounted Dify key for --json: what it feeds, or why drtool does not use it (never its value)."""
    return [{"key": a.key, "family": a.family, "status": a.status, "settings": list(a.settings),
             "reason": a.reason, "known": a.known} for a in settings.dify_keys]


def _grouped(accounts: tuple[KeyAccount, ...]) -> list[tuple[str, list[str]]]:
    """(description, keys) with the keys that share one description together, families in FAMILIES order.

    Why: `config check` accounts for every key too, but 400 lines of Dify's .env.example would bury its verdict;
    keys that share a reason (all QDRANT_* when Weaviate is selected) fit on one line.
    """
    groups: dict[str, list[str]] = {}
    for family in FAMILIES:
        for a in (a for a in accounts if a.family == family):
            groups.setdefault(f"{family}: {a.describe()}", []).append(a.key)
    return list(groups.items())


@config_group.command("check")
@global_options
@pass_app
def check(app: App) -> int | Outcome:
    """Connect to each configured system and report reachability, version and permission problems.

    Exits 0 only when every configured system answers; otherwise 12 (credentials refused), 10 (bucket or
    database missing, the snapshot bucket included), 2 (a setting the bucket cannot honour), 1, or 3 when all
    answer but the Dify .env keeps data where drtool cannot protect it (local disk, Azure Blob, ...). The
    snapshot bucket gets a write probe (put and delete of a key under snapshot.prefix). With --dify-env, every
    database, storage, vector store and embedding key of the file is listed as used or not used, and why.
    """
    # why here: the probes' SDKs (boto3, psycopg, redis, httpx) stay out of `config show` (test_startup.py)
    from drtool.ops.check import check_systems, overall_exit_code

    settings = app.settings()
    results = check_systems(settings)
    if not results:
        raise UsageError("no system is configured", hint="pass --dify-env, --config, or DRTOOL_* variables")
    code = overall_exit_code(results)
    payload = {"event": "result", "ok": code == ExitCode.OK, "exit_code": int(code),
               "systems": [dataclasses.asdict(r) for r in results], "dify_keys": _keys_payload(settings)}

    def render() -> None:
        for r in results:
            status = "ok" if r.ok else "FAILED"
            detail = ", ".join(f"{k}={one_line(v)}" for k, v in r.details.items()) if r.ok else one_line(r.problem)
            if not r.ok and r.exit_code == int(ExitCode.DEGRADED):
                status = "WARNING"
            app.echo(f"{r.system:<20} {status:<7} {r.target}  {detail}")
        if settings.dify_keys:
            app.echo("\nDify .env keys (every one that names a database, storage, vector store or embedding model):")
            for description, keys in _grouped(settings.dify_keys):
                app.echo(f"  {one_line(description)}: {', '.join(keys)}")

    app.result(payload, render)
    return conclude(code, "; ".join(f"{r.system}: {r.problem}" for r in results if not r.ok))
