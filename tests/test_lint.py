"""The code stays ruff- and mypy-clean (both come with the test extra), and its modules import
one another without circles."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install '.[test]')")
    result = subprocess.run([ruff, "check", "grenade_py", "tests", "examples"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy", "grenade_py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def imports(package: Path) -> dict[str, set[str]]:
    """Each module of `package` (dotted names) with the package's modules it imports anywhere
    in its text: at the top, inside functions, or for type checking only."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                named = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                graph[name] |= named or {node.module}  # a submodule, else the module itself
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & set(modules)
        graph[name].discard(name)
    return graph


def test_no_import_circles():
    """No module imports, even for type checking, one that imports it back (grenade_py's
    __init__, which gathers every name for users, aside)."""
    graph = imports(ROOT / "grenade_py")
    circles = []

    def visit(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]] - {"grenade_py"}):
            if nxt == path[0]:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each circle once, from its least module
                visit([*path, nxt])

    for start in sorted(set(graph) - {"grenade_py"}):
        visit([start])
    assert not circles, "\n".join(circles)
