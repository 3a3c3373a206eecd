"""kit cv's training seed apart from its fold seed: runs that differ only in --train-seed are scored
on the same folds (the seed spread of a recipe), and a finished fold is never reused for another seed."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.core.errors import SettingsError
from kit.workflows.cv import cv_stage
from conftest import PANDALM


def _fold_column(out):
    return pd.read_parquet(out / "tokenized" / "lexical" / "train.parquet", columns=["id", "fold"])


def test_a_training_seed_keeps_the_folds_and_changes_the_training(tmp_path):
    common = dict(max_rows=120, max_length=None)
    base = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "s42", **common)
    other = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "t7", train_seed=7, **common)
    pd.testing.assert_frame_equal(_fold_column(tmp_path / "s42"), _fold_column(tmp_path / "t7"))  # same folds
    for k in range(2):
        cfg = json.loads((tmp_path / "t7" / "models" / "lexical" / f"fold{k}" / "config.json").read_text())
        assert cfg["train"]["seed"] == 7
    saved = json.loads((tmp_path / "t7" / "cv.json").read_text())
    assert saved["settings"]["seed"] == 42 and saved["settings"]["train_seed"] == 7
    assert "folds seeded 42, training seeded 7" in other["markdown"]
    # the lexical member's training is deterministic: the same folds give the same scores
    assert base["results"]["lexical"] == other["results"]["lexical"]
    # --seed alone moves the folds too
    cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "s7", seed=7, **common)
    assert not _fold_column(tmp_path / "s7")["fold"].equals(_fold_column(tmp_path / "s42")["fold"])
    # the seed-42 folds are not taken for seed 7's
    with pytest.raises(SettingsError, match="trained with other settings"):
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "s42", train_seed=7, **common)


def test_a_fold_trained_by_several_models_is_their_mean_and_uneven_bags_are_refused(tmp_path):
    """Seed bagging as load_member reads it: two models that hold out the same fold give each row
    the mean of their probabilities (held-out and test rows alike); a fold with fewer models than
    the others is a one-line error."""
    from kit.core.errors import BlendError
    from kit.stages.infer import infer_stage
    from kit.stages.train import train_stage
    from kit.store.predictions import load_member
    from conftest import lexical_folds
    plain = lexical_folds(tmp_path, max_rows=120)
    # a second model per fold, really different (another regularisation), on the same rows
    strong = []
    for k in range(2):
        run = train_stage("lexical", k, tokenized=tmp_path / "tok", out=tmp_path / "strong" / f"fold{k}",
                          lexical_c=10.0)
        infer_stage(run.out_dir, "oof")
        infer_stage(run.out_dir, "test")
        strong.append(run.out_dir)
    cols = ["p_a", "p_b", "p_tie"]
    a, b = (load_member("lexical", d) for d in (plain, strong))
    bag = load_member("lexical", plain + strong)
    by_id = lambda m: m.oof.set_index("id").sort_index()  # noqa: E731
    assert not np.allclose(by_id(a)[cols], by_id(b)[cols])
    np.testing.assert_allclose(by_id(bag)[cols], (by_id(a)[cols] + by_id(b)[cols]) / 2)
    assert by_id(bag)["fold"].equals(by_id(a)["fold"]) and len(bag.oof) == len(a.oof)
    np.testing.assert_allclose(bag.test[cols], (a.test[cols] + b.test[cols]) / 2)
    with pytest.raises(BlendError, match=r"its folds have \{0: 2, 1: 1\} models"):
        load_member("lexical", plain + strong[:1])


def test_cv_bags_a_member_over_seeds_and_reports_each_seed_alone(tmp_path):
    common = dict(max_rows=120, max_length=None)
    result = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", bag_seeds="lexical=42,7", **common)
    assert sorted(p.name for p in (tmp_path / "cv" / "models" / "lexical").iterdir() if p.is_dir()) == [
        "fold0", "fold0-seed7", "fold1", "fold1-seed7"]  # seed 42's folders are the unbagged run's
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["settings"]["bag_seeds"] == {"lexical": [42, 7]}
    # the report records its settings as given: they redo it (scripts/bag_spread.py reruns sub-bags this way)
    again = cv_stage(**saved["settings"]["given"])
    assert again["results"]["blend"] == saved["results"]["blend"] and again["settings"]["bag_seeds"] == {"lexical": [42, 7]}
    # --tie-offset on the same folds: fitted per part and recorded, and compared with the blend without it
    tied = cv_stage(**{**saved["settings"]["given"], "tie_offset": True})
    fitted = tied["settings"]["blend"]
    assert fitted["tie_offset"] != 0 and all("tie_offset" in part for part in fitted["per_fold"].values())
    without = tied["results"]["blend without tie offset"]
    assert without["log_loss"] == pytest.approx(saved["results"]["blend"]["log_loss"])
    assert any(c["b"] == "blend without tie offset" and c["a"] == "blend" for c in tied["comparisons"])
    assert "tie offset" in tied["markdown"] and tied["settings"]["given"]["tie_offset"] is True
    assert "lexical over seeds [42, 7]" in result["markdown"] and "Seed spread (lexical, 2 seeds)" in result["markdown"]
    # the lexical member is deterministic: each seed alone blends to the bagged blend's figures
    for seed in (42, 7):
        assert saved["results"][f"blend, lexical seed {seed} alone"]["log_loss"] == pytest.approx(
            saved["results"]["blend"]["log_loss"])
    # scripts/bag_spread.py: each one-seed sub-bag rerun with the run's last settings (--tie-offset; a
    # deterministic member: the same figures), the curve's files written, the run's own report put back
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "scripts" / "bag_spread.py"
    run = subprocess.run([sys.executable, str(script), "--cv", str(tmp_path / "cv"), "--model", "lexical", "--size", "1",
                          "--out", str(tmp_path / "spread")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    spread = json.loads((tmp_path / "spread" / "bag_spread.json").read_text())
    assert [r["seeds"] for r in spread["subsets"]] == [[42], [7]] and spread["sizes"] == [1]
    assert spread["range"]["1"]["blend_log_loss"] == pytest.approx([tied["results"]["blend"]["log_loss"]] * 2)
    assert (tmp_path / "spread" / "bag_spread.png").stat().st_size > 0
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["settings"]["bag_seeds"] == {"lexical": [42, 7]}
    refused = subprocess.run([sys.executable, str(script), "--cv", str(tmp_path / "cv"), "--model", "lexical",
                              "--size", "2", "--out", str(tmp_path / "spread2")], capture_output=True, text=True)
    assert refused.returncode != 0 and "every --size must be 1 to 1" in refused.stderr
    assert "Traceback" not in refused.stderr
    with pytest.raises(SettingsError, match="not one of the --models"):
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv2", bag_seeds="minilm=1,2", **common)
    with pytest.raises(SettingsError, match="distinct seeds"):
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv2", bag_seeds="lexical=1,1", **common)


def test_a_row_bag_trains_each_seed_on_its_own_block_of_rows(tmp_path):
    """--bag-rows: the i-th seed of a bag trains on rows i*N..(i+1)*N of each fold's training rows
    (disjoint blocks, the first the plain run's rows), and the report says so."""
    from kit.core.errors import PresetError
    from kit.core.settings import TrainSettings
    from kit.stages.train import split_rows
    common = dict(max_rows=120, max_length=None, max_train_rows={"lexical": 25})
    result = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", bag_seeds="lexical=42,7", bag_rows=True,
                      **common)
    models = tmp_path / "cv" / "models" / "lexical"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == [
        "fold0", "fold0-seed7-skip25", "fold1", "fold1-seed7-skip25"]
    frame = pd.read_parquet(tmp_path / "cv" / "tokenized" / "lexical" / "train.parquet")
    for k in range(2):
        first = json.loads((models / f"fold{k}" / "config.json").read_text())["train"]
        second = json.loads((models / f"fold{k}-seed7-skip25" / "config.json").read_text())["train"]
        assert (first["skip_train_rows"], second["skip_train_rows"]) == (0, 25) and second["seed"] == 7
        blocks = [split_rows(frame, k, TrainSettings(max_train_rows=25, skip_train_rows=skip))[0]["id"]
                  for skip in (0, 25)]
        rest = frame.loc[frame["fold"] != k, "id"]
        assert list(blocks[0]) == list(rest.iloc[:25]) and list(blocks[1]) == list(rest.iloc[25:50])
        assert not set(blocks[0]) & set(blocks[1])
        for name in (f"fold{k}", f"fold{k}-seed7-skip25"):
            assert json.loads((models / name / "metrics.json").read_text())["train_rows"] == 25
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["settings"]["bag_rows"] is True
    assert "the i-th seed on the i-th block" in result["markdown"] and "each on its own block of rows" in result["markdown"]
    # the lexical member is deterministic, so the two seeds differ only by their rows: other scores
    alone = [saved["results"][f"blend, lexical seed {sd} alone"]["log_loss"] for sd in (42, 7)]
    assert alone[0] != pytest.approx(alone[1])
    # a plain seed bag in the same folder keeps its own folders (same rows), not the row bag's
    cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv", bag_seeds="lexical=42,7", **common)
    assert (models / "fold0-seed7").is_dir()
    with pytest.raises(SettingsError, match="pass --max-train-rows lexical=N"):
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv3", bag_seeds="lexical=42,7", bag_rows=True,
                 max_rows=120, max_length=None)
    with pytest.raises(SettingsError, match="pass --bag-seeds"):
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv3", bag_rows=True, **common)
    with pytest.raises(SettingsError, match="a fold has only"):  # before any training
        cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "cv4", bag_seeds="lexical=42,7,13", bag_rows=True,
                 max_rows=120, max_length=None, max_train_rows={"lexical": 40})
    assert not (tmp_path / "cv4" / "models").exists()
    with pytest.raises(PresetError, match="none is left"):
        split_rows(frame, 0, TrainSettings(max_train_rows=30, skip_train_rows=len(frame)))


