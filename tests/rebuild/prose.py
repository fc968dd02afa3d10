"""Real English prose without downloads: the docstrings of Python's standard library (PSF License, permissive).

Paragraphs of the stdlib's module, class and function docstrings, cleaned and de-duplicated. For more chunks than
there are paragraphs, pairs of paragraphs are joined, which keeps every text unique and real.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import warnings
from collections.abc import Iterator
from functools import lru_cache

_SKIP = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "lib2to3", "ensurepip", "venv", "pydoc_data")


@lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and not n.startswith(_SKIP))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            for doc in _docs(module):
                for para in re.split(r"\n\s*\n", doc):
                    text = " ".join(para.split())
                    if len(text) < 80 or not re.match(r"[A-Z]", text) or text.count(">>>") or text in seen:
                        continue
                    if sum(c.isalpha() or c == " " for c in text) < 0.85 * len(text):
                        continue  # tables, code, signatures
                    seen.add(text)
                    out.append(text)
    return tuple(out)


def _docs(module: object) -> Iterator[str]:
    if getattr(module, "__doc__", None):
        yield inspect.cleandoc(module.__doc__)  # type: ignore[arg-type]
    for _name, member in inspect.getmembers(module):
        if getattr(member, "__module__", None) != getattr(module, "__name__", None):
            continue
        if inspect.isclass(member) or inspect.isfunction(member):
            doc = getattr(member, "__doc__", None)
            if isinstance(doc, str) and doc:
                yield inspect.cleandoc(doc)
            if inspect.isclass(member):
                for _m, meth in inspect.getmembers(member, inspect.isfunction):
                    mdoc = getattr(meth, "__doc__", None)
                    if isinstance(mdoc, str) and mdoc and getattr(meth, "__module__", None) == module.__name__:  # type: ignore[attr-defined]
                        yield inspect.cleandoc(mdoc)


def texts(n: int, *, max_chars: int = 900) -> list[str]:
    """`n` distinct real-prose texts of at most max_chars characters: single paragraphs first, then pairs of
    paragraphs (i, i + step) for growing steps, which gives millions of distinct texts from ~2,000 paragraphs."""
    paras = paragraphs()
    result: list[str] = []
    seen: set[str] = set()
    step = 0
    while len(result) < n:
        for i in range(len(paras)):
            text = paras[i] if step == 0 else paras[i] + " " + paras[(i + step) % len(paras)]
            text = text[:max_chars]
            if text not in seen:
                seen.add(text)
                result.append(text)
                if len(result) >= n:
                    break
        step += 1
        if step >= len(paras):
            raise RuntimeError("not enough prose")
    return result


if __name__ == "__main__":
    p = paragraphs()
    print(len(p), sum(len(x) for x in p) // len(p))
