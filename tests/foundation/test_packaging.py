"""Packaging rules: bounded dependency ranges, a light base install, the license, and constraints.txt in step.

`make install` (and so CI) installs with `-c constraints.txt`; pyproject.toml holds the ranges drtool's users get.
These tests fail when a dependency is added without an upper bound or without refreshing constraints.txt
(scripts/refresh-constraints.sh), and each check is shown to catch a broken copy.
"""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = (REPO / "constraints.txt").read_text()
INSTALLED_EXTRAS = ("dev", "local")  # the Makefile's EXTRAS
# md5 of the Apache License 2.0 text as published at https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def requirements(project: dict[str, Any], group: str | None = None) -> list[Requirement]:
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(line) for line in lines]


def bound_problems(project: dict[str, Any]) -> list[str]:
    """Every requirement without an upper bound on its major version (`<X` or `==X`); drtool's own extras aside."""
    out = []
    for group in (None, *project["optional-dependencies"]):
        for req in requirements(project, group):
            if canonicalize_name(req.name) == "drtool":
                continue
            if not any(spec.operator in ("<", "<=", "==", "~=", "===") for spec in req.specifier):
                out.append(f"{group or 'dependencies'}: {req} has no upper bound")
    return out


def pins(text: str) -> dict[str, Version]:
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a pin"
            out[canonicalize_name(name)] = Version(version)
    return out


def constraint_problems(project: dict[str, Any], constraints: str) -> list[str]:
    """Direct requirements of the dev,local install that constraints.txt does not pin, or pins outside the range."""
    pinned = pins(constraints)
    out = []
    groups: list[str | None] = [None, *INSTALLED_EXTRAS]
    seen: set[str] = set()
    while groups:
        group = groups.pop(0)
        for req in requirements(project, group):
            if canonicalize_name(req.name) == "drtool":
                groups += [extra for extra in req.extras if extra not in seen]
                seen |= req.extras
                continue
            if req.marker and not req.marker.evaluate({**default_environment(), "extra": group or ""}):
                continue
            version = pinned.get(canonicalize_name(req.name))
            if version is None:
                out.append(f"{req.name} is not pinned: run scripts/refresh-constraints.sh")
            elif not req.specifier.contains(version, prereleases=True):
                out.append(f"{req.name}=={version} is outside {req.specifier}: run scripts/refresh-constraints.sh")
    return out


def test_every_dependency_has_an_upper_bound() -> None:
    assert bound_problems(PYPROJECT["project"]) == []


def test_bound_check_catches_an_open_range() -> None:
    project = copy.deepcopy(PYPROJECT["project"])
    project["dependencies"].append("zstandard>=0.22")
    project["optional-dependencies"]["dev"].append("pytest")
    assert bound_problems(project) == ["dependencies: zstandard>=0.22 has no upper bound",
                                       "dev: pytest has no upper bound"]


def test_constraints_pin_every_dependency_within_its_range() -> None:
    assert constraint_problems(PYPROJECT["project"], CONSTRAINTS) == []
    assert "drtool" not in pins(CONSTRAINTS)


def test_constraint_check_catches_a_stale_file() -> None:
    project = copy.deepcopy(PYPROJECT["project"])
    project["optional-dependencies"]["dev"].append("not-a-pinned-package>=1,<2")
    assert constraint_problems(project, CONSTRAINTS) == [
        "not-a-pinned-package is not pinned: run scripts/refresh-constraints.sh"]
    click = pins(CONSTRAINTS)["click"]
    stale = re.sub(r"(?m)^click==.*$", "click==7.1.2", CONSTRAINTS)
    assert constraint_problems(PYPROJECT["project"], stale) == [
        "click==7.1.2 is outside <9,>=8.1: run scripts/refresh-constraints.sh"]
    assert click >= Version("8.1")
    # milvus-lite comes in through dev's drtool[lite]: the walk follows drtool's own extras.
    no_lite = re.sub(r"(?m)^milvus-lite==.*\n", "", CONSTRAINTS)
    assert any("milvus-lite is not pinned" in p for p in constraint_problems(PYPROJECT["project"], no_lite))


def test_the_base_install_leaves_milvus_lite_to_an_extra() -> None:
    project = PYPROJECT["project"]
    base = {canonicalize_name(r.name): r for r in requirements(project)}
    assert "milvus-lite" not in base
    # pymilvus before 3 required milvus-lite itself.
    assert not base["pymilvus"].specifier.contains("2.6.0")
    assert [canonicalize_name(r.name) for r in requirements(project, "lite")] == ["milvus-lite"]
    assert any(r.name == "drtool" and "lite" in r.extras for r in requirements(project, "dev"))


def test_license_is_declared_and_shipped() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5
    # PEP 639 metadata needs setuptools 77 or newer to build.
    (setuptools,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert not setuptools.specifier.contains("76.1") and setuptools.specifier.contains("77.0")


def test_make_install_uses_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[\$\(EXTRAS\)\]'", makefile)
    assert re.search(r"^\$\(VENV\)/\.installed: .*constraints\.txt", makefile, re.M)
    assert "-c constraints.txt" in (REPO / "Dockerfile").read_text()
