"""A member type of one's own, in this one file: a length-only logistic regression.

It registers itself (and its preset) and goes through tokenize -> train -> infer -> blend ->
submit with no kit file changed; then, declared as an entry point of the group
``lora_litee.members`` (a dist-info folder on PYTHONPATH, as ``pip install`` of a plug-in would
leave), it is found by an isolated ``kit infer`` process that never imported this file itself.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from conftest import KAGGLE_TEST, PANDALM, ROOT, SAMPLE_SUB
from kit.core.presets import Preset, register_preset
from kit.members import Encoder, Fitted, MemberType, Predictor, register


def _features(frame: pd.DataFrame) -> np.ndarray:
    d = frame["len_a"].to_numpy() - frame["len_b"].to_numpy()
    return np.column_stack([d, np.abs(d)])


class LengthPredictor(Predictor):
    def __init__(self, folder: Path):
        saved = json.loads((folder / "length.json").read_text())
        self.model = LogisticRegression()
        self.model.coef_ = np.asarray(saved["coef"])
        self.model.intercept_ = np.asarray(saved["intercept"])
        self.model.classes_ = np.asarray(saved["classes"])

    def predict(self, frame, swap=False, **options):
        rows = frame.rename(columns={"len_a": "len_b", "len_b": "len_a"}) if swap else frame
        logp = np.full((len(rows), 3), -30.0)
        logp[:, self.model.classes_] = self.model.predict_log_proba(_features(rows))
        return logp


@register
class LengthMember(MemberType):
    """A: log characters of each response; the model sees only their difference."""

    name = "length"
    uses_backbone = False
    cache_columns = ("len_a", "len_b")

    def encoder(self, preset, pack=None):
        def encode(frame, desc):
            def size(col):
                return frame[col].map(lambda turns: float(np.log1p(sum(len(t) for t in turns)))).to_numpy()
            return pd.DataFrame({"id": frame["id"].to_numpy(), "len_a": size("response_a"), "len_b": size("response_b")})
        return Encoder(encode)

    def fit(self, preset, train_rows, held_rows, settings, context):
        self.check_cache(train_rows, context.tokenized)
        model = LogisticRegression(C=1.0).fit(_features(train_rows), train_rows["label"].to_numpy())

        def save(folder: Path):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "length.json").write_text(json.dumps({"coef": model.coef_.tolist(),
                                                            "intercept": model.intercept_.tolist(),
                                                            "classes": model.classes_.tolist()}))
        held = None
        if len(held_rows):
            held = np.zeros((len(held_rows), 3))
            held[:, model.classes_] = model.predict_proba(_features(held_rows))
        return Fitted(save, held, {"train_rows": len(train_rows), "trainable_params": int(model.coef_.size)})

    def load(self, model_dir, preset, devices=("cpu",)):
        return LengthPredictor(Path(model_dir) / "adapter")


register_preset(Preset(name="length", kind="none", member="length", max_length=0))


def test_a_member_type_of_ones_own_goes_through_every_stage(tmp_path, monkeypatch):
    from kit.stages.blend import blend_stage
    from kit.stages.infer import infer_stage
    from kit.stages.infer_many import infer_isolated
    from kit.stages.tokenize import tokenize_stage
    from kit.stages.train import train_stage
    from kit.workflows.submit import submit

    tok = tmp_path / "tok"
    result = tokenize_stage("length", [PANDALM], KAGGLE_TEST, n_folds=2, out=tok)
    assert list(result.train.columns[:3]) == ["id", "len_a", "len_b"]
    dirs = []
    for k in range(2):
        res = train_stage("length", k, tokenized=tok, out=tmp_path / "models" / "length" / f"fold{k}")
        assert res.metrics["log_loss"] < 1.05 and res.metrics["held_out_rows"] > 400
        assert json.loads((res.out_dir / "config.json").read_text())["preset"]["member"] == "length"
        for split in ("oof", "test"):
            infer_stage(res.out_dir, split)
        dirs.append(res.out_dir)
    blended = blend_stage({"length": dirs}, weights="fit", out=tmp_path / "blend.csv", report_dir=tmp_path / "report",
                          sample_submission=SAMPLE_SUB)
    assert blended.table.loc["length", "log_loss"] < blended.table.loc["prior", "log_loss"]  # length carries signal
    sub = submit([tmp_path / "models"], KAGGLE_TEST, weights="equal", work=tmp_path / "submit",
                 out=tmp_path / "submission.csv", sample_submission=SAMPLE_SUB)
    assert pd.read_csv(sub.submission, dtype={"id": str})["id"].tolist() == \
        pd.read_csv(KAGGLE_TEST, dtype={"id": str})["id"].tolist()

    # an entry point: a fresh `python -m kit infer` process that never imported this file finds the type
    site = tmp_path / "site"
    dist = site / "kit_length_member-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-length-member\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lora_litee.members]\nlength = test_member_plugin:LengthMember\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{ROOT / 'tests'}")
    iso = infer_isolated(dirs[0], "test", out=tmp_path / "iso.csv")
    direct = pd.read_csv(dirs[0] / "predictions" / "test.csv")
    np.testing.assert_allclose(pd.read_csv(iso)[["p_a", "p_b", "p_tie"]], direct[["p_a", "p_b", "p_tie"]], atol=1e-12)
    # without the entry point the child cannot know the type: one clear line, no traceback
    monkeypatch.setenv("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "kit", "infer", "--trained", dirs[0], "--out", tmp_path / "x.csv"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown member type 'length'" in proc.stderr and "Traceback" not in proc.stderr
