"""Trust nothing that was edited, attached or interrupted: the audit's cases, one test each.

Code never runs from data; every file a stage reads is checked against the manifest that vouches
for it; one writer per output; every failure is one line naming what to do.
"""
import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import KAGGLE_TEST, PANDALM, SAMPLE_SUB, cli_error_line, lexical_folds, run_kit
from kit.cli import main
from kit.store.manifest import MANIFEST, file_records, sha256_of


_kit = cli_error_line


@pytest.fixture
def lexical_models(tmp_path):
    return lexical_folds(tmp_path, max_rows=120)


def _revouch(model_dir: Path) -> None:
    """What a hostile author would do: recompute every fingerprint in the manifest after editing."""
    manifest = json.loads((model_dir / MANIFEST).read_text())
    for name in manifest["outputs"]:
        manifest["outputs"][name] = sha256_of(model_dir / name)
        manifest["files"][name] = file_records(model_dir / name)
    (model_dir / MANIFEST).write_text(json.dumps(manifest))


class _Payload:
    """Unpickling this writes a marker file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("name", ["lexical.joblib", "adapter_model.bin", "model.pkl"])
def test_a_pickle_in_a_model_folder_never_runs(lexical_models, tmp_path, capsys, name):
    marker = tmp_path / "payload-ran"
    model = lexical_models[0]
    (model / "adapter" / name).write_bytes(pickle.dumps(_Payload(marker)))
    _revouch(model)
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert f"refusing to load a {Path(name).suffix} file" in line and name in line
    line = _kit(capsys, "submit", "--model-roots", model.parent, "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                "--out", tmp_path / "s.csv", "--weights", "equal")
    assert "refusing to load" in line
    assert not marker.exists()


def test_the_lexical_member_is_saved_as_data(lexical_models):
    adapter = lexical_models[0] / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["lexical.json", "lexical.npz"]
    np.load(adapter / "lexical.npz", allow_pickle=False)  # no object arrays inside


def test_an_edited_oof_csv_is_not_reused(lexical_models, capsys):
    model = lexical_models[0]
    oof = pd.read_csv(model / "oof.csv", dtype={"id": str})
    oof.loc[:, ["p_a", "p_b", "p_tie"]] = oof[["p_a", "p_b", "p_tie"]].to_numpy()[:, [2, 0, 1]]  # still valid rows
    oof.to_csv(model / "oof.csv", index=False)
    line = _kit(capsys, "infer", "--trained", model, "--split", "oof", "--overwrite")
    assert "oof.csv changed after its stage wrote it" in line and "--no-reuse-train-scores" in line


def test_files_swapped_between_folds_are_refused(lexical_models, capsys):
    fold0, fold1 = lexical_models
    for name in ("adapter", MANIFEST):  # the adapter travels with the manifest that vouches for it
        (fold0 / name).rename(fold0.parent / f"tmp-{name}")
        (fold1 / name).rename(fold0 / name)
        (fold0.parent / f"tmp-{name}").rename(fold1 / name)
    line = _kit(capsys, "infer", "--trained", fold0, "--split", "oof", "--overwrite")
    assert "come from different training runs" in line and "run id" in line and "fold 1" in line


@pytest.mark.parametrize("edit", ["reworded", "rows removed"])
def test_a_source_table_edited_after_tokenize_is_refused_by_the_blend(tmp_path, capsys, edit):
    source = tmp_path / "train.csv"
    pd.read_csv(PANDALM).head(120).to_csv(source, index=False)
    dirs = lexical_folds(tmp_path / "run", train=(source,))
    frame = pd.read_csv(source)
    if edit == "reworded":
        frame.loc[3, "response_a"] = json.dumps(["another answer"])
    else:
        frame = frame.iloc[10:]
    frame.to_csv(source, index=False)
    line = _kit(capsys, "blend", "--members", f"lexical={','.join(map(str, dirs))}", "--weights", "fit",
                "--out", tmp_path / "s.csv", "--report-dir", tmp_path / "r", "--sample-submission", "none")
    assert f"{source} changed after" in line and "re-tokenize" in line


def test_float_ids_that_hold_whole_numbers_come_back_as_integers(tmp_path):
    from kit.stages.tokenize import tokenize_stage
    test = pd.read_csv(KAGGLE_TEST)
    test["id"] = test["id"].astype("float64")
    test.to_parquet(tmp_path / "test.parquet")
    result = tokenize_stage("lexical", [], tmp_path / "test.parquet", out=tmp_path / "tok")
    assert result.test["id"].tolist() == pd.read_csv(KAGGLE_TEST, dtype={"id": str})["id"].tolist()
    test["id"] = test["id"] + 0.5
    test.to_parquet(tmp_path / "frac.parquet")
    proc = run_kit("tokenize", "--model", "lexical", "--no-train", "--test", tmp_path / "frac.parquet",
                   "--out", tmp_path / "tok2")
    assert proc.returncode == 2 and "is a fraction" in proc.stderr and "Traceback" not in proc.stderr


def test_broken_records_are_one_line_naming_the_file(lexical_models, tmp_path, capsys):
    fold0 = lexical_models[0]
    config = json.loads((fold0 / "config.json").read_text())
    (fold0 / "config.json").write_text(json.dumps({**config, "preset": "lexical"}))
    _revouch(fold0)  # past the fingerprints: the record itself is checked
    line = _kit(capsys, "submit", "--model-roots", fold0.parent, "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                "--out", tmp_path / "s.csv", "--weights", "equal")
    assert "config.json does not describe a trained model" in line
    (fold0 / "config.json").write_text("{not json")
    _revouch(fold0)
    line = _kit(capsys, "infer", "--trained", fold0, "--split", "test", "--overwrite")
    assert f"{fold0 / 'config.json'} is not readable JSON" in line
    (fold0 / "config.json").write_text(json.dumps(config))
    _revouch(fold0)
    blend = tmp_path / "blend.json"
    for content, expected in ((json.dumps({"members": ["lexical"], "weights": [1.0]}), "field 'weights_mode'"),
                              ("[1, 2", "not a readable blend.json")):
        blend.write_text(content)
        line = _kit(capsys, "submit", "--model-roots", fold0.parent, "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                    "--out", tmp_path / "s.csv", "--blend-json", blend)
        assert str(blend) in line and expected in line


def test_a_trained_folder_or_a_cache_of_another_member_type_is_named(lexical_models, tmp_path, capsys):
    line = _kit(capsys, "tokenize", "--model", lexical_models[0], "--train", PANDALM, "--out", tmp_path / "t")
    assert "is a trained model" in line and "--trained" in line
    from kit.stages.tokenize import tokenize_stage
    tokenize_stage("minilm", [PANDALM], "", max_rows=40, n_folds=2, max_length=64, out=tmp_path / "minilm")
    capsys.readouterr()  # the packing's progress bar
    line = _kit(capsys, "infer", "--trained", lexical_models[0], "--split", "oof", "--tokenized",
                tmp_path / "minilm", "--out", tmp_path / "p.csv")
    assert "tokenized for the 'pairwise' member type" in line and "trained as 'lexical'" in line


def test_isolated_inference_of_a_missing_model_is_one_line_in_the_parent(tmp_path):
    proc = run_kit("infer", "--trained", tmp_path / "nope", "--isolate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: kit infer for")


def test_flags_and_folders_are_checked_before_the_work(tmp_path, capsys):
    proc = run_kit("train", "--model", "lexical", "--fold", "abc")
    assert proc.returncode == 2 and "--fold" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "file").write_text("x")
    started = time.time()
    line = _kit(capsys, "main", "--quick", "--publish-dir", tmp_path / "file", "--run-dir", tmp_path / "run")
    assert "is a file" in line and time.time() - started < 30 and not (tmp_path / "run").exists()


def test_pseudo_label_errors_name_the_input_not_its_working_copy(lexical_models, tmp_path, capsys):
    table = tmp_path / "pool.csv"
    pd.read_csv(KAGGLE_TEST).assign(id="").to_csv(table, index=False)  # empty ids
    line = _kit(capsys, "pseudo-label", "--input", table, "--model-roots", lexical_models[0].parent,
                "--out", tmp_path / "out.csv", "--work", tmp_path / "w")
    assert str(table) in line and "pool.csv" not in line.replace(str(table), "")


def test_a_sample_submission_for_another_test_table_is_named(tmp_path):
    from kit.core.errors import SubmissionError
    from kit.ensemble.submission import make_submission, validate_submission
    ids = pd.read_csv(SAMPLE_SUB, dtype={"id": str})["id"].tolist()
    other = tmp_path / "other.csv"
    pd.DataFrame({"id": ["9", "8", "7"], "winner_model_a": 1 / 3, "winner_model_b": 1 / 3,
                  "winner_tie": 1 / 3}).to_csv(other, index=False)
    sub = make_submission(ids, np.full((3, 3), 1 / 3))
    with pytest.raises(SubmissionError, match="describes another test table"):
        validate_submission(sub, ids, other)
    # the same ids in another order: caught (a mutation that switches the order check off survives no more)
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(SAMPLE_SUB, dtype={"id": str}).iloc[[2, 0, 1]].to_csv(shuffled, index=False)
    with pytest.raises(SubmissionError, match="id order differs"):
        validate_submission(sub, ids, shuffled)


def test_a_submission_row_summing_to_less_than_one_is_refused():
    from kit.core.errors import SubmissionError
    from kit.ensemble.submission import validate_submission
    sub = pd.DataFrame({"id": ["1", "2"], "winner_model_a": [0.3, 0.2], "winner_model_b": [0.3, 0.3],
                        "winner_tie": [0.4, 0.3]})  # row 2 sums to 0.8
    with pytest.raises(SubmissionError, match="do not sum to 1.*2"):
        validate_submission(sub, ["1", "2"])


def test_guardrail_counts_come_from_the_other_folds_only():
    """Identical responses in two folds with opposite outcomes: each fold's rows are pulled toward
    the *other* fold's outcomes — the cross-fitted figure computed by hand."""
    from kit.ensemble.guardrails import STRENGTH, fit_guardrails
    texts = pd.DataFrame({"prompt": [["p"]] * 6, "response_a": [["same"]] * 6, "response_b": [["same"]] * 6})
    labels = np.array([2, 2, 2, 0, 0, 0])
    folds = np.array([0, 0, 0, 1, 1, 1])
    blend = np.full((6, 3), 1 / 3)
    rails, _ = fit_guardrails(texts, labels, folds, blend)
    # fold 0 (ties) sees fold 1's counts [3, 0, 0]; fold 1 (A wins) sees fold 0's [0, 0, 3]
    p_tie_fold0 = (0 + STRENGTH / 3) / (3 + STRENGTH)
    p_a_fold1 = (0 + STRENGTH / 3) / (3 + STRENGTH)
    expected = -np.mean(np.log([p_tie_fold0] * 3 + [p_a_fold1] * 3))
    assert rails.report["identical"]["log_loss_after"] == pytest.approx(expected, abs=1e-12)


