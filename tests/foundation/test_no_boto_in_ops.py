"""Operations talk to object storage through the ObjectStore port (drtool/core/ports.py), never through the SDK.

docs/architecture.md: adapters/ are the only modules that import an SDK; an S3 failure reaches ops/ as a drtool
error (NotFound, AccessDenied, PreconditionFailed, ...), translated once in drtool/adapters/s3/errors.py. This test
reads every module of drtool/ops/ (syntax tree, so comments and docstrings do not count) and fails on:

- SDK: an import of boto3 / botocore / s3transfer (also inside a function), the name ClientError, or a string
  naming the SDK (`type(exc).__module__.startswith("botocore")`);
- RAW: a call with a `Bucket=` keyword, i.e. an S3 request built by hand instead of a port method.

Each allow-list names the modules not ported yet. Port a module, delete its line; test_remaining_uses_are_listed
prints what each listed module still holds (`pytest -rP`), so the lists can be emptied deliberately.
"""

from __future__ import annotations

import ast
from pathlib import Path

OPS = Path(__file__).resolve().parents[2] / "drtool" / "ops"
SDK = ("boto3", "botocore", "s3transfer")

SDK_ALLOWED: set[str] = set()  # every ops/ module is off the SDK
# Requests the port has no method for yet, each with its reason (the port would need these shapes first).
RAW_ALLOWED = {
    "snapshot/pinning.py",  # the Object-Lock copy of an unversioned object (copy with retention, locked_call)
    "audit/checks_bucket.py",  # the write / anonymous-read probes
    "audit/checks_s3.py",  # the multipart probe and its clean-up
    "audit/runner.py",  # HEAD bucket before a bucket's checks
    "check_destination.py",  # config check's put/delete/versioning/Object Lock probes
}


def sdk_uses(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in SDK]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in SDK:
            out.append(f"line {node.lineno}: from {node.module} import ...")
        elif (isinstance(node, ast.Attribute) and node.attr == "ClientError") or (
                isinstance(node, ast.Name) and node.id == "ClientError"):
            out.append(f"line {node.lineno}: ClientError")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] in SDK:
            out.append(f"line {node.lineno}: the string {node.value!r}")
    return out


def raw_requests(tree: ast.AST) -> list[str]:
    return [f"line {node.lineno}: {ast.unparse(node.func)}(Bucket=...)" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and any(k.arg == "Bucket" for k in node.keywords)]


def _scan() -> dict[str, tuple[list[str], list[str]]]:
    found = {}
    for path in sorted(OPS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found[path.relative_to(OPS).as_posix()] = (sdk_uses(tree), raw_requests(tree))
    return found


def test_scanner_sees_what_it_must() -> None:
    """The checks themselves: each pattern is caught, comments and docstrings are not."""
    code = ('"""botocore in a docstring"""\n# import boto3\n'
            "def f(c):\n    import botocore.exceptions as bex\n    try:\n        c.put_object(Bucket='b', Key='k')\n"
            "    except bex.ClientError:\n        pass\n    return type(c).__module__.startswith('botocore')\n")
    tree = ast.parse(code)
    assert [u.split(":")[0] for u in sdk_uses(tree)] == ["line 4", "line 7", "line 9"]
    assert raw_requests(tree) == ["line 6: c.put_object(Bucket=...)"]


def test_ops_use_no_sdk_outside_the_allow_list() -> None:
    found = _scan()
    offenders = {name: sdk for name, (sdk, _) in found.items() if sdk and name not in SDK_ALLOWED}
    assert not offenders, f"ops/ must use the ObjectStore port, not the SDK: {offenders}"


def test_ops_build_no_raw_s3_requests_outside_the_allow_list() -> None:
    found = _scan()
    offenders = {name: raw for name, (_, raw) in found.items() if raw and name not in RAW_ALLOWED}
    assert not offenders, f"ops/ must call ObjectStore methods, not build S3 requests: {offenders}"


def test_allow_lists_only_name_existing_modules() -> None:
    """A module leaves its allow-list once ported; entries for modules that no longer exist are stale.

    (A listed module that is already clean is reported by the message below, not failed: another engineer may
    land its port at any time, and emptying the list is the reviewer's step.)
    """
    found = _scan()
    stale = (SDK_ALLOWED | RAW_ALLOWED) - found.keys()
    assert not stale, f"allow-listed modules that do not exist: {stale}"


def test_remaining_uses_are_listed() -> None:
    """Prints what is left to port (pytest -rP shows it), so the allow-lists can be emptied deliberately."""
    found = _scan()
    for name in sorted(SDK_ALLOWED | RAW_ALLOWED):
        sdk, raw = found[name]
        print(f"{name}: {len(sdk)} SDK use(s), {len(raw)} raw request(s)" + (" - ported, remove it" if not (
            sdk or raw) else ""))
