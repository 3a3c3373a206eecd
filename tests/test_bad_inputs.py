"""Ordinary bad input stops with one clear line (exit 2) naming the file, row or flag and what to
do — never a traceback — and leaves nothing half-written for a later stage to read."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.cli import main
from kit.ops.devices import check_devices
from kit.stages.tokenize import tokenize_stage
from conftest import KAGGLE_TEST, PANDALM, lexical_folds


def _kit(capsys, *args) -> str:
    """Run the CLI in-process; return its one error line (asserting exit code 2)."""
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err
    return lines[-1]


def _table(tmp_path, name: str, frame: pd.DataFrame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _tokenize(*extra):
    return ["tokenize", "--model", "lexical", "--folds", "2", *extra]


def test_unreadable_tables_are_named(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = _table(tmp_path, "header.csv", pd.read_csv(PANDALM).head(0))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(PANDALM.read_bytes()[:2000].replace(b"a", "\u00e9".encode("latin-1"), 1) + b"\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    for bad, expected in ((empty, "the file is empty"), (header, "no rows, only a header"),
                          (latin, "not UTF-8 text"), (folder, "a folder, not a table")):
        line = _kit(capsys, *_tokenize("--train", bad, "--no-test", "--out", tmp_path / "tok"))
        assert str(bad) in line and expected in line, line
    # a header-only *test* table: no submission could ever be made from it
    test_header = _table(tmp_path, "test0.csv", pd.read_csv(KAGGLE_TEST).head(0))
    line = _kit(capsys, *_tokenize("--train", PANDALM, "--test", test_header, "--out", tmp_path / "tok"))
    assert str(test_header) in line and "no rows" in line
    assert not (tmp_path / "tok").exists()


def test_a_table_whose_every_row_is_unusable(tmp_path, capsys):
    rows = pd.read_csv(PANDALM).head(30)
    rows["winner_model_a"], rows["winner_tie"] = 1, 1  # two or three winners per row: none is one-hot
    bad = _table(tmp_path, "bad.csv", rows)
    line = _kit(capsys, *_tokenize("--train", bad, "--no-test", "--out", tmp_path / "tok"))
    assert str(bad) in line and "none of the 30 rows is usable" in line and "not one-hot" in line
    assert not (tmp_path / "tok" / "skipped_rows.csv").exists() and not (tmp_path / "tok").exists()


def test_bad_flags_are_named(tmp_path, capsys):
    line = _kit(capsys, *_tokenize("--train", PANDALM, "--no-test", "--max-rows", "0", "--out", tmp_path / "a"))
    assert "--max-rows / MAX_ROWS / max_rows 0: must be at least 1" in line
    line = _kit(capsys, "tokenize", "--model", "minilm", "--train", PANDALM, "--no-test", "--max-rows", "20",
                "--max-length", "4096", "--out", tmp_path / "b")
    assert "exceeds minilm's 512 positions" in line and "--max-length 512" in line
    assert not (tmp_path / "b").exists()
    # --folds 1: fold 0 holds every row, so a fold run has nothing to train on
    tokenize_stage("lexical", [PANDALM], "", n_folds=1, max_rows=40, out=tmp_path / "one")
    line = _kit(capsys, "train", "--model", "lexical", "--fold", "0", "--tokenized", tmp_path / "one",
                "--out", tmp_path / "m")
    assert "holds every row" in line and "--fold full" in line
    with pytest.raises(ValueError, match="'cuda:0' is not available .* --devices cpu"):
        check_devices(["cuda:0"] if not __import__("torch").cuda.is_available() else ["cuda:99"])
    with pytest.raises(ValueError, match="use cpu or cuda"):
        check_devices(["gpu0"])


@pytest.fixture
def lexical_models(tmp_path):
    return lexical_folds(tmp_path, max_rows=120)


@pytest.mark.parametrize("corrupt, expected", [
    (lambda f: f.assign(p_a=np.inf), "probabilities infinite"),
    (lambda f: f.assign(p_a=-f["p_a"]), "outside [0, 1]"),
    (lambda f: f.assign(p_a=f["p_a"] / 2), "not summing to 1"),
    (lambda f: f.assign(p_b="high"), "not a number"),
    (lambda f: f.assign(p_b=np.nan), "not a number"),
    (lambda f: f.drop(columns=["p_tie"]), "missing column(s) ['p_tie']"),
])
def test_invalid_member_predictions_are_refused_not_repaired(lexical_models, tmp_path, capsys, corrupt, expected):
    """As if the infer stage itself had written these values (its manifest fingerprints them)."""
    from kit.store.io import manifest_path
    from kit.store.manifest import file_records, file_sha256

    oof = lexical_models[1] / "predictions" / "oof.csv"
    corrupt(pd.read_csv(oof)).to_csv(oof, index=False)
    manifest = json.loads(manifest_path(oof).read_text())
    manifest["outputs"]["predictions"] = file_sha256(oof)
    manifest["files"]["predictions"] = file_records(oof)
    manifest_path(oof).write_text(json.dumps(manifest))
    line = _kit(capsys, "blend", "--members", f"lexical={','.join(map(str, lexical_models))}", "--weights", "fit",
                "--out", tmp_path / "submission.csv", "--report-dir", tmp_path / "report")
    assert str(oof) in line and expected in line and "run the infer stage" in line, line
    assert not (tmp_path / "submission.csv").exists()


def test_predictions_changed_after_their_infer_stage_are_stale(lexical_models, tmp_path, capsys):
    oof = lexical_models[0] / "predictions" / "oof.csv"
    oof.write_text(oof.read_text().replace("\n", "\r\n"))  # the same numbers, other bytes: not what infer wrote
    line = _kit(capsys, "blend", "--members", f"lexical={','.join(map(str, lexical_models))}", "--weights", "fit",
                "--out", tmp_path / "submission.csv", "--report-dir", tmp_path / "report")
    assert "stale" in line and "changed after its stage wrote it" in line and "kit infer" in line, line
    assert not (tmp_path / "submission.csv").exists()


def test_a_missing_sample_submission_is_an_error(lexical_models, tmp_path, capsys):
    line = _kit(capsys, "blend", "--members", f"lexical={','.join(map(str, lexical_models))}",
                "--sample-submission", tmp_path / "nowhere.csv", "--out", tmp_path / "submission.csv")
    assert "no sample submission at" in line and "nowhere.csv" in line
    assert not (tmp_path / "submission.csv").exists()


def test_a_test_only_cache_blends_without_baselines(lexical_models, tmp_path, capsys):
    """Kaggle's submission session: the models' cache holds the test table only."""
    tok = tmp_path / "tok"
    (tok / "train.parquet").unlink()
    assert main(["blend", "--members", f"lexical={','.join(map(str, lexical_models))}", "--weights", "equal",
                 "--out", str(tmp_path / "submission.csv"), "--report-dir", str(tmp_path / "report")]) == 0
    assert "no baselines" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "submission.csv")) == len(pd.read_csv(KAGGLE_TEST))


def test_retokenizing_without_a_test_table_leaves_no_stale_one(tmp_path):
    tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, out=tmp_path / "tok")
    assert (tmp_path / "tok" / "test.parquet").exists()
    tokenize_stage("lexical", [PANDALM], "", n_folds=2, max_rows=60, out=tmp_path / "tok", overwrite=True)
    assert not (tmp_path / "tok" / "test.parquet").exists()  # it described the earlier cache
    assert len(pd.read_parquet(tmp_path / "tok" / "train.parquet")) == 60


def test_a_tokenize_stage_failing_midway_leaves_the_previous_cache_whole(tmp_path, monkeypatch):
    """Disk full (simulated) after train.parquet is written: the earlier complete cache stays
    byte for byte, nothing half-written is left where a later stage would read it."""
    import kit.store.cache

    out = tmp_path / "tok"
    tokenize_stage("lexical", [PANDALM], KAGGLE_TEST, n_folds=2, max_rows=40, out=out)
    (out / "notes.txt").write_text("a user's file")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(kit.store.cache, "write_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tokenize_stage("lexical", [PANDALM], "", n_folds=2, max_rows=60, out=out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # no staging folder left behind (the writer's empty lock file stays: flock needs it to exclude every writer)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".tok.lock"] == ["tok"]
    monkeypatch.undo()
    tokenize_stage("lexical", [PANDALM], "", n_folds=2, max_rows=60, out=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "a user's file"  # not the stage's: carried over


def test_a_training_run_that_did_not_finish_is_never_blended_or_submitted(lexical_models, tmp_path, capsys):
    """A folder without its complete manifest (written last): made by an older kit, or damaged.
    (A kill inside the train stage leaves no such folder: tests/test_faults.py.)"""
    from kit.stages.blend import discover_members
    from kit.workflows.discovery import find_trained_models

    (lexical_models[1] / "manifest.json").unlink()
    assert discover_members(tmp_path / "models") == {"lexical": [lexical_models[0]]}
    assert find_trained_models([tmp_path / "models"]) == {"lexical": [lexical_models[0]]}
    assert "did not finish" in capsys.readouterr().out


def test_a_second_blend_never_silently_replaces_the_submission_or_report(lexical_models, tmp_path, capsys):
    args = ["blend", "--members", f"lexical={','.join(map(str, lexical_models))}", "--weights", "fit",
            "--out", tmp_path / "submission.csv", "--report-dir", tmp_path / "report"]
    assert main([str(a) for a in args]) == 0
    before = {p.name: p.read_bytes() for p in [tmp_path / "submission.csv", *(tmp_path / "report").iterdir()]}
    line = _kit(capsys, *args, "--weights", "equal")
    assert "already exists" in line and "report.md" in line and "--overwrite" in line, line
    after = {p.name: p.read_bytes() for p in [tmp_path / "submission.csv", *(tmp_path / "report").iterdir()]}
    assert after == before
    assert main([str(a) for a in [*args, "--weights", "equal", "--overwrite"]]) == 0
    assert json.loads((tmp_path / "report" / "blend.json").read_text())["weights_mode"] == "equal"
