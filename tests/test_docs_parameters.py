"""Every ``NAME = value`` the README and docs/ give for a notebook is a parameter of that notebook (of one the
paragraph names, else of any), and its value has the type of the parameter's default — a user who copies
it into a parameters cell gets what the text says, not a misspelt name or a value the call refuses."""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ASSIGNMENT = re.compile(r"`([A-Z][A-Z0-9_]*) ?= ?([^`]+)`")
NOTEBOOK = re.compile(r"\b(0\d_[a-z0-9_]+)\b")


def parameters(notebook: Path) -> dict:
    """The parameters cell of a jupytext notebook: {NAME: default value}."""
    text = notebook.read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("\n# %%", 1)[0]
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


NOTEBOOKS = {p.stem: parameters(p) for p in sorted((REPO / "notebooks").glob("0*.py"))}


def _fits(value, default) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return True
    return isinstance(value, type(default))


FENCED = re.compile(r"```python\n(.*?)```", re.S)
CELL_LINE = re.compile(r"^([A-Z][A-Z0-9_]*) ?= ?(.+?)\s*(?:#.*)?$")


def _cells(text: str):
    """(notebooks, NAME, value text) of every ``NAME = value`` line of a fenced parameters cell (a Python block
    whose first line is ``# 0X_notebook``): what a user pastes into that notebook."""
    for block in FENCED.findall(text):
        first = block.splitlines()[0] if block.strip() else ""
        named = [n for n in NOTEBOOK.findall(first) if n in NOTEBOOKS] if first.startswith("#") else []
        if not named:
            continue
        for line in block.splitlines()[1:]:
            match = CELL_LINE.match(line.strip())
            if match:
                yield named, match.group(1), match.group(2)


def _given(doc: Path):
    """(paragraph's notebooks, NAME, value, text) of every literal assignment in ``doc`` (in the text and in
    fenced parameters cells); environment variables and placeholders (``LEXICAL_C = ...``) are not notebook
    values."""
    for named, name, text in _cells(doc.read_text()):
        try:
            yield named, name, ast.literal_eval(text), text
        except (ValueError, SyntaxError):
            yield named, name, SyntaxError, text  # a cell line that is not a literal cannot be pasted as it is
    for paragraph in re.split(r"\n\s*\n", FENCED.sub("", doc.read_text())):
        named = [n for n in NOTEBOOK.findall(paragraph) if n in NOTEBOOKS]
        for name, text in ASSIGNMENT.findall(paragraph):
            if name.startswith("KIT_"):
                continue
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                continue
            yield named, name, value, text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_notebook_value_the_docs_give_is_a_parameter_of_that_type(doc):
    wrong = []
    for named, name, value, text in _given(doc):
        if value is SyntaxError:
            wrong.append(f"{name} = {text}: not a literal value")
            continue
        where = {n: NOTEBOOKS[n] for n in (named or NOTEBOOKS)}
        having = {n: cell[name] for n, cell in where.items() if name in cell}
        if not having:
            wrong.append(f"{name} = {text}: no parameter of {sorted(where)}")
        elif not any(_fits(value, default) for default in having.values()):
            wrong.append(f"{name} = {text}: the parameter's default is {list(having.values())[0]!r}")
    assert not wrong, wrong


def test_the_check_reads_fenced_parameters_cells(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text('```python\n# 02_train  (a note)\nMODEL = "gemma2-9b"\nFOLDZ = 0   # misspelt\n```\n')
    found = list(_given(doc))
    assert [(n, k, v) for n, k, v, _ in found] == [(["02_train"], "MODEL", "gemma2-9b"), (["02_train"], "FOLDZ", 0)]


def test_the_check_sees_a_misspelt_name_and_a_wrong_type(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("In `07_one_session` set `MODELZ = [\"lexical\"]` and `N_FOLDS = \"5\"`.\n")
    found = list(_given(doc))
    assert [(n, v) for _, n, v, _ in found] == [("MODELZ", ["lexical"]), ("N_FOLDS", "5")]
    assert "MODELZ" not in NOTEBOOKS["07_one_session"]
    assert not _fits("5", NOTEBOOKS["07_one_session"]["N_FOLDS"])