def test_a_preset_twice_under_a_tag_is_two_members_each_scored_as_its_own_run(tmp_path):
    """--models lexical lexical@few: two members of one preset, each with its own settings
    (here --max-train-rows lexical@few=25), the preset's one token cache, their own model folders;
    each member scores exactly as a plain run with its settings, and both enter the blend."""
    from kit.core.errors import PresetError
    common = dict(max_rows=120, max_length=None)
    plain = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "plain", **common)
    few = cv_stage([PANDALM], ["lexical"], 2, out=tmp_path / "few", max_train_rows=25, **common)
    both = cv_stage([PANDALM], ["lexical@few", "lexical"], 2, out=tmp_path / "both",
                    max_train_rows="lexical@few=25", **common)
    assert both["settings"]["models"] == ["lexical", "lexical@few"]  # by preset, then by name
    assert [p.name for p in (tmp_path / "both" / "tokenized").iterdir() if p.is_dir()] == ["lexical"]  # one cache
    for k in range(2):
        cfg = json.loads((tmp_path / "both" / "models" / "lexical@few" / f"fold{k}" / "config.json").read_text())
        assert cfg["train"]["max_train_rows"] == 25 and cfg["preset"]["name"] == "lexical"
    assert both["results"]["lexical"] == plain["results"]["lexical"]
    assert both["results"]["lexical@few"] == few["results"]["lexical"]
    assert plain["results"]["lexical"] != few["results"]["lexical"]  # the two settings really differ
    assert set(both["settings"]["blend"]["weights"]) == {"lexical", "lexical@few"}
    assert "| lexical@few " in both["markdown"] and "blend" in both["results"]
    with pytest.raises(SettingsError, match="given twice.*lexical@all"):
        cv_stage([PANDALM], ["lexical", "lexical"], 2, out=tmp_path / "bad", **common)
    with pytest.raises(SettingsError, match=r"--max-train-rows lexical@mistyped=\.\.\.: not one of the --models"):
        cv_stage([PANDALM], ["lexical", "lexical@few"], 2, out=tmp_path / "bad", max_train_rows="lexical@mistyped=25",
                 **common)
    with pytest.raises(PresetError, match="unknown model preset 'nope'"):
        cv_stage([PANDALM], ["nope@x"], 2, out=tmp_path / "bad", **common)
    assert not (tmp_path / "bad").exists()


