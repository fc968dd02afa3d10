"""The progress display's pure parts (drtool/cli/progress.py): counts, rate and ETA of a task, when a line is
logged off a terminal and what it says, labels from data escaped, and `progress` events kept off stdout. A fake
clock: no sleeping, no servers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from drtool.cli.app import App
from drtool.cli.progress import LogDisplay, Meter, RichDisplay, human_seconds, interval_seconds
from drtool.core.terminal import is_safe


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self) -> list[dict[str, Any]]:
        return [r.fields for r in self.records]  # type: ignore[attr-defined]


@pytest.fixture
def progress_records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("drtool.progress")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_rate_and_eta_of_a_known_total() -> None:
    meter = Meter()
    meter.begin("restore objects", "objects", now=0.0)
    meter.update(50, total=200, also={"copied": 40})
    assert meter.rate(10.0) == 5.0
    assert meter.eta_seconds(10.0) == 30.0
    assert meter.summary(10.0) == "50/200 objects, 5/s, ~30 s left; copied 40"
    assert meter.summary(10.0, final=True) == "50/200 objects, 5/s; copied 40"
    assert meter.fields(10.0) == {"task": "restore objects", "unit": "objects", "done": 50, "total": 200,
                                  "rate_per_second": 5.0, "eta_seconds": 30.0, "also": {"copied": 40}}


def test_unknown_total_shows_counts_and_rate_without_eta() -> None:
    meter = Meter()
    meter.begin("snapshot objects", "versions listed", now=0.0)
    meter.update(300)
    assert meter.eta_seconds(3.0) is None
    assert meter.summary(3.0) == "300 versions listed, 100/s"
    nothing = Meter()
    nothing.begin("t", "files", now=0.0)
    assert nothing.eta_seconds(5.0) is None  # no rate yet: no ETA, no division by zero
    assert nothing.rate(0.0) == 0.0


def test_an_estimated_total_and_a_given_rate() -> None:
    meter = Meter()
    meter.begin("[1/2] ds", "chunks", now=0.0)
    meter.update(30, total=90, approximate=True, rate=6.0)
    assert meter.summary(10.0) == "30/~90 chunks, 6/s, ~10 s left"
    assert meter.summary(10.0, final=True) == "30 chunks, 6/s"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (42.4, "42 s"), (119, "119 s"), (600, "10 min"),
                                               (7500, "2 h 05 min"), (-3, "0 s")])
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRTOOL_PROGRESS_SECONDS", raising=False)
    assert interval_seconds() == 30.0
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    assert interval_seconds() == 0.0
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "soon")
    assert interval_seconds() == 30.0


def test_a_line_every_interval_and_the_last_count_of_a_task_that_lasted(progress_records: Records) -> None:
    clock = Clock()
    display = LogDisplay("restore", every=10, clock=clock, beat=False)
    clock.now += 1
    display.observe({"event": "progress", "task": "restore objects", "unit": "objects", "done": 1, "total": 30})
    assert progress_records.records == []  # less than an interval since the run began
    clock.now += 10
    display.observe({"event": "progress", "task": "restore objects", "unit": "objects", "done": 20, "total": 30})
    clock.now += 1
    display.observe({"event": "progress", "task": "restore objects", "unit": "objects", "done": 30, "total": 30})
    display.stop()
    first, last = progress_records.fields()
    assert (first["done"], first["total"], first["final"]) == (20, 30, False)
    assert first["eta_seconds"] is not None and first["rate_per_second"] > 0
    assert (last["done"], last["total"], last["final"]) == (30, 30, True)
    assert last["command"] == "restore" and last["event"] == "progress"
    message = progress_records.records[-1].getMessage()
    assert message.startswith("restore: running 12 s; restore objects: 30/30 objects") and "(done)" in message


def test_a_short_run_logs_nothing(progress_records: Records) -> None:
    """A task that ends within the interval adds no line: a nightly cron job that took 5 s mails nothing."""
    clock = Clock()
    display = LogDisplay("export-chunks", every=30, clock=clock, beat=False)
    for n in range(1, 4):
        clock.now += 1
        display.update("export-chunks", "datasets", n, total=3)
    display.stop()
    assert progress_records.records == []


def test_a_new_task_closes_the_previous_one_and_interval_zero_logs_every_report(progress_records: Records) -> None:
    clock = Clock()
    display = LogDisplay("verify", every=0, clock=clock, beat=False)
    display.observe({"event": "verify.started", "datasets": 2})  # not counted: a start is no work done
    for n in (1, 2):
        display.observe({"event": "progress", "task": "verify files", "unit": "files", "done": n, "total": None})
    display.observe({"event": "verify.files", "checked": 2})
    display.observe({"event": "progress", "task": "verify datasets", "unit": "datasets", "done": 1, "total": 2,
                     "also": {"chunks": 7}})
    display.stop()
    rows = [(f["task"], f["done"], f["total"], f["final"]) for f in progress_records.fields()]
    assert rows == [("verify files", 1, None, False), ("verify files", 2, None, False),
                    ("verify files", 2, None, True), ("verify datasets", 1, 2, False),
                    ("verify datasets", 1, 2, True)]
    assert progress_records.fields()[-1]["also"] == {"chunks": 7}
    assert progress_records.fields()[-1]["events"] == {"files": 1}


def test_a_life_sign_before_any_unit(progress_records: Records) -> None:
    clock = Clock()
    display = LogDisplay("snapshot create", every=0, clock=clock, beat=False)
    display.observe({"event": "snapshot.dumped", "bytes": 5})
    clock.now += 3
    display._line(clock())
    display.stop()
    [fields] = progress_records.fields()
    assert fields["done"] is None and fields["events"] == {"dumped": 1}
    assert progress_records.records[0].getMessage() == "snapshot create: running 3 s; dumped x1"


def test_labels_from_data_are_escaped_in_lines_and_on_the_bar(progress_records: Records) -> None:
    hostile = "bucket [red]\x1b[2J\u202e"
    clock = Clock()
    display = LogDisplay("replication verify", every=0, clock=clock, beat=False)
    display.update(hostile, "objects\n", 1)
    display.stop()
    assert all(is_safe(r.getMessage()) and "\n" not in r.getMessage() for r in progress_records.records)
    assert progress_records.fields()[0]["task"] == hostile  # exact in the JSON field, which json.dumps escapes

    bar = RichDisplay("replication verify", every=0, beat=False)
    try:
        bar.update(hostile, "objects", 1, total=4)
        task = bar._progress.tasks[0]
        label = bar._progress.columns[0].render(task)  # type: ignore[union-attr]
        stats = bar._progress.columns[2].render(task)  # type: ignore[union-attr]
    finally:
        bar.stop()
    assert label.plain == "bucket [red]\\x1b[2J\\u202e" and is_safe(label.plain)
    assert stats.plain.startswith("1/4 objects, ")


def test_progress_events_never_reach_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    app = App(json_mode=True)
    app.emit({"event": "progress", "task": "restore objects", "unit": "objects", "done": 1, "total": 2})
    app.emit({"event": "verify.files", "checked": 1})
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["verify.files"]


def test_rebuild_progress_on_the_shared_display_ends_each_dataset_with_its_own_count() -> None:
    """rebuild-index's Progress protocol over LogDisplay: the last line of a dataset carries that dataset's id and
    count, written before the next dataset's counters replace them."""
    from drtool.cli.rebuild_cmd import _LogProgress
    from drtool.ops.rebuild.options import DatasetReport

    handler = Records()
    logger = logging.getLogger("drtool.rebuild")
    logger.addHandler(handler)
    try:
        progress = _LogProgress(every=0)
        progress.plan(2)
        for dataset, chunks in (("ds-one", 40), ("ds-two", 24)):
            progress.start(dataset, 1000)
            progress.advance(1000, DatasetReport(dataset, "c", "s", lines_read=chunks, inserted=chunks))
        progress.stop()
    finally:
        logger.removeHandler(handler)
    finals: dict[str, int] = {}
    for fields in handler.fields():
        assert fields["event"] == "rebuild.progress"
        assert fields["chunks_stored"] >= finals.get(fields["dataset"], 0), "a count never goes back"
        finals[fields["dataset"]] = fields["chunks_stored"]
    assert finals == {"ds-one": 40, "ds-two": 24}
    messages = [r.getMessage() for r in handler.records]
    assert messages[-1].startswith("rebuild [2/2] ds-two: 24 chunks stored")
    assert any(m.startswith("rebuild [1/2] ds-one: 40 chunks stored") for m in messages)
