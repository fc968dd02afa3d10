"""How much padding the model computes when texts are batched in corpus order versus drtool's order.

A sentence-transformers batch is padded to its longest text, so a batch's cost is roughly (longest x batch size)
tokens. This prints, for the benchmark corpus, the tokens computed per real token with model batches of 64 taken in
corpus order (what LangChain's and LlamaIndex's wrappers hand the model) and taken after drtool's sort by token count
within 512-chunk units. It explains the gap in bench/results/rebuild-compare.md without running a model.

    .venv/bin/python -m bench.rebuild.padding            # 2,000 and 20,000 chunks
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL_BATCH = 64
SORT_UNIT = 512  # drtool's LocalEmbedder sorts within units of this many chunks
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: longer texts are truncated


def computed_per_real(lengths: list[int], *, sort_unit: int | None) -> float:
    units = [lengths] if sort_unit is None else [sorted(lengths[i:i + sort_unit])
                                                 for i in range(0, len(lengths), sort_unit)]
    computed = sum(max(unit[i:i + MODEL_BATCH]) * len(unit[i:i + MODEL_BATCH])
                   for unit in units for i in range(0, len(unit), MODEL_BATCH))
    return computed / sum(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from drtool.adapters.embedders import default_local_model
    from tests.rebuild.prose import texts as prose

    tokenizer = AutoTokenizer.from_pretrained(default_local_model())
    texts = prose(max(args.chunks))
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    lengths = [len(x) for x in ids]
    print("| chunks | mean tokens | computed/real, corpus order | computed/real, drtool order | ratio |")
    print("|---|---|---|---|---|")
    for n in args.chunks:
        corpus = computed_per_real(lengths[:n], sort_unit=None)
        drtool = computed_per_real(lengths[:n], sort_unit=SORT_UNIT)
        print(f"| {n:,} | {sum(lengths[:n]) / n:.0f} | {corpus:.2f} | {drtool:.2f} | {corpus / drtool:.2f}x |")


if __name__ == "__main__":
    main()
