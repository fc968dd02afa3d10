"""The drill against a real Weaviate: rebuild creates the scratch collections (real ones, as the copy switch
leaves them); all of them go afterwards, and the live collections are left as they were."""

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
    assert all(d["gate"]["passed"] for d in result["phases"][2]["detail"]["per_dataset"]), result["phases"][2]
    assert result["phases"][3]["detail"]["breaks"] == 0
    scratch = set(result["phases"][1]["detail"]["collections"].values())
    dropped = result["cleanup"]["collections_dropped"]
    # rebuild built each new scratch name in place (weaviate.switch = copy: a real collection, no alias); the
    # cleanup dropped it and anything derived from it (a generation or _drtool_prev had there been a switch).
    assert {d.split(GENERATION_MARK)[0].removesuffix("_drtool_prev") for d in dropped} == scratch
    assert scratch <= set(dropped)
    assert world.databases() == databases
    assert world.live_index() == live_index
