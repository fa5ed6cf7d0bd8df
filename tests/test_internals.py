"""The private CPython and Blender internals the package touches: all listed, all still there.

``mainthread_tasks/_internals.py`` lists them; these tests run in every tier, so a new Python or
Blender that changes one fails here by name, and a private use added to the package without an
entry fails the completeness check.
"""

from __future__ import annotations

import re
from pathlib import Path

from mainthread_tasks import _internals

PACKAGE = Path(__file__).resolve().parent.parent / "mainthread_tasks"

# A private name of a standard-library module: `threading._active`, `from concurrent.futures._base`.
_STDLIB = r"(?:sys|os|threading|signal|asyncio|socket|select|selectors|multiprocessing|concurrent\.futures|_thread)"
_PRIVATE_USE = re.compile(rf"\b{_STDLIB}(?:\.[a-z]\w*)*\._[A-Za-z]\w*")
# Public despite the underscore: os._exit is documented API.
_PUBLIC = {"os._exit"}
# An undocumented module of the standard library, imported: `import _winapi` (_thread is documented).
_PRIVATE_MODULE = re.compile(r"^\s*(?:import|from) (_(?!thread\b)[a-z]\w*)", re.MULTILINE)


def _sources() -> dict[str, str]:
    return {
        path.name: path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_internals.py" and "testing" not in path.relative_to(PACKAGE).parts
    }


def test_every_internal_is_still_as_the_package_expects():
    assert _internals.failures() == []


def test_every_private_the_package_names_is_listed():
    tokens = [token for internal in _internals.INTERNALS for token in internal.tokens]
    unlisted = set()
    for name, text in _sources().items():
        uses = [m.group(0) for m in _PRIVATE_USE.finditer(text)] + [m.group(1) for m in _PRIVATE_MODULE.finditer(text)]
        for used in uses:
            if used not in _PUBLIC and not any(token in used or used in token for token in tokens):
                unlisted.add(f"{name}: {used}")
    assert not unlisted, f"private internals used but not listed in _internals.py: {sorted(unlisted)}"


def test_no_entry_is_stale():
    text = "\n".join(_sources().values())
    for internal in _internals.INTERNALS:
        assert internal.tokens, internal.name
        for token in internal.tokens:
            assert token in text, f"{internal.name}: {token!r} is no longer in the package"


def test_each_entry_says_what_why_where_and_the_fallback():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    for internal in _internals.INTERNALS:
        assert internal.why and internal.fallback, internal.name
        for module in internal.used_in.split(", "):
            assert module in modules, f"{internal.name}: used_in names {module!r}, not a module of the package"
