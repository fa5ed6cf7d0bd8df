"""MkDocs hooks for the documentation site (named in mkdocs.yml; they run inside ``mkdocs build``).

The benchmark writes its plots to bench/results/ (the README shows them from there); the site
serves the same files as ``bench/<name>.png``, so that no copy of them is kept under docs/.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def on_files(files, config):
    for plot in sorted(BENCH_RESULTS.glob("*.png")):
        files.append(File.generated(config, f"bench/{plot.name}", abs_src_path=str(plot)))
    return files
