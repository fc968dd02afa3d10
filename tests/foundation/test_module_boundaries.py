"""The house rules a newcomer can rely on, read from the code itself (docs/architecture.md).

- No module reaches into another's private names (`from drtool.x import _y`): what is shared is public.
- The layers point one way: core/ imports nothing above it, adapters/ no use case or command, ops/ no command.
- No circle among module-level imports.
- No module is over ~400 lines unless LONG_MODULES says why.
- An import inside a function says why it is not at module level (cli/ by the one rule in drtool/cli/__init__.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "drtool"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[str, str, int]]:
    """(module, imported name, line) of every `from drtool... import name` / `import drtool...` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[str, str, int]] = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "drtool":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names if alias.name.split(".")[0] == "drtool"]
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    private = [f"{p.relative_to(ROOT)}:{line}: {module}.{name}"
               for p in files for module, name, line in _imports(p, top_level_only=False)
               if name.startswith("_") and not name.startswith("__")]
    assert not private, "make these public (no leading underscore) or keep them in their module:\n" + \
        "\n".join(private)


def test_layers_point_one_way() -> None:
    above = {"core": ("drtool.ops", "drtool.cli", "drtool.adapters"), "adapters": ("drtool.ops", "drtool.cli"),
             "ops": ("drtool.cli",)}
    wrong = []
    for name, path in MODULES.items():
        layer = name.split(".")[1] if name.count(".") else ""
        for module, imported, line in _imports(path, top_level_only=False):
            target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
            if any(target == banned or target.startswith(banned + ".") for banned in above.get(layer, ())):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer}/ imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_circle_among_module_level_imports() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {f"{m}.{n}" if f"{m}.{n}" in MODULES else m for m, n, _ in _imports(path, top_level_only=True)}
        graph[name] = {t for t in targets if t in MODULES and t != name}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start)):
            raise AssertionError("import circle: " + " -> ".join(circle))


MAX_LINES = 400
# Modules over MAX_LINES, each with why it stays whole; everything else is split by what it holds.
LONG_MODULES = {
    "drtool/config.py": "the one settings table: every setting's type, default, sources and help, from which "
                        "docs/configuration.md and the config commands are generated; split, it would drift",
    "drtool/adapters/weaviate.py": "one outside system per adapter: Weaviate's schema, batch, query, alias and "
                                   "answer checks behind the VectorStore port",
    "drtool/adapters/pgvector.py": "one outside system per adapter: pgvector's tables, COPY batches, index and "
                                   "rename switch behind the VectorStore port",
    "drtool/adapters/milvus.py": "one outside system per adapter: Milvus (Lite and server) behind the VectorStore port",
    "drtool/adapters/embedders.py": "one outside system per adapter: the embedding providers behind the Embedder "
                                    "port share batching, retries and dimension checks",
}


def test_no_module_is_long_unless_explained() -> None:
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
               for p in PACKAGE.rglob("*.py")}
    unexplained = sorted(f"{path}: {n} lines" for path, n in lengths.items()
                         if n > MAX_LINES and path not in LONG_MODULES)
    assert not unexplained, "split these by what they hold (or say why not in LONG_MODULES):\n" + \
        "\n".join(unexplained)
    stale = sorted(path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_LINES)
    assert not stale, f"no longer over {MAX_LINES} lines, remove from LONG_MODULES: {stale}"


def _function_body_imports(path: Path) -> list[tuple[int, int]]:
    """(first line, last line) of every import inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    spans: set[tuple[int, int]] = set()
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            spans |= {(node.lineno, node.end_lineno or node.lineno) for node in ast.walk(func)
                      if isinstance(node, ast.Import | ast.ImportFrom)}
    return sorted(spans)


def test_function_body_imports_say_why() -> None:
    """An import inside a function hides a dependency; it is kept only for a heavy or optional one (an SDK, a
    model), with its reason on its line or in a comment right above its group of imports. cli/ modules import
    their operation inside the command by one rule, stated in drtool/cli/__init__.py."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "cli":
            continue
        text = path.read_text(encoding="utf-8").splitlines()
        explained_to = 0  # last line of the latest import covered by a comment
        for first, last in _function_body_imports(path):
            above = text[first - 2].strip() if first >= 2 else ""
            if "#" in "".join(text[first - 1:last]) or above.startswith("#") or explained_to == first - 1:
                explained_to = last
            else:
                unexplained.append(f"{path.relative_to(ROOT)}:{first}: {text[first - 1].strip()}")
    assert not unexplained, "import at module level, or say why not in a comment:\n" + "\n".join(unexplained)
