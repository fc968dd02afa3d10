"""drtool.core.metrics on its own: names, escaping, grouping, numbers, the previous value and the atomic write.
The text is read back with prometheus_client's parser, the reference implementation of the format."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drtool.core.metrics import Metric, metric_prefix, previous_value, render, write_textfile


@pytest.mark.parametrize(("command", "prefix"), [
    ("snapshot create", "drtool_snapshot_create"),
    ("export-chunks", "drtool_export_chunks"),
    ("  Replication   Status ", "drtool_replication_status"),
    ("rebuild-index", "drtool_rebuild_index"),
])
def test_metric_prefix_is_derived_from_the_command_name(command: str, prefix: str) -> None:
    assert metric_prefix(command) == prefix


@pytest.mark.parametrize("command", ["", "   ", "--", "☃"])
def test_metric_prefix_refuses_a_name_without_words(command: str) -> None:
    with pytest.raises(ValueError, match="command name"):
        metric_prefix(command)


def test_interleaved_samples_are_grouped_under_one_help_and_type() -> None:
    text = render([
        Metric("drtool_x_objects", "objects", 1, {"bucket": "a"}),
        Metric("drtool_x_bytes", "bytes", 10, {"bucket": "a"}),
        Metric("drtool_x_objects", "objects", 2, {"bucket": "b"}),
    ])
    lines = text.splitlines()
    assert lines == [
        "# HELP drtool_x_objects objects", "# TYPE drtool_x_objects gauge",
        'drtool_x_objects{bucket="a"} 1', 'drtool_x_objects{bucket="b"} 2',
        "# HELP drtool_x_bytes bytes", "# TYPE drtool_x_bytes gauge", 'drtool_x_bytes{bucket="a"} 10',
    ]
    assert text.endswith("\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [(s.labels, s.value) for s in families["drtool_x_objects"].samples] == [({"bucket": "a"}, 1.0),
                                                                                  ({"bucket": "b"}, 2.0)]


def test_hostile_label_values_and_help_are_escaped_and_parse_back_exactly() -> None:
    value = 'a"b\\c\nd} x 1\n# TYPE evil gauge'
    text = render([Metric("drtool_x_last", 'help with \\ and\nnewline', 3, {"key": value})])
    assert len(text.splitlines()) == 3  # no injected line
    (family,) = text_string_to_metric_families(text)
    assert family.documentation == "help with \\ and\nnewline"
    (sample,) = family.samples
    assert sample.labels == {"key": value} and sample.value == 3.0


def test_labels_are_written_in_a_stable_order() -> None:
    one = render([Metric("drtool_x", "h", 1, {"b": "2", "a": "1"})])
    two = render([Metric("drtool_x", "h", 1, {"a": "1", "b": "2"})])
    assert one == two and 'drtool_x{a="1",b="2"} 1' in one


@pytest.mark.parametrize(("value", "written"), [
    (0, "0"), (3.0, "3"), (-2, "-2"), (0.25, "0.25"), (1e21, "1000000000000000000000"),
    (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (1.5e-7, "1.5e-07"),
])
def test_numbers(value: float, written: str) -> None:
    assert render([Metric("drtool_x", "h", value)]) == f"# HELP drtool_x h\n# TYPE drtool_x gauge\ndrtool_x {written}\n"


def test_the_kind_is_the_type_line() -> None:
    text = render([Metric("drtool_x_runs_total", "runs", 4, kind="counter")])
    assert "# TYPE drtool_x_runs_total counter" in text


@pytest.mark.parametrize("metric", [
    Metric("drtool-x", "h", 1), Metric("1drtool", "h", 1), Metric("", "h", 1),
    Metric("drtool_x", "h", 1, {"bad-label": "v"}), Metric("drtool_x", "h", 1, {"1a": "v"}),
])
def test_invalid_names_are_refused(metric: Metric) -> None:
    with pytest.raises(ValueError, match="invalid"):
        render([metric])


def test_a_duplicate_sample_is_refused_whatever_the_label_order() -> None:
    with pytest.raises(ValueError, match="duplicate sample"):
        render([Metric("drtool_x", "h", 1, {"a": "1", "b": "2"}), Metric("drtool_x", "h", 2, {"b": "2", "a": "1"})])
    render([Metric("drtool_x", "h", 1, {"a": "1"}), Metric("drtool_x", "h", 2, {"a": "2"})])  # distinct: fine


def test_previous_value_reads_an_unlabelled_sample_back(tmp_path: Path) -> None:
    path = tmp_path / "drtool.prom"
    write_textfile(path, [Metric("drtool_x_last_success_timestamp_seconds", "h", 1765000000),
                          Metric("drtool_x_objects", "h", 5, {"bucket": "a"}),
                          Metric("drtool_x_bad", "h", math.nan)])
    assert previous_value(path, "drtool_x_last_success_timestamp_seconds") == 1765000000.0
    assert previous_value(path, "drtool_x_objects") is None  # only labelled samples
    assert previous_value(path, "drtool_x_bad") is None  # NaN is no timestamp
    assert previous_value(path, "drtool_x_missing") is None
    assert previous_value(tmp_path / "absent.prom", "drtool_x_last_success_timestamp_seconds") is None


def test_previous_value_of_an_unreadable_or_garbled_file_is_none(tmp_path: Path) -> None:
    binary = tmp_path / "binary.prom"
    binary.write_bytes(b"\xff\xfe drtool_x 1\n")
    assert previous_value(binary, "drtool_x") is None
    garbled = tmp_path / "garbled.prom"
    garbled.write_text("drtool_x not-a-number\n", encoding="utf-8")
    assert previous_value(garbled, "drtool_x") is None
    assert previous_value(tmp_path, "drtool_x") is None  # a directory


def test_write_textfile_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "drtool.prom"
    path.write_text("old\n", encoding="utf-8")
    write_textfile(path, [Metric("drtool_x", "h", 1)])
    assert path.read_text(encoding="utf-8") == "# HELP drtool_x h\n# TYPE drtool_x gauge\ndrtool_x 1\n"
    assert os.stat(path).st_mode & 0o777 == 0o644  # node_exporter runs as another user
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drtool.prom"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "drtool.prom"
    write_textfile(path, [Metric("drtool_x", "h", 1)])
    with pytest.raises(ValueError):
        write_textfile(path, [Metric("drtool x", "h", 2)])  # refused while rendering, before any file is made
    with pytest.raises(OSError):
        write_textfile(tmp_path / "missing" / "drtool.prom", [Metric("drtool_x", "h", 2)])
    assert previous_value(path, "drtool_x") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drtool.prom"]
