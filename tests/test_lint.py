"""The linters (tier ``lint``, run in the lint venv that scripts/_setup.py builds).

``ruff check`` and ``ruff format --check`` over the repository and ``mypy --strict`` over the
package, each as pyproject.toml configures it, so a developer gets the same answer from the bare
commands. The package ships ``py.typed``: a user's type checker sees the public API's types, so one
check types a user's call the way the API documents it, and one shows mypy failing on a wrong call
(the tier can fail). And no module of the package imports, directly or through others, a module
that imports it back (at module level or inside a function): the timer and its preferences panel
once did. The same holds for the bench's scripts (bench/run.py and bench_process.py once imported
each other), and importing one of them does no work (two registered Blender timers as they were
imported).
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


#: The modules with code for one system only (``if sys.platform == ...``), which mypy checks only
#: when told that system.
PLATFORM_MODULES = ["_pipes.py", "_process_child.py", "_windows.py", "_internals.py", "_wake.py", "_async.py"]


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_mypy_strict_on_other_systems(platform):
    # (The modules they import are checked, as Linux sees them, above.)
    paths = [str(ROOT / "mainthread_tasks" / name) for name in PLATFORM_MODULES]
    _ok(
        _tool(
            "mypy",
            "--platform",
            platform,
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            *paths,
        )
    )


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


def _local_imports(path: Path, siblings: set[str]) -> set[str]:
    """The modules of ``path``'s folder that it imports, at module level or inside its functions:
    relative imports (the package's) and absolute imports of ``siblings`` (the bench's scripts, which
    import each other by their folder on sys.path)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module)
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in siblings:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name in siblings)
    return names


def _import_graph(folder: Path) -> dict[str, set[str]]:
    siblings = {path.stem for path in folder.glob("*.py")}
    return {path.stem: _local_imports(path, siblings) for path in folder.glob("*.py")}


def _import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that leads back to where it started, or None."""

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
        if circle:
            return circle
    return None


def test_the_package_has_no_import_circle():
    graph = _import_graph(ROOT / "mainthread_tasks")
    assert graph["_preferences"] and graph["_submit"], "the parser finds the package's imports"
    assert _import_circle(graph) is None, " -> ".join(_import_circle(graph) or ())


def test_the_bench_has_no_import_circle():
    graph = _import_graph(ROOT / "bench")
    assert graph["run"], "the parser finds the bench's imports"
    assert _import_circle(graph) is None, " -> ".join(_import_circle(graph) or ())


def _writes_into_other_modules(path: Path, package: set[str]) -> list[str]:
    """Assignments (``=``, ``+=``, ``del``, ``setattr``) to an attribute of another of the
    package's modules, as ``path`` spells them: each piece of state has one owner, which changes it
    through its own functions."""
    import ast

    tree = ast.parse(path.read_text())
    modules = set()  # names bound to the package's modules in this file
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and not node.module:
            modules.update(alias.asname or alias.name for alias in node.names if alias.name in package)
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            targets = [ast.Attribute(value=node.args[0], attr="?")] if node.args else []
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id in modules:
                    found.append(f"{path.name}:{node.lineno} writes {part.value.id}.{part.attr}")
    return found


def test_no_module_of_the_package_writes_another_modules_attributes():
    folder = ROOT / "mainthread_tasks"
    package = {path.stem for path in folder.glob("*.py")}
    found = [line for path in sorted(folder.rglob("*.py")) for line in _writes_into_other_modules(path, package)]
    assert not found, found


def test_the_write_check_catches_a_write(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from . import _pacing, _queue\n_pacing.tick_budget = 1\nsetattr(_queue, 'held', [])\n")
    assert len(_writes_into_other_modules(sample, {"_pacing", "_queue"})) == 2


#: What a module of bench/ may not import at module level: they exist inside Blender only (bpy), or
#: once bench/_harness.py has put the repository on sys.path (the package). bench/run.py imports
#: every bench_*.py for its table, outside Blender.
_IN_BLENDER_ONLY = {"bpy", "mainthread_tasks"}


def _runs_at_import(body: list) -> list[tuple[int, str]]:
    """The statements of a module (or class) body that do work when it is imported: anything but a
    docstring, imports, definitions, ``if __name__ == "__main__":`` and assignments that call
    nothing (``Path(__file__).resolve()...`` aside). Returns (line, why) pairs; class bodies too."""
    import ast

    def allowed_call(node: ast.AST) -> bool:  # Path(...), and attributes and methods chained on it
        if isinstance(node, ast.Call):
            func = node.func
            return (isinstance(func, ast.Name) and func.id == "Path") or (
                isinstance(func, ast.Attribute) and allowed_call(func.value)
            )
        return isinstance(node, ast.Attribute) and allowed_call(node.value)

    def calls(node: ast.AST) -> bool:
        if isinstance(node, ast.Call) and not allowed_call(node):
            return True
        return any(calls(child) for child in ast.iter_child_nodes(node))

    found = []
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            blender_only = sorted(m for m in modules if m.split(".")[0] in _IN_BLENDER_ONLY)
            if blender_only:
                found.append((node.lineno, f"imports {', '.join(blender_only)} at module level"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.ClassDef):
            found += _runs_at_import(node.body)
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            continue  # runs only when the file is the script
        elif isinstance(node, ast.Assign | ast.AnnAssign) and not (node.value and calls(node.value)):
            continue
        else:
            found.append((node.lineno, f"runs {ast.unparse(node).splitlines()[0]!r}"))
    return found


def test_the_bench_runs_nothing_at_import():
    """Importing a module of bench/ defines things and does nothing else: no timer registered, no
    argv read, no sys.path changed, no bpy imported. What runs inside Blender is started by
    bench/_harness.py; a script does its work under ``if __name__ == "__main__":``."""
    import ast

    found = [
        f"bench/{path.name}:{line}: {why}"
        for path in sorted((ROOT / "bench").glob("*.py"))
        for line, why in _runs_at_import(ast.parse(path.read_text()).body)
    ]
    assert not found, "\n".join(found)


def test_the_import_check_catches_work_at_import():
    import ast

    code = textwrap.dedent(
        """
        "A docstring."
        import sys
        from pathlib import Path
        import bpy
        HERE = Path(__file__).resolve().parent
        LIMITS = {"quick": 1, "full": 2}
        sys.path.insert(0, str(HERE))
        ARGS = sys.argv[sys.argv.index("--") + 1 :]

        class Sizes:
            steps = 3
            started = bpy.app.timers.register(print)

        def main():
            bpy.app.timers.register(main)

        if __name__ == "__main__":
            main()
        """
    )
    found = [line for line, _why in _runs_at_import(ast.parse(code).body)]
    assert found == [5, 8, 9, 13], _runs_at_import(ast.parse(code).body)
