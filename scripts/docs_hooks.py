"""MkDocs hooks and a Griffe extension for the documentation site (both named in mkdocs.yml).

- The benchmark writes its plots to bench/results/ (the README shows them from there); the site
  serves the same files as ``bench/<name>.png``, so that no copy of them is kept under docs/.
- ``PublicSignatures`` (a Griffe extension, loaded by mkdocstrings as
  ``scripts/docs_hooks.py:PublicSignatures``) shows the signatures as a user calls them: a private
  type variable ``_T`` reads ``T`` and ``*args: _P.args`` reads ``*args: P.args`` (the names are
  the module's own; only the underscore goes), and a function decorated with
  ``contextlib.contextmanager`` returns ``AbstractContextManager[X]``, which is what the decorator
  makes of it, rather than the ``Iterator[X]`` its generator is annotated with.

Nothing here changes what a docstring says: the docs tier (tests/test_docs.py) checks the built
pages for what only a docstring change can fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def on_files(files, config):
    for plot in sorted(BENCH_RESULTS.glob("*.png")):
        files.append(File.generated(config, f"bench/{plot.name}", abs_src_path=str(plot)))
    return files


# -- the Griffe extension --------------------------------------------------------------------------

try:  # mkdocs imports this file as its hooks too, where Griffe may not be needed
    import griffe
except ImportError:  # pragma: no cover - the docs venv has it
    griffe = None

TYPE_VARIABLE_FACTORIES = ("TypeVar", "ParamSpec", "TypeVarTuple")
ITERATOR_TYPES = (
    "collections.abc.Iterator",
    "collections.abc.Generator",
    "typing.Iterator",
    "typing.Generator",
)


def _type_variable(name: Any) -> str | None:
    """The public spelling of ``name`` if it is a private type variable of the package, else None."""
    if not isinstance(name, griffe.ExprName) or not name.name.startswith("_") or name.parent is None:
        return None
    if isinstance(name.parent, (str, griffe.ExprName)):
        return None
    try:
        target = name.parent.modules_collection[name.canonical_path]
    except (KeyError, AttributeError):
        return None
    value = getattr(target, "value", None)
    if isinstance(value, griffe.ExprCall) and str(value.function).endswith(TYPE_VARIABLE_FACTORIES):
        return name.name.lstrip("_")
    return None


def _public(expr: Any) -> Any:
    """``expr`` with the package's private type variables spelled without their underscore."""
    if not isinstance(expr, griffe.Expr):
        return expr
    public = _type_variable(expr)
    if public is not None:
        return griffe.ExprName(public)  # no parent: a type variable links nowhere
    if isinstance(expr, griffe.ExprAttribute):
        first = _type_variable(expr.first)
        if first is not None:  # _P.args: shown whole, never shortened to "args"
            return f"{first}.{expr.last.name}"
    for field in dataclasses.fields(expr):
        value = getattr(expr, field.name)
        if isinstance(value, griffe.Expr):
            setattr(expr, field.name, _public(value))
        elif isinstance(value, list):
            value[:] = [_public(item) for item in value]
    return expr


def _context_manager(func: Any) -> None:
    if not any(d.callable_path == "contextlib.contextmanager" for d in func.decorators):
        return
    returns = func.returns
    if isinstance(returns, griffe.ExprSubscript) and returns.left.canonical_path in ITERATOR_TYPES:
        yielded = returns.slice.elements[0] if isinstance(returns.slice, griffe.ExprTuple) else returns.slice
        func.returns = griffe.ExprSubscript(griffe.ExprName("AbstractContextManager", parent="contextlib"), yielded)
    func.labels.add("context manager")


def _walk(obj: Any) -> None:
    if obj.is_alias:
        return
    if obj.is_function:
        _context_manager(obj)
        for parameter in obj.parameters:
            parameter.annotation = _public(parameter.annotation)
        obj.returns = _public(obj.returns)
    elif obj.is_attribute:
        obj.annotation = _public(obj.annotation)
    elif obj.is_class:
        obj.bases = [_public(base) for base in obj.bases]
    for member in obj.members.values():
        _walk(member)


if griffe is not None:

    class PublicSignatures(griffe.Extension):
        """See the module's docstring."""

        def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
            _walk(pkg)