def test_two_writers_of_one_output_never_clobber_each_other(tmp_path):
    from kit.core.errors import KitError
    from kit.store.io import output_lock
    target = tmp_path / "tok"
    holding, release = threading.Event(), threading.Event()

    def hold():
        with output_lock(target):
            holding.set()
            release.wait(30)
    worker = threading.Thread(target=hold)
    worker.start()
    holding.wait(30)
    proc = run_kit("tokenize", "--model", "lexical", "--train", PANDALM, "--no-test", "--max-rows", "40", "--folds",
                   "2", "--out", target)
    release.set()
    worker.join()
    assert proc.returncode == 2 and f"another run is writing {target}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(KitError, match="another run is writing"):
        with output_lock(target):
            with output_lock(target):
                pass
    proc = run_kit("tokenize", "--model", "lexical", "--train", PANDALM, "--no-test", "--max-rows", "40", "--folds",
                   "2", "--out", target)  # a released lock, like a killed holder's, stops no one
    assert proc.returncode == 0, proc.stderr[-2000:]


def _planted_checkpoint_payloads_never_run(checkpoint: Path, command: list, tmp_path: Path) -> None:
    """The Trainer's checkpoint files are pickles a resume unpickles: the kit fingerprints each
    checkpoint when it is saved and resumes it only as saved — a planted or replaced file is one line
    naming it, before anything in the checkpoint is loaded. Left as it was saved."""
    marker = tmp_path / "payload-ran"
    rng_state = next(checkpoint.glob("rng_state*.pth"))
    saved = rng_state.read_bytes()
    for planted, state in ((checkpoint / "extra.pt", "was added"), (rng_state, "changed")):
        planted.write_bytes(pickle.dumps(_Payload(marker)))
        proc = run_kit(*command)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"{planted} {state} since the kit saved this checkpoint" in proc.stderr
        assert "--no-resume" in proc.stderr and not marker.exists()
        (checkpoint / "extra.pt").unlink(missing_ok=True)
    # a hostile author also rewrites the kit's record: torch's safe loader refuses the payload, named in one line
    # with no advice to lower that safety setting; a trainer_state.json too deep for the Trainer's reader, likewise
    record = checkpoint / "kit_files.json"
    kept = record.read_text()
    rng_state.write_bytes(pickle.dumps(_Payload(marker)))
    _refingerprint(checkpoint)
    proc = run_kit(*command)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert f"a file in the checkpoint {checkpoint} holds objects the kit will not unpickle" in line
    assert "weights_only=False" not in proc.stderr and not marker.exists()
    rng_state.write_bytes(saved)
    state = checkpoint / "trainer_state.json"
    state_text = state.read_text()
    state.write_text("[" * 200_000 + "]" * 200_000)
    _refingerprint(checkpoint)
    proc = run_kit(*command)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{state} is not readable JSON (nested too deeply" in proc.stderr
    state.write_text(state_text)
    record.write_text(kept)


def _refingerprint(checkpoint: Path) -> None:
    from kit.ops.hf_training import fingerprint_checkpoint
    fingerprint_checkpoint(checkpoint)


def test_a_killed_retrain_over_a_finished_model_resumes(tmp_path):
    """``train --overwrite`` over a finished model, killed midway: the old model stays whole, payloads
    planted in its checkpoint are refused by name, and the same command resumes from the new run's
    checkpoints (as saved) instead of starting again."""
    from conftest import kill_when_checkpointed
    from kit.stages.tokenize import tokenize_stage
    tok = tmp_path / "tok"
    tokenize_stage("minilm", [PANDALM], "", max_rows=80, n_folds=2, max_length=48, out=tok)
    out = tmp_path / "model"
    args = ["train", "--model", "minilm", "--fold", "0", "--tokenized", tok, "--max-steps", "8", "--eval-steps", "2",
            "--batch-size", "4", "--max-train-rows", "24", "--max-eval-rows", "8"]
    assert run_kit(*args, "--out", out).returncode == 0
    old = json.loads((out / "config.json").read_text())["run_id"]
    retrain = [*args, "--seed", "9", "--overwrite"]
    kill_when_checkpointed(retrain, out, "checkpoint-4", expect_no_metrics=False)
    assert json.loads((out / "config.json").read_text())["run_id"] == old  # the old model, whole
    _planted_checkpoint_payloads_never_run(out / "checkpoints" / "checkpoint-4", [*retrain, "--out", out], tmp_path)
    resumed = run_kit(*retrain, "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the last checkpoint" in resumed.stdout and "(checkpoint-4)" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["global_steps"] == 8
    assert json.loads((out / "config.json").read_text())["run_id"] != old


@pytest.mark.parametrize("error", [
    "safetensors", "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left\" })",
    "[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 248",
])
def test_a_full_disk_below_the_kit_is_one_line_with_its_likely_cause(monkeypatch, capsys, error):
    """What a full disk looks like when the weights' own writers hit it (safetensors while a
    checkpoint is saved; torch's zip writer): one line saying what to do, no traceback."""
    import kit.cli
    from safetensors import SafetensorError

    def failing(*args, **kwargs):
        raise SafetensorError(error) if "serializ" in error or error == "safetensors" else RuntimeError(error)
    monkeypatch.setattr(kit.cli, "train_stage", failing)
    line = _kit(capsys, "train", "--model", "minilm", "--fold", "0")
    assert "is the disk full" in line and "rerun the same command" in line


def _attached_copy(models: list[Path], root: Path) -> Path:
    """The model folders as a Kaggle dataset attached read-only: ``root/lexical/fold<K>``."""
    import shutil
    from kaggle_sim import read_only
    for m in models:
        shutil.copytree(m, root / "lexical" / m.name)
    read_only(root)
    return root


def _writable_again(root: Path) -> None:
    import stat
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_an_edited_config_in_an_attached_model_stops_submit_in_preflight(lexical_models, tmp_path, capsys):
    """The accident the fingerprints exist for: config.json edited after training (max_length 64 -> 40,
    nothing recomputed). Every file the manifest fingerprints is compared when the folder is read."""
    config = json.loads((lexical_models[0] / "config.json").read_text())
    config["preset"]["max_length"] = 40
    (lexical_models[0] / "config.json").write_text(json.dumps(config, indent=2))
    attached = _attached_copy(lexical_models, tmp_path / "input")
    try:
        line = _kit(capsys, "submit", "--model-roots", attached, "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                    "--out", tmp_path / "s.csv", "--weights", "equal")
    finally:
        _writable_again(attached)
    assert f"{attached / 'lexical' / 'fold0' / 'config.json'} changed after its stage wrote it" in line
    assert "this attached dataset is damaged: re-create it in the session that trained it" in line
    assert "--overwrite" not in line and not (tmp_path / "s.csv").exists()
    # the same folder where it can be rewritten: the advice is the rerun
    line = _kit(capsys, "infer", "--trained", lexical_models[0], "--split", "test", "--overwrite")
    assert "config.json changed after its stage wrote it" in line and "rerun the train stage into it" in line


def test_a_missing_file_is_named_missing_not_changed(lexical_models, capsys):
    (lexical_models[0] / "adapter" / "lexical.npz").unlink()
    line = _kit(capsys, "infer", "--trained", lexical_models[0], "--split", "test", "--overwrite")
    assert f"{lexical_models[0] / 'adapter' / 'lexical.npz'} is missing although its stage wrote it" in line


def test_an_incomplete_manifest_is_never_read(lexical_models, capsys):
    manifest = json.loads((lexical_models[0] / MANIFEST).read_text())
    (lexical_models[0] / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    line = _kit(capsys, "infer", "--trained", lexical_models[0], "--split", "test", "--overwrite")
    assert "does not say complete" in line


def test_an_object_array_in_the_lexical_npz_never_runs(lexical_models, tmp_path, capsys):
    """The lexical member's arrays are loaded without pickle support: an object array (a pickle inside
    the .npz) is refused, and its payload never runs."""
    marker = tmp_path / "payload-ran"
    model = lexical_models[0]
    arrays = dict(np.load(model / "adapter" / "lexical.npz", allow_pickle=False))
    planted = np.empty(1, dtype=object)
    planted[0] = _Payload(marker)
    np.savez(model / "adapter" / "lexical.npz", **arrays, planted=planted)
    _revouch(model)
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert "the lexical model is unreadable" in line and not marker.exists()


def _deep(depth: int = 200_000) -> str:
    return "[" * depth + "]" * depth


def test_a_deeply_nested_json_anywhere_is_one_line_naming_it(lexical_models, tmp_path, capsys):
    model = lexical_models[0]
    config = (model / "config.json").read_bytes()
    (model / "config.json").write_text(_deep())
    _revouch(model)
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert f"{model / 'config.json'} is not readable JSON (nested too deeply" in line
    (model / "config.json").write_bytes(config)
    (model / MANIFEST).write_text(_deep())
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert f"{model / MANIFEST} is not readable JSON (nested too deeply" in line
    # discovery names the folder and leaves it out; the other fold is submitted
    assert main(["submit", "--model-roots", str(model.parent), "--test", str(KAGGLE_TEST), "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "s.csv"), "--weights", "equal"]) == 0
    assert f"{model}: skipped: {model}: {model / MANIFEST} is not readable JSON (nested too deeply" in capsys.readouterr().out
    blend = tmp_path / "blend.json"
    blend.write_text(_deep())
    line = _kit(capsys, "submit", "--model-roots", lexical_models[1], "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                "--out", tmp_path / "s.csv", "--blend-json", blend)
    assert f"{blend} is not a readable blend.json (nested too deeply" in line
    (tmp_path / "big.json").write_bytes(b" " * (17 * 1024 * 1024))
    line = _kit(capsys, "submit", "--model-roots", lexical_models[1], "--test", KAGGLE_TEST, "--work", tmp_path / "w",
                "--out", tmp_path / "s.csv", "--blend-json", tmp_path / "big.json")
    assert "big.json" in line and "more than the" in line


def test_links_and_giant_files_in_a_model_folder_are_refused_before_hashing(lexical_models, tmp_path, capsys):
    """The rule: the kit writes no symbolic links into its outputs and reads none (a link could lead
    the pickle scan and the fingerprint outside the folder); a file whose size differs from the one
    recorded is refused without being read (a 1 GiB sparse file costs no hashing)."""
    model = lexical_models[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "payload.pkl").write_bytes(pickle.dumps(_Payload(tmp_path / "ran")))
    (model / "adapter" / "more").symlink_to(outside, target_is_directory=True)
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert f"{model / 'adapter' / 'more'} is a symbolic link" in line
    (model / "adapter" / "more").unlink()
    giant = tmp_path / "giant.csv"
    with open(giant, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that would take ~30 s to hash
    (model / "oof.csv").rename(tmp_path / "oof.csv")
    (model / "oof.csv").symlink_to(giant)
    line = _kit(capsys, "infer", "--trained", model, "--split", "oof", "--overwrite")
    assert f"{model / 'oof.csv'} is a symbolic link" in line
    (model / "oof.csv").unlink()
    import shutil
    shutil.copyfile(tmp_path / "oof.csv", model / "oof.csv")
    with open(model / "oof.csv", "r+b") as f:
        f.truncate(1 << 30)
    line = _kit(capsys, "infer", "--trained", model, "--split", "oof", "--overwrite")
    assert f"{model / 'oof.csv'} changed after its stage wrote it" in line and f"{1 << 30} now" in line
    assert not (tmp_path / "ran").exists()


def test_pickle_bytes_under_a_safetensors_name_are_named_not_blamed_on_the_disk(lexical_models, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    model = lexical_models[0]
    (model / "adapter" / "adapter_model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    _revouch(model)
    line = _kit(capsys, "infer", "--trained", model, "--split", "test", "--overwrite")
    assert f"{model / 'adapter' / 'adapter_model.safetensors'} is not a safetensors file" in line
    assert "disk full" not in line and not marker.exists()


def test_a_failed_write_names_the_file_and_the_likely_cause(tmp_path):
    import errno
    from kit.core.errors import KitError
    from kit.store.io import atomic_write

    def full(path):
        path.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KitError, match=f"writing {tmp_path / 'out.csv'} failed .*No space left.*is the disk full"):
        atomic_write(tmp_path / "out.csv", full)
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv.*"))


def test_a_table_over_its_size_cap_is_named_before_it_is_read(tmp_path, capsys):
    from kit.core.errors import DataError
    from kit.store.io import read_csv_keeping_ids
    table = tmp_path / "verdicts.csv"
    table.write_text("id,verdict\n" + "".join(f"{i},A\n" for i in range(100)))
    with pytest.raises(DataError, match=f"{table}: \\d+ bytes, more than the 100"):
        read_csv_keeping_ids(table, max_bytes=100)
    assert len(read_csv_keeping_ids(table)) == 100


def test_only_write_failures_are_reported_as_write_failures(tmp_path):
    """Out of GPU memory (a RuntimeError) inside a training run is not a full disk: it passes as it is."""
    from kit.core.errors import KitError
    from kit.store.io import writing
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with writing(tmp_path / "checkpoints"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(KitError, match=f"writing {tmp_path / 'checkpoints'} failed .*enforce fail"):
        with writing(tmp_path / "checkpoints"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 248")


def test_a_record_names_the_commit_its_call_started_from(tmp_path, monkeypatch):
    """A long kit call records the commit it started from, even when a commit lands while it runs
    (its code is the code of that start) — not the commit of its first record."""
    import subprocess
    from kit.core import provenance as prov

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-qm", "first")
    first = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(prov, "REPO_ROOT", tmp_path)
    prov.git_state.cache_clear()
    try:
        with prov.timed_call():
            (tmp_path / "a.txt").write_text("2")
            git("commit", "-qam", "second, made while the call runs")
            record = prov.provenance()
        assert record["commit"] == first and record["dirty"] is False
    finally:
        prov.git_state.cache_clear()
