"""embedding.device: the local model runs on a GPU when torch sees one, and says where it ran.

This machine has no GPU (the tests assert it first), so `auto` must resolve to the CPU, and an explicit `cuda` must
stop the run with exit 2 and a message, before anything is written: no checkpoint, no collection.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from drtool.adapters.embedders import resolve_device
from drtool.errors import ConfigError
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary, use_local_model


def _no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: auto would rightly pick it")


def test_auto_resolves_to_cpu_and_an_absent_cuda_is_a_config_error() -> None:
    _no_gpu()
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"embedding\.device is cuda, but torch .* sees no CUDA GPU") as err:
        resolve_device("cuda")
    assert err.value.exit_code == 2 and "embedding.device=auto" in (err.value.hint or "")


def test_rebuild_reports_its_device_and_refuses_a_missing_gpu(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli, local_model_path: Path,
        milvus_target: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _no_gpu()
    use_local_model(monkeypatch, local_model_path)
    ds = str(uuid.uuid4())
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))

    monkeypatch.setenv("DRTOOL_EMBEDDING_DEVICE", "cuda")
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)
    assert code == 2, events
    assert "embedding.device is cuda" in result["message"] and result["error"] == "ConfigError", result
    assert "Traceback" not in capsys.readouterr().err
    keys = chunk_bucket.client.list_objects_v2(Bucket=chunk_bucket.name).get("Contents", [])
    assert [k["Key"] for k in keys if "/processed/chunks" not in k["Key"]] == [], "nothing may be written"

    monkeypatch.setenv("DRTOOL_EMBEDDING_DEVICE", "auto")
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)
    assert code == 0 and result["datasets"][0]["embedded"] == 12, result
    assert result["device"] == "cpu"

    code, events = run_cli("rebuild-index", "--dataset", ds)  # warm: every vector cached, no model loaded
    assert code == 0 and summary(events)["device"] is None
