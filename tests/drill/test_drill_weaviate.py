"""The drill against a real Weaviate: the scratch names are aliases over generation collections (rebuild's
Weaviate layout); all of them go afterwards, and the live collections are left as they were."""

from __future__ import annotations

from pathlib import Path

from drtool.adapters.weaviate import GENERATION_MARK
from tests.drill.conftest import DrillWorld, summary
from tests.export.helpers import RunCli


def test_a_weaviate_drill_passes_and_removes_its_aliases_and_generations(weaviate_drill_world: DrillWorld,
                                                                          run_cli: RunCli, tmp_path: Path) -> None:
    world = weaviate_drill_world
    live_index, databases = world.live_index(), world.databases()
    assert live_index and not any(k.startswith(("alias", "Drill_")) for k in live_index)

    code, events = run_cli("drill", "--rto-slo", "10m", "--report-dir", str(tmp_path))
    result = summary(events)
    assert code == 0, result["problems"]
    assert all(d["gate"]["passed"] for d in result["phases"][2]["detail"]["per_dataset"])
    assert result["phases"][3]["detail"]["breaks"] == 0
    scratch = set(result["phases"][1]["detail"]["collections"].values())
    dropped = result["cleanup"]["collections_dropped"]
    # Each scratch name was an alias over a generation collection built by rebuild: both are gone now.
    assert {d.split(GENERATION_MARK)[0] for d in dropped} == scratch
    assert all(GENERATION_MARK in d for d in dropped)
    assert world.databases() == databases
    assert world.live_index() == live_index
