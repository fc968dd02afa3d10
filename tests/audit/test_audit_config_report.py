"""`drtool audit --report x.html` (escaped HTML, a row per finding) and the `audit.*` settings with their
precedence (flag > environment > drtool.toml > default), on the real servers of the `world`.

The file name sorts before test_audit_findings.py on purpose (as test_audit_checks_more.py's does): its site-down
test leaves failed replications in MinIO's last-hour counters, a `minio.replication_warning` that would be a second
finding here."""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest

from drtool.config import SPECS, load_settings
from drtool.core import audit as ca
from drtool.errors import ConfigError
from drtool.ops.audit.context import AuditOptions
from tests.audit.conftest import AuditWorld
from tests.audit.test_audit_findings import only

HOSTILE = "<script>alert(1)</script> & \"q\""


class _Rows(html.parser.HTMLParser):
    """Counts finding rows and every element, so an injected <script> would show up as a tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr" and ("class", "finding") in attrs:
            self.rows += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_escapes_evidence_and_names_and_has_a_row_per_finding(world: AuditWorld, tmp_path: Path) -> None:
    first = world.db.dataset_ids[0]
    with world.db.connect(autocommit=True) as conn:
        conn.execute("UPDATE datasets SET name = %s WHERE id::text = %s", (HOSTILE, first))
    world.client.delete_object(Bucket=world.dify_bucket, Key=f"datasets/{first}/processed/chunks.jsonl")
    report = tmp_path / "audit.HTML"  # the suffix decides, in any case
    finding = only(world, "drtool.chunks_missing", "critical", "--no-probe", "--report", str(report))
    assert HOSTILE in finding["evidence"]
    done = world.audit("audit", "--json", "--no-probe", "--report", str(report))
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "CRITICAL" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;" in page
    parsed = _Rows()
    parsed.feed(page)
    assert "script" not in parsed.tags
    assert parsed.rows == len(done.findings) >= 2  # the critical one and the info findings
    text = "".join(parsed.text)
    assert HOSTILE in text and world.dify_bucket in text and first in text  # what the reader sees, unescaped
    assert f"drtool export-chunks --dataset {first}" in text
    # any other name: the Markdown report, as before
    md = tmp_path / "audit.txt"
    world.audit("audit", "--json", "--no-probe", "--report", str(md))
    assert md.read_text().startswith("# drtool audit ") and "`drtool.chunks_missing`" in md.read_text()


def test_rpo_hours_precedence_flag_env_file_default(world: AuditWorld, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot of the world is seconds old: 0.0001 h (0.36 s) makes it too old, 100 h does not. Each layer
    is set against the one below it and must win."""

    def too_old(*args: str) -> bool:
        done = world.audit("audit", "--json", "--no-probe", *args)
        return "drtool.snapshot_too_old" in done.problems()

    assert not too_old()  # default 26 h
    (tmp_path / "drtool.toml").write_text("[audit]\nrpo_hours = 0.0001\n")  # the cwd of the world
    finding = only(world, "drtool.snapshot_too_old", "critical", "--no-probe")  # file > default
    assert "RPO target 0.0001 h" in finding["evidence"]
    monkeypatch.setenv("DRTOOL_AUDIT_RPO_HOURS", "100")
    assert not too_old()  # env > file
    assert too_old("--rpo-hours", "0.0001")  # flag > env
    (tmp_path / "drtool.toml").write_text("[audit]\nrpo_hours = 0\n")
    monkeypatch.delenv("DRTOOL_AUDIT_RPO_HOURS")
    refused = world.audit("audit", "--json", "--no-probe")
    assert refused.code == 2 and "audit.rpo_hours must be > 0" in refused.out + refused.err


def test_drill_age_and_free_space_settings_change_findings(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The world's drill passed a day ago; every drive has less than 100 % free."""
    monkeypatch.setenv("DRTOOL_AUDIT_DRILL_MAX_AGE_DAYS", "0.5")  # the environment name the flag always had
    finding = only(world, "drtool.drill_overdue", "warning", "--no-probe")
    assert "limit 0.5 days" in finding["evidence"]
    assert "drtool.drill_overdue" not in world.audit("audit", "--json", "--no-probe", "--drill-max-age-days",
                                                     "2").problems()
    monkeypatch.delenv("DRTOOL_AUDIT_DRILL_MAX_AGE_DAYS")
    monkeypatch.setenv("DRTOOL_AUDIT_MIN_FREE_PERCENT", "100")
    only(world, "minio.low_free_space", "warning", "--no-probe")
    assert world.audit("audit", "--json", "--no-probe", "--min-free-percent", "0").problems() == {}


def test_audit_settings_defaults_types_and_refusals(tmp_path: Path) -> None:
    s = load_settings(environ={}, config_path=_toml_file(tmp_path, ""))
    opts = AuditOptions()
    assert (s.audit.rpo_hours, s.audit.drill_max_age_days, s.audit.min_free_percent) == \
        (opts.rpo_hours, opts.drill_max_age_days, opts.min_free_percent) == (26.0, 14.0, ca.MIN_FREE_PERCENT)
    assert SPECS["audit.rpo_hours"].env_var == "DRTOOL_AUDIT_RPO_HOURS"
    assert SPECS["audit.drill_max_age_days"].env_var == "DRTOOL_AUDIT_DRILL_MAX_AGE_DAYS"
    file = _toml_file(tmp_path, "[audit]\nrpo_hours = 48\n")
    s = load_settings(environ={"DRTOOL_AUDIT_MIN_FREE_PERCENT": " 2.5 "}, config_path=file)
    assert s.audit.rpo_hours == 48.0 and isinstance(s.audit.rpo_hours, float) and s.audit.min_free_percent == 2.5
    assert s.sources["audit.rpo_hours"].startswith("file:") and s.sources["audit.min_free_percent"].startswith("env:")
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match=r"audit\.rpo_hours .*DRTOOL_AUDIT_RPO_HOURS"):
            load_settings(environ={"DRTOOL_AUDIT_RPO_HOURS": bad}, config_path=_toml_file(tmp_path, ""))
    with pytest.raises(ConfigError, match="a number"):
        load_settings(environ={}, config_path=_toml_file(tmp_path, "[audit]\nrpo_hours = true\n"))


def _toml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path