def test_a_tagged_member_stands_for_its_preset_and_sorts_beside_it(tmp_path):
    """preset_of: PRESET@TAG -> PRESET; a preset, a folder (even one with '@' in its name) and a name
    without a valid tag stand for themselves. member_order sorts a tagged member by its preset
    (stronger first), after the plain one."""
    from kit.core.presets import member_order, preset_of
    assert preset_of("gemma3-270m@all") == "gemma3-270m" and preset_of("minilm@seed.7-b_2") == "minilm"
    assert preset_of("lexical") == "lexical"
    for odd in ("lexical@", "@all", "lexical@a/b"):
        assert preset_of(odd) == odd  # resolve_preset then names it as an unknown preset
    folder = tmp_path / "backbone@v2"
    folder.mkdir()
    assert preset_of(str(folder)) == str(folder)
    assert member_order(["lexical", "minilm@all", "gemma3-270m@all", "minilm", "gemma3-270m"]) == [
        "gemma3-270m", "gemma3-270m@all", "minilm", "minilm@all", "lexical"]


def test_two_bags_report_the_whole_recipe_at_each_seed_they_share(tmp_path):
    """With two bagged members, 'blend, every bag at seed S' is the blend with both bags at seed S at once,
    for the seeds both bags have (here 42 and 7, not lexical@few's own 13): at the training seed it is
    exactly a plain run of the same two members, and the report gives its spread in one line."""
    common = dict(max_rows=120, max_length=None, max_train_rows="lexical=25,lexical@few=20")
    plain = cv_stage([PANDALM], ["lexical", "lexical@few"], 2, out=tmp_path / "plain", **common)
    bagged = cv_stage([PANDALM], ["lexical", "lexical@few"], 2, out=tmp_path / "bag", bag_rows=True,
                      bag_seeds="lexical=42,7;lexical@few=42,7,13", **common)
    rows = bagged["results"]
    assert [name for name in rows if name.startswith("blend, every bag")] == [
        "blend, every bag at seed 42", "blend, every bag at seed 7"]
    assert rows["blend, every bag at seed 42"]["log_loss"] == pytest.approx(plain["results"]["blend"]["log_loss"])
    assert rows["blend, every bag at seed 42"]["accuracy"] == pytest.approx(plain["results"]["blend"]["accuracy"])
    # the row bags' seeds train on other rows, so seed 7's whole recipe scores otherwise than seed 42's
    assert rows["blend, every bag at seed 7"]["log_loss"] != pytest.approx(rows["blend, every bag at seed 42"]["log_loss"])
    # and otherwise than either bag at seed 7 alone (both members were swapped, not one)
    for name in ("lexical", "lexical@few"):
        assert rows[f"blend, {name} seed 7 alone"]["log_loss"] != pytest.approx(
            rows["blend, every bag at seed 7"]["log_loss"])
    whole = [rows[f"blend, every bag at seed {sd}"]["log_loss"] for sd in (42, 7)]
    assert (f"Seed spread (the whole recipe, every bagged member at one seed, 2 seeds: 42, 7): the blend scores "
            f"{min(whole):.4f}–{max(whole):.4f} log loss") in bagged["markdown"]
    # one bag: its 'seed S alone' rows are the recipe at one seed already, no second set of rows
    single = cv_stage([PANDALM], ["lexical", "lexical@few"], 2, out=tmp_path / "bag", bag_rows=True,
                      bag_seeds="lexical=42,7", **common)
    assert not any(name.startswith("blend, every bag") for name in single["results"])
    assert "the whole recipe" not in single["markdown"]


