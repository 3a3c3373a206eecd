"""Faults at every stage boundary: a stage SIGKILLed — or hitting a full disk — just before any
one of its renames (how every output, staging folder and checkpoint lands; tests/fault_driver.py)
leaves each stage output complete (old or new) or absent, never a mix; every later reader
either reads a complete, consistent output or stops with a clear error; and rerunning the stage
then the rest of the pipeline succeeds. Runs the real CLI on the lexical member (fast) through
the same publishing code as the neural members (kit.store.models.publish_training)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kit.core.errors import BlendError

from kit.stages.blend import blend_stage, load_member
from kit.cli import main
from kit.stages.infer import infer_stage
from kit.store.manifest import MANIFEST, check_output, read_manifest
from kit.core.errors import StaleOutput
from kit.store.cache import check_cache
from kit.stages.tokenize import tokenize_stage
from kit.store.models import check_trained
from kit.stages.train import train_stage
from conftest import KAGGLE_TEST, PANDALM, lexical_folds
from fault_driver import inject

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("fault_driver.py")


def _build(root: Path) -> list[Path]:
    """A complete lexical pipeline under root: cache, two fold models with predictions, blend."""
    dirs = lexical_folds(root, max_rows=60)
    blend_stage({"lexical": dirs}, weights="fit", out=root / "submission.csv", report_dir=root / "report",
                sample_submission=None)
    return dirs


def _commands(root: Path) -> dict:
    fold0, fold1 = (root / "models" / "lexical" / f"fold{k}" for k in (0, 1))
    return {
        "tokenize": ["tokenize", "--model", "lexical", "--train", PANDALM, "--test", KAGGLE_TEST, "--folds", "2",
                     "--max-rows", "80", "--out", root / "tok", "--overwrite"],
        "train": ["train", "--model", "lexical", "--fold", "0", "--tokenized", root / "tok", "--out", fold0,
                  "--seed", "7", "--overwrite"],
        "train-fresh": ["train", "--model", "lexical", "--fold", "0", "--tokenized", root / "tok", "--out", fold0],
        "infer": ["infer", "--trained", fold0, "--split", "test", "--overwrite"],
        "blend": ["blend", "--members", f"lexical={fold0},{fold1}", "--weights", "fit", "--out",
                  root / "submission.csv", "--report-dir", root / "report", "--sample-submission", "none",
                  "--overwrite"],
    }


def _kit(args, fault: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KIT_FAULT": fault, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(DRIVER), *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _prepare(root: Path, stage: str) -> None:
    """The built pipeline at ``root``: built once, then restored byte for byte from a copy (its
    files name ``root`` itself, so the copy goes back to the same place)."""
    snapshot = root.with_name(root.name + "-snapshot")
    if root.exists():
        shutil.rmtree(root)
    if snapshot.exists():
        shutil.copytree(snapshot, root)
    else:
        _build(root)
        if stage == "train-fresh":
            shutil.rmtree(root / "models" / "lexical" / "fold0")
        shutil.copytree(root, snapshot)


def _assert_consistent(root: Path) -> None:
    """What every later reader sees: complete outputs or clear errors, nothing in between."""
    visible = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    assert (root / "tok").is_dir(), visible  # tokenize: the old cache or the new one, whole
    for split in ("train", "test"):
        check_cache(root / "tok", split)
    assert not [p for p in (root / "tok").iterdir() if p.name.startswith(".")]
    for d in sorted((root / "models" / "lexical").iterdir()):
        if d.name.startswith("."):
            continue  # a staging folder: no reader lists it (kit.store.models.trained_outputs)
        if not (d / "config.json").exists():
            assert not [n for n in ("adapter", "metrics.json", MANIFEST) if (d / n).exists()], list(d.iterdir())
            continue  # no model (the fresh run was killed before publishing)
        check_trained(d)  # a whole model: adapter as its manifest says
        for split in ("oof", "test"):
            try:
                load_member("lexical", [d], need_oof=split == "oof", need_test=split == "test")
            except BlendError as e:  # refused, never read: stale or missing, with the rerun named
                assert "stale" in str(e) or "missing" in str(e), e
    report = root / "report"
    if report.exists():
        manifest = read_manifest(report / MANIFEST, "report", "rerun blend")
        for name in manifest["outputs"]:
            if name != "submission.csv":
                check_output(manifest, name, report / name, "report", "rerun blend")
        assert {p.name for p in report.iterdir()} == set(manifest["outputs"]) - {"submission.csv"} | {MANIFEST}


def _assert_recovers(root: Path, stage: str) -> None:
    """The stage reruns with the same arguments, then the later stages run on its output."""
    assert main([str(a) for a in _commands(root)[stage]]) == 0
    dirs = [root / "models" / "lexical" / f"fold{k}" for k in (0, 1)]
    if stage == "tokenize":  # a remade cache: the models trained on the old one are stale
        with pytest.raises(ValueError, match="splits its rows differently"):
            infer_stage(dirs[0], "oof", overwrite=True)
        for k, d in enumerate(dirs):
            train_stage("lexical", k, tokenized=root / "tok", out=d, overwrite=True)
    for d in dirs:
        for split in ("oof", "test"):
            infer_stage(d, split, overwrite=True)
    blend_stage({"lexical": dirs}, weights="fit", out=root / "submission.csv", report_dir=root / "report",
                sample_submission=None, overwrite=True)
    assert len(pd.read_csv(root / "submission.csv")) == len(pd.read_csv(KAGGLE_TEST))
    leftovers = [str(p.relative_to(root)) for p in root.rglob(".*") if ".partial-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers  # a rerun clears what the killed run left


def _renames(root: Path, stage: str) -> int:
    _prepare(root, stage)
    with inject("count") as counter:
        assert main([str(a) for a in _commands(root)[stage]]) == 0
    return counter.calls


@pytest.mark.parametrize("stage", ["tokenize", "train", "train-fresh", "infer", "blend"])
def test_sigkill_at_every_boundary_leaves_old_or_new_never_a_mix(tmp_path, stage):
    root = tmp_path / "run"
    renames = _renames(root, stage)
    assert renames >= 2
    for n in range(1, renames + 1):
        _prepare(root, stage)
        killed = _kit(_commands(root)[stage], f"kill:{n}")
        assert killed.returncode == -9, (n, killed.stderr[-2000:])
        _assert_consistent(root)
        _assert_recovers(root, stage)


@pytest.mark.parametrize("stage", ["tokenize", "train", "train-fresh", "infer", "blend"])
def test_a_full_disk_at_every_boundary_is_one_line_and_leaves_the_old_output(tmp_path, stage, capsys):
    """The one exception, by design: the blend writes its submission last, after its report is in
    place, so a failure at that very last rename leaves the new (complete) report beside the old
    submission — whose fingerprint the new report's manifest does not name."""
    root = tmp_path / "run"
    renames = _renames(root, stage)
    for n in range(1, renames + 1):
        _prepare(root, stage)
        before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        capsys.readouterr()
        with inject("enospc", n):
            rc = main([str(a) for a in _commands(root)[stage]])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "Traceback" not in err, (n, err[-2000:])
        assert err.splitlines()[-1].startswith("error: ") and "No space left" in err.splitlines()[-1], err
        after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        changed = sorted(str(p.relative_to(root)) for p in set(after) | set(before) if after.get(p) != before.get(p))
        if stage == "blend" and n == renames:
            assert changed and all(c.startswith("report/") for c in changed), changed
        else:
            assert not changed, (n, changed)  # nothing changed, nothing left behind
        _assert_consistent(root)


