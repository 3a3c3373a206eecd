"""The random-kill campaign: a seeded series of SIGKILLs at random moments of every stage of the
lexical pipeline, each followed by every reader and, finally, a rerun to completion. (Its own file:
the test runners deal files to workers, and this one takes a worker for about 90 s.)"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import KAGGLE_TEST, PANDALM, ROOT, SAMPLE_SUB, run_kit
from kit.store.manifest import MANIFEST, sha256_of


@pytest.mark.slow
def test_random_kills_lose_nothing(tmp_path):
    """A seeded campaign: every stage of the lexical pipeline is SIGKILLed at random moments, then every
    reader is run (each output is whole and consistent, or refused as missing/stale — never read
    half-written) and the stage is rerun to completion. (Its run time is not asserted: speed is a
    benchmark's business, not a correctness test's.)"""
    import random
    import signal
    rng = random.Random(20261126)
    tok, models = tmp_path / "tok", tmp_path / "models" / "lexical"
    stages = [["tokenize", "--model", "lexical", "--train", PANDALM, "--test", KAGGLE_TEST, "--folds", "2",
               "--max-rows", "200", "--out", tok, "--overwrite"]]
    stages += [["train", "--model", "lexical", "--fold", str(k), "--tokenized", tok, "--out", models / f"fold{k}",
                "--overwrite"] for k in range(2)]
    stages += [["infer", "--trained", models / f"fold{k}", "--split", split, "--overwrite"]
               for k in range(2) for split in ("oof", "test")]
    stages += [["blend", "--members", f"lexical={models / 'fold0'},{models / 'fold1'}", "--weights", "fit",
                "--out", tmp_path / "submission.csv", "--report-dir", tmp_path / "report", "--sample-submission",
                SAMPLE_SUB, "--overwrite"]]
    kills = 0
    for args in stages:
        for _ in range(3):  # three random kills per stage, then a run to completion
            proc = subprocess.Popen([sys.executable, "-m", "kit", *map(str, args)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 4.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            _readers_see_whole_outputs(tok, models, tmp_path)
        done = run_kit(*args)
        assert done.returncode == 0, (args[0], done.stderr[-2000:])
        _readers_see_whole_outputs(tok, models, tmp_path)
    sub = pd.read_csv(tmp_path / "submission.csv", dtype={"id": str})
    assert sub["id"].tolist() == pd.read_csv(KAGGLE_TEST, dtype={"id": str})["id"].tolist()
    assert kills >= 5
    assert not list(tmp_path.rglob(".*.partial-*")) and not list(tmp_path.rglob(".*.old-*"))


def _readers_see_whole_outputs(tok: Path, models: Path, root: Path) -> None:
    from kit.core.errors import KitError
    from kit.store.cache import check_cache
    from kit.store.models import check_trained
    from kit.store.predictions import read_predictions
    for split in ("train", "test"):
        try:
            check_cache(tok, split)
        except KitError:
            pass  # refused as unfinished: allowed; read half-written: never
    for fold in models.glob("fold*"):
        try:
            check_trained(fold)
        except KitError:
            continue
        for split in ("oof", "test"):
            try:
                read_predictions(fold / "predictions" / f"{split}.csv", split, fold)
            except KitError:
                pass
    if (root / "report" / MANIFEST).exists():  # the manifest is written last: once there, the report is whole
        report = root / "report"
        manifest = json.loads((report / MANIFEST).read_text())
        assert manifest["complete"] is True
        for name, digest in manifest["outputs"].items():
            if name != "submission.csv":
                assert sha256_of(report / name) == digest, name
