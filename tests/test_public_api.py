"""The public face of the kit: a light ``import kit``, ``kit.__all__`` with documented functions,
settings declared once (CLI, notebooks, Python), the README's own example run as written."""
import ast
import dataclasses
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def test_import_kit_imports_nothing_beyond_the_standard_library():
    code = ("import sys, kit\n"
            "extra = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'kit', '__main__'}"
            " - {m for m in sys.modules if m.startswith(('_distutils', '__editable__'))})\n"
            "print(extra)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import kit pulled in: {out}"


def test_the_command_line_loads_no_training_library_until_a_stage_needs_one():
    """Every ``kit`` process (each CLI call, each notebook kernel) imports the command line; peft, bitsandbytes and
    transformers' Trainer cost seconds of CPU there, so only the code that trains or loads a LoRA model imports
    them (a module-level ``from transformers import TrainerCallback`` once put them in every process)."""
    code = ("import sys, kit.cli, kit.stages.tokenize, kit.stages.blend, kit.workflows.submit\n"
            "print(sorted(m for m in ('peft', 'bitsandbytes', 'transformers.trainer', 'transformers.trainer_utils',"
            " 'transformers.modeling_utils') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the command line pulled in: {out}"


def test_every_public_name_resolves_and_the_stage_functions_document_themselves():
    import kit
    assert len(kit.__all__) > 30
    for name in kit.__all__:
        assert getattr(kit, name) is not None, name
    for name in ("tokenize_stage", "train_stage", "infer_stage", "blend_stage", "cv_stage", "submit", "pseudo_label",
                 "run_main"):
        doc = getattr(kit, name).__doc__ or ""
        assert all(part in doc for part in ("Args:", "Returns:", "Example:")), name
    with pytest.raises(AttributeError):
        kit.no_such_thing


def test_the_kit_speaks_through_its_logger_not_print():
    """print() only in the CLI (its tables); every message of the library goes through ``kit``'s logger."""
    found = []
    for path in (ROOT / "kit").rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_a_misspelt_setting_is_named_in_python_notebooks_and_the_cli(tmp_path):
    from kit.core.errors import SettingsError
    from kit.core.settings import TokenizeSettings, TrainSettings
    from kit.params import from_parameters
    from kit.stages.tokenize import tokenize_stage

    with pytest.raises(SettingsError, match="unknown parameter 'max_lenght'.*did you mean 'max_length'"):
        tokenize_stage("lexical", max_lenght=12)
    with pytest.raises(SettingsError, match="unknown parameter 'EPOHCS'.*did you mean 'EPOCHS'"):
        from_parameters(TrainSettings, {"EPOHCS": 2, "KIT_DIR": "x"}, extra=("KIT_DIR",))
    assert from_parameters(TokenizeSettings, {"MAX_LENGTH": 64, "N_FOLDS": 3}).max_length == 64
    proc = subprocess.run([sys.executable, "-m", "kit", "tokenize", "--model", "lexical", "--max-lenght", "3"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "--max-lenght" in proc.stderr and "Traceback" not in proc.stderr


def test_the_cli_is_generated_from_the_settings():
    """Every field of a stage's settings is a flag of its sub-command, with that field's help."""
    import argparse

    from kit.cli import STAGES, build_parser
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for stage, (_, groups) in STAGES.items():
        flags = {o for a in subs[stage]._actions for o in a.option_strings}
        for cls in groups:
            for f in dataclasses.fields(cls):
                assert f"--{f.name.replace('_', '-')}" in flags, (stage, f.name)
    args = parser.parse_args(["cv", "--train", "a.csv,b.csv", "--models", "minilm", "lexical", "--out", "x",
                              "--max-train-rows", "smollm2=300,minilm=800", "--weights", "0.6,0.4"])
    from kit.cli import _settings
    from kit.workflows.settings import CvSettings
    cv = _settings(args, CvSettings)
    assert cv.train == ["a.csv", "b.csv"] and cv.models == ["minilm", "lexical"]
    assert cv.max_train_rows == {"smollm2": 300, "minilm": 800} and cv.weights == [0.6, 0.4]
    train = parser.parse_args(["train", "--model", "minilm", "--fold", "full", "--head", "joint", "--no-swap-augment",
                               "--layers", "1,2", "--lr", "1e-3", "--4bit", "false"])
    assert train.fold is None and train.member == "joint" and train.swap_augment is False
    assert train.learning_rate == 1e-3 and train.load_in_4bit is False


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Use kit in your own notebook"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    (tmp_path / "data").symlink_to(ROOT / "data")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "blend" in proc.stdout and "['joint', 'lexical', 'pairwise', 'zeroshot']" in proc.stdout
    assert "'p_a': " in proc.stdout and "'p_tie': " in proc.stdout  # the ensemble as a judge of one pair
    assert (tmp_path / "work" / "submission.csv").is_file() and (tmp_path / "work" / "report" / "report.md").is_file()
