"""drtool verify against a real Weaviate: Dify's layout, what a blue/green rebuild leaves under the name (a
copy, or an alias with weaviate.switch = alias), and breaks."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from drtool.adapters.weaviate import WeaviateTarget
from tests.export.helpers import RunCli
from tests.verify.conftest import DIM, VerifyWorld, summary, unit_vector


def test_clean_then_orphan_and_wrong_dataset_id(weaviate_world: VerifyWorld, run_cli: RunCli) -> None:
    code, events = run_cli("verify", "--deep")
    assert code == 0, events
    rows = {d["dataset_id"]: d for d in summary(events)["datasets"]}
    for dataset in weaviate_world.seed.datasets:
        assert rows[dataset.id]["backend"] == "weaviate"
        assert rows[dataset.id]["vectors"] == rows[dataset.id]["indexed_chunks"] == len(dataset.index_nodes)

    first, second = weaviate_world.seed.datasets
    orphan_id = "eeeeeeee-0000-4000-8000-000000000002"
    weaviate_world.insert(first.collection_name, "Text of a document that was deleted in Dify.",
                          {"doc_id": orphan_id, "doc_hash": "h", "document_id": first.document_ids[0],
                           "dataset_id": first.id})
    # A vector copied into the wrong collection still names its own dataset.
    node_id = next(iter(second.index_nodes))
    rng = random.Random(2)
    weaviate_world.target.drop(second.collection_name)
    weaviate_world.target.create(second.collection_name, DIM)
    chunks = weaviate_world.bucket.chunks(f"datasets/{second.id}/processed/chunks.jsonl")
    weaviate_world.target.insert(second.collection_name, [
        (c.text, {**c.vector_metadata(), "dataset_id": first.id} if c.id == node_id else c.vector_metadata(),
         unit_vector(rng)) for c in chunks])

    code, events = run_cli("verify")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"orphan_vector": 1, "wrong_dataset_id": 1}
    assert result["examples"]["orphan_vector"][0]["doc_id"] == orphan_id
    wrong = result["examples"]["wrong_dataset_id"][0]
    assert wrong["doc_id"] == node_id and wrong["found"] == first.id and wrong["expected"] == second.id


def _one_short_build(target: Any, world: VerifyWorld, dataset: Any) -> tuple[str, list[Any]]:
    build = target.build_name(dataset.collection_name)
    target.create(build, DIM)
    chunks = world.bucket.chunks(f"datasets/{dataset.id}/processed/chunks.jsonl")
    rng = random.Random(3)
    target.insert(build, [(c.text, c.vector_metadata(), unit_vector(rng)) for c in chunks[:-1]])  # one short
    return build, chunks


def test_collection_left_by_the_copy_switch_is_verified(weaviate_world: VerifyWorld, run_cli: RunCli) -> None:
    """rebuild-index's default switch leaves a real collection under Dify's name (a copy of the build)."""
    dataset = weaviate_world.seed.datasets[0]
    target = weaviate_world.target
    build, chunks = _one_short_build(target, weaviate_world, dataset)
    target.switch(dataset.collection_name, build, drop_old=True)
    assert target.alias_target(dataset.collection_name) is None and not target.exists(build)
    code, events = run_cli("verify", "--dataset", dataset.id)
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"missing_vector": 1}
    assert result["examples"]["missing_vector"][0]["doc_id"] == chunks[-1].id
    assert result["datasets"][0]["vectors"] == len(chunks) - 1


def test_collection_behind_a_drtool_alias_is_followed(weaviate_world: VerifyWorld, run_cli: RunCli) -> None:
    """weaviate.switch = alias (and rebuilds by drtool before the copy switch) leave an alias under the name."""
    dataset = weaviate_world.seed.datasets[0]
    target = WeaviateTarget(dataclasses.replace(weaviate_world.target.settings, switch="alias"))
    build, chunks = _one_short_build(target, weaviate_world, dataset)
    target.switch(dataset.collection_name, build, drop_old=True)
    try:
        assert target.alias_target(dataset.collection_name) == build  # only an alias answers for the name
        code, events = run_cli("verify", "--dataset", dataset.id)
        assert code == 4
        result = summary(events)
        assert result["counts"] == {"missing_vector": 1}
        assert result["examples"]["missing_vector"][0]["doc_id"] == chunks[-1].id
        assert result["datasets"][0]["vectors"] == len(chunks) - 1
    finally:
        target.client.alias.delete(alias_name=dataset.collection_name)
        target.drop(build)
        target.close()
