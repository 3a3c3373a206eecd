"""Time projected by arithmetic before it is spent (kit.ops.compute): the parameter count read from a backbone's
config is the model's own, the projection is printed for this machine and for Kaggle's 2x T4 by train and infer,
and a training run projected over its budget stops before any model loads, naming what to change."""
import json
import logging

import pytest

from conftest import PANDALM, ROOT, cli_error_line

from kit import tokenize_stage, train_stage
from kit.core.errors import BudgetError
from kit.ops import compute
from kit.ops.compute import KAGGLE_T4X2, TRAIN_PASSES, Work, backbone_params, project_seconds
from kit.ops.tiny import make_tiny_backbone

PROJECTION_LINES = ("h on cpu", "h on 2x Tesla T4")


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_the_parameter_count_from_the_config_is_the_models_own(arch, tmp_path):
    """Every weight of every attention and MLP projection, counted from config.json alone, equals the model's."""
    from transformers import AutoModel
    folder = make_tiny_backbone(arch, tmp_path / arch)
    model = AutoModel.from_pretrained(folder)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    shape = backbone_params(folder / "config.json")
    assert shape["params"] == linear and shape["layers"] == model.config.num_hidden_layers


def test_the_projection_for_an_8b_member_on_2x_t4_is_the_issue_arithmetic():
    """Llama-3-8B's shape, one fold of the competition's 57k rows (45.6k) at 1,024 tokens, trained once: by the
    published scoring rate (a quarter of the T4's peak) about 17 hours of 2x T4 time — a day, not a session."""
    config = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "model_type": "llama"}
    shape = backbone_params_from(config)
    assert 6.9e9 < shape["params"] < 7.1e9  # 8.0B less the embeddings and the LM head
    hours = project_seconds(Work.passes(shape, [1024] * 45_600, TRAIN_PASSES, "train"), list(KAGGLE_T4X2)) / 3600
    assert 14 < hours < 22, hours


def backbone_params_from(config: dict) -> dict:
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        return backbone_params(Path(tmp) / "config.json")


@pytest.fixture(scope="module")
def gemma_cache(tmp_path_factory):
    tok = tmp_path_factory.mktemp("proj") / "tok"
    tokenize_stage("gemma3-270m", [PANDALM], "", max_length=64, max_rows=120, n_folds=2, out=tok)
    return tok


def test_training_over_its_budget_stops_before_any_model_loads(gemma_cache, tmp_path, caplog, capsys, monkeypatch):
    from kit.members import backbone
    monkeypatch.setattr(backbone.BackboneMember, "fit", lambda *a, **k: pytest.fail("a model was to be loaded"))
    with caplog.at_level(logging.INFO, logger="kit"):
        with pytest.raises(BudgetError) as err:
            train_stage("gemma3-270m", 0, tokenized=gemma_cache, out=tmp_path / "m", budget_hours=1e-4,
                        max_train_rows=50)
    line = str(err.value)
    assert all(x in line for x in PROJECTION_LINES) and "BUDGET_HOURS = 0.0001" in line
    assert "MAX_TRAIN_ROWS = " in line and "MAX_STEPS" in line and "MAX_LENGTH" in line
    assert not (tmp_path / "m").exists()
    # the same from the command line: one line, exit status 2
    said = cli_error_line(capsys, "train", "--model", "gemma3-270m", "--fold", "0", "--tokenized", gemma_cache,
                          "--out", tmp_path / "m2", "--budget-hours", "0.0001")
    assert "projected by arithmetic" in said and not (tmp_path / "m2").exists()


def test_train_and_infer_print_the_projection_for_this_machine_and_2x_t4(gemma_cache, tmp_path, caplog):
    from kit import infer_stage
    with caplog.at_level(logging.INFO, logger="kit"):
        res = train_stage("gemma3-270m", 0, tokenized=gemma_cache, out=tmp_path / "m",
                          max_steps=1, batch_size=2, grad_accum=1, max_eval_rows=4)
        # a few held-out rows only (ids=): the projection is said before the model loads, whatever the rows
        scored = infer_stage(res.out_dir, "oof", ids=res.oof["id"].tolist()[:3], out=tmp_path / "oof.csv")
    assert len(scored.predictions) == 3
    said = [r.getMessage() for r in caplog.records if "projected by arithmetic" in r.getMessage()]
    assert any(s.startswith("[kit train] gemma3-270m") for s in said), said
    assert any(s.startswith("[kit infer] gemma3-270m oof") for s in said), said
    assert all(all(x in s for x in PROJECTION_LINES) for s in said)


def test_the_cpu_factor_is_the_committed_calibration():
    """CPU_EFFICIENCY is what scripts/bench_compute.py measured (its `min` row), not a number typed apart."""
    record = json.loads((ROOT / "results" / "compute_calibration.json").read_text())
    (floor,) = [r for r in record["rows"] if r["member"] == "min"]
    assert compute.CPU_EFFICIENCY == {"train": floor["train_share_of_peak"], "score": floor["score_share_of_peak"]}
