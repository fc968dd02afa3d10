"""docs/audit.md documents every finding id the code can report, with its severity, and nothing else: alerting
rules and runbooks are written against these ids."""

from __future__ import annotations

import re
from pathlib import Path

from drtool.core.audit import CATALOG

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def test_docs_list_exactly_the_catalog_with_its_severities() -> None:
    rows = dict(re.findall(r"^\| `([a-z0-9_]+\.[a-z0-9_]+)` \| (info|warning|critical) \|", DOC.read_text(), re.M))
    assert rows == {fid: check.severity.label for fid, check in CATALOG.items()}


def test_every_id_is_namespaced_by_a_known_system() -> None:
    from drtool.core.audit import SYSTEMS

    for fid, check in CATALOG.items():
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9_]+", fid), fid
        assert check.system in SYSTEMS and fid.startswith(check.system + ".")
