"""Every measured figure the README and docs/ quote comes from a results file that its section links.

A figure is a number with three or more decimals (log losses, accuracies, weights). Each section
(heading to heading) names its sources as `results/...` paths (a link or a code span; a folder
stands for every file under it); each figure in the section must be one of the numbers in those
files at the precision quoted (0.7677 matches 0.76771...). Version numbers and paper ids
(``arXiv 2411.09947``, ``Python 3.11``) and web addresses are not figures.
"""
from __future__ import annotations

import bisect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCE = re.compile(r"(?:\]\(|`)(?:\.\./)?(results/[^)`\s#]+)")
FIGURE = re.compile(r"(?<![\w.])(?<!arXiv )(?<!Python )(\d+\.\d{3,})(?!\w|\.\d)")
URL = re.compile(r"\(https?://[^)]*\)")
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE]-?\d+)?")
TEXT_SUFFIXES = {".json", ".md", ".csv", ".txt"}


def numbers_in(paths: list[Path]) -> list[float]:
    values = set()
    for path in paths:
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            if f.suffix in TEXT_SUFFIXES:
                # a quoted figure carries no sign of its own here ("−0.0570", "+0.0184"): compare magnitudes
                values.update(abs(float(m)) for m in NUMBER.findall(f.read_text(errors="ignore")))
    return sorted(values)


def quoted_at_precision(figure: str, values: list[float]) -> bool:
    half_unit = 0.5 * 10 ** -len(figure.split(".")[1]) + 1e-12
    i = bisect.bisect_left(values, float(figure) - half_unit)
    return i < len(values) and values[i] <= float(figure) + half_unit


def sections(text: str) -> list[list[tuple[int, str]]]:
    found, current = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") and current:
            found.append(current)
            current = []
        current.append((number, line))
    return found + [current]


def unsourced_figures(doc: Path, root: Path = REPO) -> list[str]:
    """``doc:line: figure`` for each figure not in its section's linked results files, and
    ``doc: missing source`` for each linked results path that does not exist."""
    problems = []
    for section in sections(doc.read_text()):
        linked = {m.rstrip("/.,;:") for _, line in section for m in SOURCE.findall(line)}
        problems += [f"{doc.name}: missing source {p}" for p in sorted(linked) if not (root / p).exists()]
        values = numbers_in([root / p for p in sorted(linked) if (root / p).exists()])
        problems += [f"{doc.name}:{number}: {figure} (sources: {', '.join(sorted(linked)) or 'none linked'})"
                     for number, line in section for figure in FIGURE.findall(URL.sub("", line))
                     if not quoted_at_precision(figure, values)]
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_figure_is_in_a_linked_results_file(doc):
    assert unsourced_figures(doc) == []


def test_the_check_sees_a_figure_without_its_source(tmp_path):
    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "cv.json").write_text('{"blend": {"log_loss": 0.76771}}')
    doc = tmp_path / "doc.md"
    doc.write_text("# Sourced\nThe blend scores 0.7677 (`results/run/`).\n"
                   "# Not sourced\nThe blend scores 0.7677 and 0.8032.\n"
                   "# Wrong file\nSee [it](results/run/cv.md): 0.7677.\n"
                   "# Wrong digits\nIt scores 0.7678 (`results/run/cv.json`); arXiv 2411.09947.\n")
    assert unsourced_figures(doc, tmp_path) == [
        "doc.md:4: 0.7677 (sources: none linked)", "doc.md:4: 0.8032 (sources: none linked)",
        "doc.md: missing source results/run/cv.md", "doc.md:6: 0.7677 (sources: results/run/cv.md)",
        "doc.md:8: 0.7678 (sources: results/run/cv.json)"]


MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|tmp|root|Users|mnt|kaggle/working)/")


def test_no_committed_result_names_a_path_of_the_machine_it_ran_on():
    """Results are read on other machines: a path like /work/main/... says nothing there (and
    reports are kept with ``scripts/keep_report.py``, which writes paths relative to the repository)."""
    named = [f"{p.relative_to(REPO)}: {m.group()}" for p in sorted((REPO / "results").rglob("*"))
             if p.is_file() and p.suffix in TEXT_SUFFIXES for m in [MACHINE_PATH.search(p.read_text(errors="ignore"))]
             if m]
    assert named == []
