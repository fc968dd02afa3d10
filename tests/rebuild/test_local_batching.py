"""The local embedder batches a call's texts by token count; the vectors must still come back in input order."""

from __future__ import annotations

from pathlib import Path

from drtool.adapters.embedders import LocalEmbedder
from drtool.config import load_settings
from tests.rebuild.prose import texts as prose


def test_token_sorted_batches_keep_input_order(local_model_path: Path) -> None:
    settings = load_settings(environ={}, flags={"embedding.provider": "local", "embedding.model": str(local_model_path),
                                                "embedding.batch_size": 6})
    embedder = LocalEmbedder(settings.embedding)
    # 24 texts of very different lengths in no particular order: 4 batches after sorting by tokens.
    texts = [t if i % 3 else t + " " + t for i, t in enumerate(prose(24))]
    got = embedder.embed(texts)
    # One text per model call: no padding, no reordering; the reference for each position.
    want = [embedder._model.encode([t], normalize_embeddings=True)[0].tolist() for t in texts]
    assert len(got) == len(texts)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(sum(x * x for x in g) - 1.0) < 1e-4, i
        assert sum(a * b for a, b in zip(g, w, strict=True)) > 0.999, f"text {i} got another text's vector"