def test_a_reader_refuses_what_changed_after_its_stage(tmp_path):
    """Content fingerprints, not only settings: an edited cache or a swapped adapter is refused."""
    dirs = _build(tmp_path)
    parquet = tmp_path / "tok" / "train.parquet"
    frame = pd.read_parquet(parquet)
    frame.loc[0, "label"] = (frame.loc[0, "label"] + 1) % 3
    frame.to_parquet(parquet, index=False)
    with pytest.raises(StaleOutput, match="changed after its stage wrote it.*rerun the tokenize stage"):
        train_stage("lexical", 0, tokenized=tmp_path / "tok", out=tmp_path / "other")
    arrays = dirs[1] / "adapter" / "lexical.npz"
    arrays.write_bytes(arrays.read_bytes() + b"\0")
    with pytest.raises(StaleOutput, match="trained model .*changed after.*rerun the train stage"):
        infer_stage(dirs[1], "test", overwrite=True)


def test_out_of_fold_rows_of_a_remade_cache_are_refused_by_content(tmp_path):
    """Same settings, other rows: the fold fingerprint differs, so 'held-out' rows are not trusted."""
    dirs = _build(tmp_path)
    edited = tmp_path / "pandalm.csv"
    table = pd.read_csv(PANDALM)
    table.loc[:5, ["winner_model_a", "winner_model_b"]] = table.loc[:5, ["winner_model_b", "winner_model_a"]].values
    table.to_csv(edited, index=False)
    tokenize_stage("lexical", [edited], KAGGLE_TEST, n_folds=2, max_rows=60, out=tmp_path / "tok2")
    with pytest.raises(ValueError, match="splits its rows differently"):
        infer_stage(dirs[0], "oof", tokenized=tmp_path / "tok2", overwrite=True)


def test_members_scored_on_different_test_tables_are_not_blended(tmp_path):
    dirs = _build(tmp_path)
    other = tmp_path / "other_test.csv"
    table = pd.read_csv(KAGGLE_TEST)  # same ids in the same order, A and B exchanged
    table[["response_a", "response_b"]] = table[["response_b", "response_a"]].values
    table.to_csv(other, index=False)
    tokenize_stage("lexical", [], other, out=tmp_path / "tok_other")
    infer_stage(dirs[1], "test", tokenized=tmp_path / "tok_other", overwrite=True)
    with pytest.raises(BlendError, match="made from another test table"):
        blend_stage({"lexical": dirs[:1], "lexical2": dirs[1:]}, weights="equal", out=tmp_path / "s.csv",
                    report_dir=tmp_path / "r", sample_submission=None)


def test_a_kill_between_a_write_and_its_rename_leaves_the_previous_file(tmp_path):
    """atomic_write writes into a temporary file and renames it into place: killed after writing half
    the new content, the target still holds the previous content, whole."""
    target = tmp_path / "out.json"
    target.write_text('{"previous": true}\n')
    code = ("import os, signal; from pathlib import Path; from kit.store.io import write_json\n"
            "real = Path.write_text\n"
            "def killed(self, text, *a, **k):\n"
            "    real(self, text[: len(text) // 2]); os.kill(os.getpid(), signal.SIGKILL)\n"
            "Path.write_text = killed\n"
            f"write_json({{'new': list(range(100))}}, Path({str(target)!r}), overwrite=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert target.read_text() == '{"previous": true}\n'
