"""No test helper or fixture is defined twice (issue #17).

Two definitions of one name drift apart (one gets a fix, the other does not), and a reader cannot tell from a call
which one runs. So every module-level function or class under tests/ (helpers, fixtures, dataclasses; not the
test_* functions and Test* classes, which pytest keys by file) has one name in one file: what several folders need
lives in tests/helpers (tests/helpers/README.md) and is imported; a different thing gets a name that says what it
is. Read with ast, so a def inside an `if` or `try` at module level counts too, and nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DEFINITION = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module body, looking into if/try/with blocks (still module level) but not into defs."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    yield from _module_level(child.body if isinstance(child, ast.ExceptHandler) else [child])


def _names(node: ast.stmt) -> Iterator[str]:
    """The names a definition is known by: its own, and for `@pytest.fixture(name="x")` also the fixture's."""
    if not isinstance(node, DEFINITION):
        return
    yield node.name
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and "fixture" in ast.unparse(decorator.func):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    yield str(keyword.value.value)


def defined_twice(root: Path) -> dict[str, list[str]]:
    """name -> the files (relative to `root`) defining it, for every name defined in more than one .py file.

    pytest_* hooks are left out: pytest calls each conftest's own, so one per conftest is how they work."""
    files: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _module_level(tree.body):
            for name in set(_names(node)):
                if not name.startswith(("test_", "Test", "pytest_")):
                    files[name].add(path.relative_to(root).as_posix())
    return {name: sorted(where) for name, where in sorted(files.items()) if len(where) > 1}


def test_no_helper_or_fixture_is_defined_in_two_files() -> None:
    twice = defined_twice(TESTS)
    listing = "\n".join(f"  {name} -> {', '.join(files)}" for name, files in twice.items())
    assert not twice, (f"{len(twice)} name(s) defined in more than one file under tests/ (keep one, in tests/helpers, "
                       f"and import it; or rename the file-local one to say what it is):\n{listing}")


def test_the_check_sees_a_duplicate_even_inside_an_if(tmp_path: Path) -> None:
    """The check can fail: a helper defined in two folders (once under `if`) is reported with both files."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.py").write_text("def helper():\n    pass\n\n\ndef test_x():\n    pass\n")
    (tmp_path / "b" / "two.py").write_text("import sys\n\nif sys:\n    class helper:\n        pass\n\n\n"
                                          "def test_x():\n    pass\n\n\nclass TestY:\n    pass\n")
    assert defined_twice(tmp_path) == {"helper": ["a/one.py", "b/two.py"]}


def test_a_fixture_renamed_by_its_decorator_counts_under_the_name_pytest_uses(tmp_path: Path) -> None:
    """`@pytest.fixture(name="minio_pair")` on `_x` overrides minio_pair as surely as `def minio_pair` does."""
    (tmp_path / "plugin.py").write_text("import pytest\n\n\n@pytest.fixture\ndef minio_pair():\n    pass\n")
    (tmp_path / "test_mine.py").write_text('import pytest\n\n\n@pytest.fixture(name="minio_pair")\n'
                                           "def _own_pair():\n    pass\n\n\ndef pytest_configure(config):\n"
                                           "    pass\n")
    (tmp_path / "conftest.py").write_text("def pytest_configure(config):\n    pass\n")
    assert defined_twice(tmp_path) == {"minio_pair": ["plugin.py", "test_mine.py"]}
