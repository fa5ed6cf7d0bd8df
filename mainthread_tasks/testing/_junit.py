"""The launcher's JUnit XML: one ``<testsuite>`` per Blender and mode, crashed tests included.

A session that ended normally wrote pytest's own report (``--junitxml`` to a part file): its test
cases are taken as they are. A session that crashed wrote none: its test cases are made from the
progress file the plugin keeps (each report as it happened), as pytest would have written them,
plus a failure for the test that crashed. Standard library only (runs outside Blender).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("Suite", "crashed_case", "read_part", "reported_case", "write")


@dataclass
class Suite:
    """The test cases of one Blender in one mode (background, gui, module)."""

    name: str
    properties: dict[str, str]
    cases: list[ET.Element] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"tests": len(self.cases), "failures": 0, "errors": 0, "skipped": 0}
        for case in self.cases:
            for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                if case.find(kind) is not None:
                    counts[key] += 1
                    break
        return counts


def read_part(path: Path) -> tuple[str, list[ET.Element]]:
    """pytest's report: (its suite name, its test cases)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    name = suites[0].get("name", "pytest") if suites else "pytest"
    return name, [case for suite in suites for case in suite.iter("testcase")]


def _address(nodeid: str) -> tuple[str, str]:
    # pytest's own mapping (junitxml.mangle_test_address): tests/test_x.py::Class::test[p] ->
    # classname tests.test_x.Class, name test[p].
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _case(nodeid: str, seconds: float) -> ET.Element:
    classname, name = _address(nodeid)
    return ET.Element("testcase", {"classname": classname, "name": name, "time": f"{seconds:.3f}"})


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")[:200]


def reported_case(nodeid: str, reports: Iterable[dict[str, Any]]) -> ET.Element:
    """A test case from the plugin's reports of one test (setup, call, teardown)."""
    reports = list(reports)
    case = _case(nodeid, sum(float(r.get("duration", 0.0)) for r in reports))
    for report in reports:
        outcome, when, text = report["outcome"], report["when"], report.get("longrepr", "")
        if outcome == "skipped":
            skipped = ET.SubElement(case, "skipped", {"type": "pytest.skip", "message": report.get("skip", "")})
            skipped.text = text
        elif outcome == "failed" and when == "call":
            failure = ET.SubElement(case, "failure", {"message": _first_line(text)})
            failure.text = text
        elif outcome == "failed":
            error = ET.SubElement(case, "error", {"message": f"failed on {when} with {_first_line(text)!r}"})
            error.text = text
    return case


def crashed_case(nodeid: str, message: str, detail: str, seconds: float = 0.0) -> ET.Element:
    """The test during which Blender died (or the place it died, for a crash outside any test)."""
    case = _case(nodeid, seconds)
    failure = ET.SubElement(case, "failure", {"message": message})
    failure.text = detail
    return case


def write(path: Path, suites: list[Suite]) -> None:
    root = ET.Element("testsuites")
    for suite in suites:
        counts = suite.counts()
        seconds = sum(float(case.get("time", 0.0)) for case in suite.cases)
        element = ET.SubElement(
            root, "testsuite", {"name": suite.name, **{k: str(v) for k, v in counts.items()}, "time": f"{seconds:.3f}"}
        )
        properties = ET.SubElement(element, "properties")
        for key, value in suite.properties.items():
            ET.SubElement(properties, "property", {"name": key, "value": value})
        element.extend(suite.cases)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
