"""The linters (tier ``lint``, run in the lint venv that scripts/_setup.py builds).

``ruff check`` and ``ruff format --check`` over the repository and ``mypy --strict`` over the
package, each as pyproject.toml configures it, so a developer gets the same answer from the bare
commands. The package ships ``py.typed``: a user's type checker sees the public API's types, so one
check types a user's call the way the API documents it, and one shows mypy failing on a wrong call
(the tier can fail). And no module of the package imports, directly or through others, a module
that imports it back (at module level or inside a function): the timer and its preferences panel
once did.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT, run

pytestmark = pytest.mark.lint

TIMEOUT = 300  # seconds; mypy's first, uncached run of the package takes ~20


def _tool(*args: str, cwd: Path = ROOT):
    return run([sys.executable, "-m", *args], TIMEOUT, cwd=cwd)


def _ok(proc) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args[2:])} failed:\n{proc.stdout}{proc.stderr}"


def test_ruff_check():
    _ok(_tool("ruff", "check", "--no-cache", "."))


def test_ruff_format():
    _ok(_tool("ruff", "format", "--check", "--no-cache", "."))


def test_mypy_strict():
    _ok(_tool("mypy", "--no-incremental", "--cache-dir", "/dev/null"))


def _user_code(tmp_path: Path, code: str):
    """mypy --strict on a user's module that imports the package (the package's own config does not
    apply: the user's does)."""
    user = tmp_path / "user_addon.py"
    user.write_text(textwrap.dedent(code))
    return run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            str(user),
        ],
        TIMEOUT,
        cwd=tmp_path,
        env={"MYPYPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_a_users_calls_are_typed(tmp_path):
    proc = _user_code(
        tmp_path,
        """
        from typing import assert_type
        import mainthread_tasks as mt

        def area(width: float, height: float) -> float:
            return width * height

        future = mt.run_on_main(area, 2.0, height=3.0)
        assert_type(future, mt.MainThreadFuture[float])
        assert_type(future.result(), float)
        assert_type(mt.call_on_main(area, 2.0, 3.0), float)
        with mt.joined_threads(timeout=5.0) as scope:
            assert_type(scope, mt.ThreadScope)
        assert_type(mt.progress("Baking").cancelled, bool)

        def frame_all() -> int:
            with mt.ui_context("VIEW_3D") as found:
                return found["area"].width  # a bpy.types.Area (fake-bpy-module), not Any
        """,
    )
    _ok(proc)


def test_a_wrong_call_fails(tmp_path):
    proc = _user_code(
        tmp_path,
        """
        import mainthread_tasks as mt

        def area(width: float, height: float) -> float:
            return width * height

        label: str = mt.call_on_main(area, 2.0, 3.0)
        """,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Incompatible types in assignment" in proc.stdout, proc.stdout


def _package_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside its functions."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module)
            else:
                names.update(alias.name for alias in node.names)
    return names


def test_the_package_has_no_import_circle():
    package = ROOT / "mainthread_tasks"
    graph = {path.stem: _package_imports(path) for path in package.glob("*.py")}
    assert graph["_preferences"] and graph["_scheduler"], "the parser finds the package's imports"

    def circle_from(module: str, path: list[str]) -> list[str] | None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return [*path[path.index(imported) :], imported]
            found = circle_from(imported, [*path, imported])
            if found:
                return found
        return None

    for module in sorted(graph):
        circle = circle_from(module, [module])
        assert circle is None, " -> ".join(circle or ())
