"""The code blocks of the README and the tutorial, and the tests that run them.

Every fenced block of those two pages carries a label, in an HTML comment on the line above it
(``<!-- block: NAME -->``). ``RUN_BY`` names, for every label, the test file that runs the block;
tests/test_doc_blocks.py checks that the pages and ``RUN_BY`` agree and that each named test file
asks for its blocks by label, so that a block nobody runs cannot be added.

The tutorial builds ``examples/asset_downloader/__init__.py`` in steps: its blocks titled
``__init__.py`` are pieces of that file, and ``assemble()`` puts them together as a reader edits
the file: a block's imports replace the file's imports, and each function, class or assignment
replaces the one of the same name, or is added at the end.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = "README.md"
TUTORIAL = "docs/tutorial.md"

#: label -> the test file that runs the block (and asks for it with ``block(page, label)``).
RUN_BY: dict[tuple[str, str], str] = {
    (README, "try-it"): "tests/test_demo.py",
    (README, "addon"): "tests/test_doc_blocks_blender.py",
    (README, "test-command"): "tests/test_doc_blocks.py",  # .ci/run runs it: checked there
    **{
        (TUTORIAL, label): "tests/test_doc_blocks_blender.py"
        for label in (
            "step-1",
            "step-2-imports",
            "step-2",
            "step-2-operator",
            "step-3",
            "step-4",
            "step-4-frame",
            "step-5",
            "step-5-unregister",
        )
    },
    (TUTORIAL, "demo-assets"): "tests/test_testing_kit.py",  # the example's file, included whole
    (TUTORIAL, "tests"): "tests/test_testing_kit.py",  # the example's tests, included whole
    (TUTORIAL, "test-command"): "tests/test_testing_kit.py",
}

#: The tutorial's steps, in order, each with the labels of its blocks of ``__init__.py``.
TUTORIAL_STEPS: list[tuple[str, ...]] = [
    ("step-1",),
    ("step-2-imports", "step-2", "step-2-operator"),
    ("step-3",),
    ("step-4", "step-4-frame"),
    ("step-5", "step-5-unregister"),
]


@dataclass(frozen=True)
class Block:
    page: str
    label: str | None
    lang: str
    title: str | None
    text: str


def blocks(page: str) -> list[Block]:
    """Every fenced block of ``page`` (a path from the repository's top), labelled or not."""
    source = (ROOT / page).read_text()
    found = []
    fences = re.finditer(
        r"^(?:<!-- block: (?P<label>[\w-]+) -->\n)?```(?P<info>[^\n`]*)\n(?P<text>.*?)^```$", source, re.M | re.S
    )
    for match in fences:
        info = match["info"].strip()
        title = re.search(r'title="([^"]+)"', info)
        found.append(Block(page, match["label"], info.split(" ")[0], title[1] if title else None, match["text"]))
    return found


def block(page: str, label: str) -> Block:
    """The block labelled ``label`` on ``page``."""
    (found,) = [b for b in blocks(page) if b.label == label] or [None]
    if found is None:
        raise LookupError(f"{page} has no block labelled {label!r}")
    return found


def command(found: Block) -> str:
    """A shell block's one command, its continuation lines joined."""
    return " ".join(found.text.replace("\\\n", " ").split())


def included(found: Block) -> Path | None:
    """The file a block includes whole (``--8<-- "path"``), if that is all it holds."""
    match = re.fullmatch(r'--8<-- "([^"]+)"\n', found.text)
    return ROOT / match[1] if match else None


# -- assembling the tutorial's __init__.py ------------------------------------------------------------


def _pieces(text: str) -> tuple[list[str] | None, list[tuple[str, str]]]:
    """A block's imports (None if it has none) and its other top-level statements as (key, source),
    each with the comment lines right above it."""
    tree = ast.parse(text)
    lines = text.splitlines()
    imports: list[str] | None = None
    pieces: list[tuple[str, str]] = []
    for node in tree.body:
        first = node.lineno - 1 - len(getattr(node, "decorator_list", []))
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            first -= 1
        source = "\n".join(lines[first : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            previous = lines[first - 1] if first else ""
            if imports is None:
                imports = [source]
            else:
                imports.append(("\n" if not previous.strip() else "") + source)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
            pieces.append(("__doc__", source))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pieces.append((node.name, source))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            pieces.append((",".join(ast.unparse(t) for t in targets), source))
        else:
            raise ValueError(f"a tutorial block may hold only imports, definitions and assignments: {source}")
    return imports, pieces


def assemble(texts: list[str]) -> str:
    """The file that the blocks ``texts`` make, in order (see the module's docstring)."""
    imports: list[str] = []
    doc: str | None = None
    order: list[str] = []
    sources: dict[str, str] = {}
    for text in texts:
        block_imports, pieces = _pieces(text)
        if block_imports is not None:
            imports = block_imports
        for key, source in pieces:
            if key == "__doc__":
                doc = source
                continue
            if key not in sources:
                order.append(key)
            sources[key] = source
    head = "\n\n".join(part for part in (doc, "\n".join(imports)) if part)
    body = [sources[key] for key in order]
    # As ruff's isort has it: one empty line between the imports and an assignment, two before a
    # definition (and between top-level statements, as ruff format keeps them).
    after_imports = "\n\n\n" if body[0].startswith(("def ", "async def ", "class ", "@")) else "\n\n"
    return head + after_imports + "\n\n\n".join(body) + "\n"


def tutorial_file(steps: int) -> str:
    """``__init__.py`` as it is after the first ``steps`` steps of the tutorial."""
    labels = [label for step in TUTORIAL_STEPS[:steps] for label in step]
    return assemble([block(TUTORIAL, label).text for label in labels])