def test_cv_packs_every_member_as_asked_and_never_reuses_a_cache_cut_otherwise(tmp_path):
    """--pack reaches each member's tokenize (here the head-and-tail cut); a cache packed another way is not
    taken for this one (a one-line error naming the option), so the cut comparison compares two packings."""
    common = dict(max_rows=40, max_length=64, max_train_rows={"minilm": 8}, epochs=0.5)
    done = cv_stage([PANDALM], ["minilm"], 2, out=tmp_path / "mid", pack={"cut": "middle"}, **common)
    meta = json.loads((tmp_path / "mid" / "tokenized" / "minilm" / "meta.json").read_text())
    assert meta["pack"]["cut"] == "middle" and 'packing {"cut": "middle"}' in done["markdown"]
    assert json.loads((tmp_path / "mid" / "cv.json").read_text())["settings"]["pack"] == {"cut": "middle"}
    with pytest.raises(SettingsError, match=r"made with other settings \{'pack.cut': \('middle', 'end'\)\}"):
        cv_stage([PANDALM], ["minilm"], 2, out=tmp_path / "mid", **common)


def test_cv_trains_each_member_with_its_own_recipe_and_refuses_what_cannot_run(tmp_path):
    """--recipes gives one member kit train's settings (here SWA at a constant rate beside the plain member):
    its folds are trained with them and recorded, the other member's are not; a recipe on a non-member, a
    setting kit cv owns or a wrong value stops before any folder exists."""
    common = dict(max_rows=40, max_length=64, max_train_rows={"minilm@swa": 8}, epochs=0.5)
    swa = {"lr_schedule": "constant", "weight_average": "swa", "average_start": 0.25}
    done = cv_stage([PANDALM], ["minilm@swa", "lexical"], 2, out=tmp_path / "cv", recipes={"minilm@swa": swa},
                    **common)
    for k in range(2):
        plain, averaged = (json.loads((tmp_path / "cv" / "models" / m / f"fold{k}" / "config.json").read_text())["train"]
                           for m in ("lexical", "minilm@swa"))
        assert {f: averaged[f] for f in swa} == swa and (plain["lr_schedule"], plain["weight_average"]) == ("cosine", "none")
        assert "p_a_final" in pd.read_csv(tmp_path / "cv" / "models" / "minilm@swa" / f"fold{k}" / "oof.csv")
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["settings"]["recipes"] == {"minilm@swa": swa}
    assert 'training settings per member: {"minilm@swa": {"lr_schedule": "constant"' in done["markdown"]
    assert {"lexical", "minilm@swa"} <= set(done["table"].index)
    # from the CLI's text: the same recipe, JSON values read as numbers
    from kit.workflows.settings import CvSettings
    parsed = CvSettings(train=[PANDALM], models=["minilm", "minilm@swa"], out="x",
                        recipes="minilm@swa=lr_schedule:constant,weight_average:swa,average_start:0.25")
    assert parsed.recipes == {"minilm@swa": swa}
    for bad, said in (({"lexical": {"lr_schedule": "constant"}}, r"--recipes lexical=\.\.\.: not one of the --models"),
                      ({"minilm@swa": {"seed": 7}}, r"kit cv sets seed itself; use its own flag"),
                      ({"minilm@swa": {"lr_schedule": "step"}}, r"lr_schedule 'step': must be one of"),
                      ("minilm@swa=lr_schedule", r"'lr_schedule' is not FIELD:VALUE")):
        with pytest.raises(SettingsError, match=said):
            cv_stage([PANDALM], ["minilm@swa"], 2, out=tmp_path / "bad", recipes=bad, **common)
        assert not (tmp_path / "bad").exists()
    # a member type that cannot run the recipe is refused before the members before it train
    with pytest.raises(SettingsError, match=r"the 'lexical' member type has no training iterates to average"):
        cv_stage([PANDALM], ["minilm@swa", "lexical"], 2, out=tmp_path / "bad", recipes={"lexical": swa}, **common)
    assert not (tmp_path / "bad").exists()
