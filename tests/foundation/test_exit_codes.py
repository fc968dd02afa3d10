"""The exit-code table is a public contract: docs, README and code must say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

from drtool.errors import (
    AuthError,
    ConfigError,
    ExitCode,
    LockedError,
    NotFoundError,
    UnavailableError,
    UsageError,
    VerificationFailed,
)

REPO = Path(__file__).resolve().parents[2]


def table(path: Path) -> dict[int, str]:
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+)\|", path.read_text(), flags=re.M)
    return {int(code): text.strip() for code, text in rows}


def test_docs_table_matches_the_enum() -> None:
    documented = table(REPO / "docs" / "exit-codes.md")
    assert documented == {int(c): c.name for c in ExitCode}


def test_readme_lists_the_same_codes() -> None:
    assert set(table(REPO / "README.md")) == {int(c) for c in ExitCode}


def test_error_classes_carry_their_codes() -> None:
    assert [e("x").exit_code for e in (UnavailableError, UsageError, ConfigError, VerificationFailed,
                                       NotFoundError, LockedError, AuthError)] == [1, 2, 2, 4, 10, 11, 12]
