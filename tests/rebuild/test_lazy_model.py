"""The local model loads on first use: a rebuild whose vectors are all cached never imports torch.

Measured in bench/results/rebuild_warm.md; here the behaviour: what loads, when, and that the dimension read
from the model folder's files is the one the model makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from drtool.adapters.embedders import LocalEmbedder, declared_dimension
from drtool.config import load_settings
from drtool.errors import ConfigError, UsageError
from tests.rebuild.conftest import ChunkBucket, make_chunks, use_local_model

PROBE = ("import json, sys\n"
         "from drtool.cli.main import run\n"
         "code = run(['--json', 'rebuild-index', '--dataset', sys.argv[1]])\n"
         "print(json.dumps({'probe': True, 'code': code, 'torch': 'torch' in sys.modules,\n"
         "                  'sentence_transformers': 'sentence_transformers' in sys.modules}))\n")


def _rebuild_in_child(dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """rebuild-index in a fresh interpreter (this one has torch loaded by other tests): (probe, result)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, dataset], capture_output=True, text=True, check=False,
                          timeout=600, env=os.environ.copy())
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    probe = next(x for x in lines if x.get("probe"))
    result = next(x for x in lines if x.get("event") == "result")
    return probe, result


def test_a_warm_rebuild_imports_no_model(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                         local_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_local_model(monkeypatch, local_model_path)
    ds = str(uuid.uuid4())
    chunk_bucket.put_chunks(ds, make_chunks(ds, 24))

    probe, result = _rebuild_in_child(ds)
    assert probe["code"] == 0 and result["datasets"][0]["embedded"] == 24, result
    assert probe["sentence_transformers"], "a cold rebuild loads the model"

    probe, result = _rebuild_in_child(ds)
    report = result["datasets"][0]
    assert probe["code"] == 0 and report["embedded"] == 0 and report["cache_hits_sidecar"] == 24, result
    assert report["verification"]["passed"], report
    assert not probe["torch"] and not probe["sentence_transformers"], "a warm rebuild must not load the model"


def test_dimension_comes_from_the_folder_and_agrees_with_the_model(local_model_path: Path) -> None:
    settings = load_settings(environ={}, flags={"embedding.provider": "local",
                                                "embedding.model": str(local_model_path)})
    embedder = LocalEmbedder(settings.embedding)
    assert embedder.dimension == 384 and not embedder.loaded
    assert len(embedder.embed(["hello"])[0]) == 384 and embedder.loaded

    wrong = load_settings(environ={}, flags={"embedding.provider": "local", "embedding.model": str(local_model_path),
                                             "embedding.dimensions": 768})
    with pytest.raises(UsageError, match="dimension 384"):
        LocalEmbedder(wrong.embedding)
    with pytest.raises(ConfigError, match="no such folder"):
        LocalEmbedder(load_settings(environ={}, flags={"embedding.provider": "local",
                                                       "embedding.model": "/nonexistent/model"}).embedding)


def _folder(tmp_path: Path, modules: list[tuple[str, str, dict[str, Any] | None]]) -> Path:
    root = tmp_path / uuid.uuid4().hex[:6]
    root.mkdir()
    listed = []
    for kind, path, config in modules:
        listed.append({"type": f"sentence_transformers.models.{kind}", "path": path})
        if config is not None:
            (root / path).mkdir(parents=True, exist_ok=True)
            (root / path / "config.json").write_text(json.dumps(config))
    (root / "modules.json").write_text(json.dumps(listed))
    return root


def test_declared_dimension_is_none_unless_the_files_are_sure(tmp_path: Path, local_model_path: Path) -> None:
    mean = {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}
    assert declared_dimension(str(local_model_path)) == 384
    plain = [("Transformer", "", None), ("Pooling", "1_Pooling", mean)]
    assert declared_dimension(str(_folder(tmp_path, plain))) == 768
    dense = [("Transformer", "", None), ("Pooling", "1_Pooling", mean), ("Dense", "2_Dense", {"out_features": 256})]
    assert declared_dimension(str(_folder(tmp_path, dense))) == 256
    two_modes = {**mean, "pooling_mode_max_tokens": True}  # concatenated: 2 x 768
    assert declared_dimension(str(_folder(tmp_path, [("Pooling", "1_Pooling", two_modes)]))) is None
    assert declared_dimension(str(_folder(tmp_path, [("Pooling", "1_Pooling", mean), ("LayerNorm", "2", {})]))) is None
    assert declared_dimension(str(tmp_path / "missing")) is None
    assert declared_dimension("sentence-transformers/all-MiniLM-L6-v2") is None
