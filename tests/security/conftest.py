"""Helpers of the security tests: real MinIO users with a given policy, drtool run as a separate process (as cron
runs it, so stderr, exit codes and logging are the real ones), and the forms a leaked secret can take."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from tests.helpers.buckets import new_bucket  # noqa: F401  (re-exported for tests/security)
from tests.helpers.cli import ProcessRun, run_process
from tests.stack.minio_sites import MinioSites

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str, env: dict[str, str], cwd: Path, label: str = "", timeout: float = 300) -> ProcessRun:
    """`python -m drtool ARGS` with exactly `env` for its DRTOOL_* settings (nothing inherited from the test),
    labelled for the secret scan's report."""
    done = run_process(args, env, cwd=cwd, timeout=timeout)  # every --json run obeys docs/json.md
    return ProcessRun(done.code, done.stdout, done.stderr, done.seconds, label=label or " ".join(args[:2]),
                      args=tuple(args))


def leak_forms(secret: str) -> dict[str, str]:
    """The shapes a secret takes when a library or a careless f-string writes it: raw, URL-encoded, base64."""
    forms = {
        "raw": secret,
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "base64": base64.b64encode(secret.encode()).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        "json-escaped": json.dumps(secret)[1:-1],
    }
    return {name: form for name, form in forms.items() if len(form) >= 8}


def find_leaks(secrets: dict[str, str], text: str | bytes, where: str) -> list[str]:
    """'<secret name> (<form>) in <where>' for every form of every secret found in `text`."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="replace")
    found = []
    for name, secret in secrets.items():
        for form_name, form in leak_forms(secret).items():
            if form.encode() in data:
                found.append(f"{name} ({form_name}) in {where}")
    return found


def add_minio_user(sites: MinioSites, policy: dict[str, Any] | None = None, *, builtin: str | None = None,
                   secret: str | None = None) -> tuple[str, str]:
    """A real MinIO user on site A holding exactly `policy` (or a built-in policy); returns (access, secret)."""
    user = f"u{uuid.uuid4().hex[:12]}"
    secret = secret or f"sk-{uuid.uuid4().hex}"
    alias = sites.a.alias
    sites.mc("admin", "user", "add", alias, user, secret)
    name = builtin
    if policy is not None:
        name = f"p{uuid.uuid4().hex[:12]}"
        path = Path(sites.mc_config_dir) / f"{name}.json"
        path.write_text(json.dumps(policy))
        sites.mc("admin", "policy", "create", alias, name, str(path))
    assert name is not None
    sites.mc("admin", "policy", "attach", alias, name, "--user", user)
    return user, secret


