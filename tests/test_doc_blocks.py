"""Every code block of the README and of the tutorial is run by a test (tests/doc_blocks.py), and
the tutorial adds up to the example add-on it says it builds. Plain Python: every tier runs these."""

from __future__ import annotations

import itertools

from tests import doc_blocks
from tests.doc_blocks import README, RUN_BY, TUTORIAL, TUTORIAL_STEPS, block, blocks
from tests.support import ROOT

EXAMPLE = ROOT / "examples" / "asset_downloader"


def test_every_block_has_a_label_and_a_test_that_asks_for_it():
    found = [b for page in (README, TUTORIAL) for b in blocks(page)]
    unlabelled = [(b.page, b.text.splitlines()[0]) for b in found if b.label is None]
    assert not unlabelled, f"label them (<!-- block: NAME --> above the fence) and add them to RUN_BY: {unlabelled}"
    labels = [(b.page, b.label) for b in found]
    assert len(set(labels)) == len(labels), "labels are unique on a page"
    assert set(labels) == set(RUN_BY), "RUN_BY names exactly the blocks of the README and the tutorial"
    stepped = set(itertools.chain.from_iterable(TUTORIAL_STEPS))
    for (page, label), test_file in RUN_BY.items():
        source = (ROOT / test_file).read_text()
        asked = f'"{label}"' in source or (page == TUTORIAL and label in stepped and "tutorial_file(" in source)
        assert asked, f"{test_file} does not run the block {label!r} of {page}"


def test_the_tutorial_adds_up_to_the_example_addon():
    stepped = list(itertools.chain.from_iterable(TUTORIAL_STEPS))
    in_page = [b.label for b in blocks(TUTORIAL) if b.title == "__init__.py"]
    assert in_page == stepped, "TUTORIAL_STEPS lists the tutorial's blocks of __init__.py, in order"
    assert doc_blocks.tutorial_file(len(TUTORIAL_STEPS)) == (EXAMPLE / "__init__.py").read_text()
    for step in range(1, len(TUTORIAL_STEPS) + 1):
        compile(doc_blocks.tutorial_file(step), f"step {step}", "exec")


def test_the_readme_test_command_is_what_ci_runs():
    command = doc_blocks.command(block(README, "test-command"))
    assert command == "python3 scripts/run_tests.py"
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith(f"exec {command}")
