"""Every dotted ``kit.…`` name and every repository path the docs, the notebooks, the scripts and the kit's own
docstrings and comments give resolves: a module, class or function that moved leaves no stale pointer behind."""
import importlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w./-])kit(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w./-])((?:kit|scripts|tests|notebooks|results|docs|data|submissions)/[\w./-]*\w)(?![-<\w])")
# folders whose files the kit writes when it runs (a path there names an output, not a file in the repository)
OUTPUT_FOLDERS = ("submissions/",)


def texts() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("kit/**/*.py")),
            *sorted(ROOT.glob("scripts/*.py")), *sorted(ROOT.glob("notebooks/*.py"))]


def resolves(name: str) -> bool:
    """A dotted name is a module, or an attribute (chain) of the longest module prefix that imports."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


# an archived file: `COMMIT:path`, the last commit that holds it
ARCHIVED = re.compile(r"(?<![\w./-])([0-9a-f]{7,40}):((?:scripts|kit|tests|notebooks|docs)/[\w./-]*\w)")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def in_commit(commit: str, path: str) -> bool:
    """The commit holds the file; in a shallow clone without that commit, it cannot be checked and passes."""
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode and \
            _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        return True
    return _git("cat-file", "-e", f"{commit}:{path}").returncode == 0


def path_exists(path: str) -> bool:
    """A file or folder of the repository; a notebook may be named without its extension (its jupytext pair)."""
    if (ROOT / path).exists() or (path.startswith("notebooks/") and (ROOT / f"{path}.py").exists()):
        return True
    return path.startswith(OUTPUT_FOLDERS) and (ROOT / path).parent.is_dir()


def stale(text: str) -> list[str]:
    names = [m.group(0).rstrip(".") for m in DOTTED.finditer(text)]
    archived = [(m.group(1), m.group(2).rstrip(".")) for m in ARCHIVED.finditer(text)]
    paths = [m.group(1).rstrip(".") for m in PATH.finditer(ARCHIVED.sub("", text))]
    return ([n for n in names if not resolves(n)] + [p for p in paths if "*" not in p and not path_exists(p)]
            + [f"{c}:{p}" for c, p in archived if not in_commit(c, p)])


def test_every_dotted_name_and_path_resolves():
    found, bad = 0, []
    for f in texts():
        text = f.read_text()
        found += len(DOTTED.findall(text)) + len(PATH.findall(text))
        bad += [f"{f.relative_to(ROOT)}: {x}" for x in stale(text)]
    assert found > 300  # the scan reads what it should
    assert not bad, "stale references (the module or file moved or was renamed):\n" + "\n".join(sorted(set(bad)))


def test_the_check_catches_a_moved_name_and_a_missing_file():
    assert stale("see :func:`kit.blend.blend_members` and kit/presets.py") == ["kit.blend.blend_members",
                                                                             "kit/presets.py"]
    assert stale("see :func:`kit.ensemble.combine.blend_members`, kit/core/presets.py, notebooks/02_train and "
                 "submissions/submission-<time>.csv") == []
    assert stale("kit.ensemble.combine.no_such_function") == ["kit.ensemble.combine.no_such_function"]
    # an archived script resolves in the commit named, and only there
    head = _git("rev-parse", "HEAD").stdout.strip()[:7]
    assert stale(f"{head}:scripts/bench_step.py and scripts/bench_step.py") == []
    assert stale("scripts/sweep.py") == ["scripts/sweep.py"]
    assert stale(f"{head}:scripts/no_such_script.py") == [f"{head}:scripts/no_such_script.py"]


MEASURED = re.compile(r"(?<![\w.])\d+\.\d{3,}")  # a figure with three or more decimals: a measurement


def test_no_docstring_quotes_a_measured_figure():
    """Measured figures live in results/ and the docs that link them; a docstring that quotes one goes stale
    the day the measurement is rerun."""
    import ast
    quoted = []
    for f in sorted(ROOT.glob("kit/**/*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                quoted += [f"{f.relative_to(ROOT)}:{getattr(node, 'name', '')}: {m}" for m in MEASURED.findall(doc)]
    assert not quoted, "measured figures in docstrings (link the results file instead):\n" + "\n".join(quoted)
    assert MEASURED.findall("scored 1.0653 where 5e-4 and 0.5") == ["1.0653"]
