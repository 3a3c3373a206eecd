"""Fold averaging (kit average, kit submit --average-folds): K LoRA models of one member merged into one model whose
every LoRA delta is exactly the K deltas' mean and whose heads are the K heads' mean, scored once. Real code paths
on a tiny random-init Llama (the real architecture, full precision so the deltas are plain tensors)."""
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import KAGGLE_TEST, KAGGLE_TRAIN, PANDALM, cli_error_line

from kit import average_models, infer_stage, submit, tokenize_stage, train_stage
from kit.core.errors import KitError
from kit.ops.tiny import make_tiny_backbone

PROBS = ["p_a", "p_b", "p_tie"]


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """Two fold models of one tiny-Llama member (joint head), trained hard enough to differ."""
    base = tmp_path_factory.mktemp("avg")
    backbone = make_tiny_backbone("llama", base / "llama", pad_token=False)
    tok = base / "tok"
    tokenize_stage("llama3-8b", [KAGGLE_TRAIN], KAGGLE_TEST, max_length=96, max_rows=40, n_folds=2, out=tok,
                   model_dir=str(backbone), member="joint")
    dirs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in (0, 1):
            dirs.append(train_stage("llama3-8b", k, tokenized=tok, out=base / "models" / "llama3-8b" / f"fold{k}",
                                    load_in_4bit=False,
                                    max_steps=3, batch_size=4, grad_accum=1, learning_rate=1e-2,
                                    max_train_rows=8, evals_per_run=1).out_dir)
    return base, dirs


def _delta(state: dict, config: dict, module: str) -> torch.Tensor:
    a, b = state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]
    return (config["lora_alpha"] / config["r"]) * b.double() @ a.double()


def test_the_averaged_adapter_holds_exactly_the_mean_delta_and_the_mean_head(folds, tmp_path):
    base, dirs = folds
    res = average_models([str(d) for d in dirs], out=str(tmp_path / "avg"))
    states = [load_file(d / "adapter" / "adapter_model.safetensors") for d in dirs]
    configs = [json.loads((d / "adapter" / "adapter_config.json").read_text()) for d in dirs]
    merged = load_file(res.out_dir / "adapter" / "adapter_model.safetensors")
    config = json.loads((res.out_dir / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 2 * configs[0]["r"] and config["lora_alpha"] == 2 * configs[0]["lora_alpha"]
    modules = sorted({k.rsplit(".lora_A", 1)[0] for k in merged if ".lora_A." in k})
    assert len(modules) >= 14  # 7 projections x 2 layers
    for module in modules:
        mean = (_delta(states[0], configs[0], module) + _delta(states[1], configs[1], module)) / 2
        torch.testing.assert_close(_delta(merged, config, module), mean, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(_delta(states[0], configs[0], module), mean)  # the folds did differ
    heads = [k for k in merged if "lora_" not in k]
    assert heads
    for k in heads:
        torch.testing.assert_close(merged[k], (states[0][k] + states[1][k]) / 2)
    record = json.loads((res.out_dir / "config.json").read_text())
    assert record["fold"] is None and [s["model_dir"] for s in record["origin"]["averaged_from"]] == list(map(str, dirs))
    # the averaged model is a trained model like any other: it scores the test rows once
    scored = infer_stage(res.out_dir, "test", tta=False, out=tmp_path / "avg.csv").predictions
    np.testing.assert_allclose(scored[PROBS].to_numpy().sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(KitError, match="no out-of-fold split"):
        infer_stage(res.out_dir, "oof", out=tmp_path / "x.csv")


def test_a_model_averaged_with_itself_scores_as_it_did(folds, tmp_path):
    """Rank 2r at alpha 2α is the same delta: the loading, scaling and heads of the merged adapter are right end to
    end when its scores equal the model's own."""
    _, dirs = folds
    same = average_models([str(dirs[0]), str(dirs[0])], out=str(tmp_path / "same")).out_dir
    own = infer_stage(dirs[0], "test", tta=False, out=tmp_path / "own.csv").predictions
    again = infer_stage(same, "test", tta=False, out=tmp_path / "same.csv").predictions
    np.testing.assert_allclose(again[PROBS].to_numpy(), own[PROBS].to_numpy(), atol=1e-6)


def test_models_whose_configs_list_the_modules_in_another_order_average(folds):
    """peft saves target_modules (a set) in the order of its process's string hashing: the same recipe trained
    in two processes (two Kaggle sessions, two seeds) lists them differently, and that is not a difference; other
    modules are."""
    from kit.ops.lora import average_lora
    _, dirs = folds
    states = [load_file(d / "adapter" / "adapter_model.safetensors") for d in dirs]
    configs = [json.loads((d / "adapter" / "adapter_config.json").read_text()) for d in dirs]
    modules = sorted(configs[1]["target_modules"])
    assert len(modules) > 1
    merged, config = average_lora(states, configs)
    again, _ = average_lora(states, [configs[0], configs[1] | {"target_modules": modules[::-1]}])
    assert set(again) == set(merged) and all(torch.equal(again[k], merged[k]) for k in merged)
    with pytest.raises(ValueError, match="adapter 1 differs from adapter 0 in target_modules"):
        average_lora(states, [configs[0], configs[1] | {"target_modules": modules[1:]}])


def test_what_cannot_be_averaged_is_refused_in_one_line(folds, tmp_path, capsys):
    _, dirs = folds
    tokenize_stage("lexical", [PANDALM], "", n_folds=2, max_rows=60, out=tmp_path / "lt")
    lexical = [train_stage("lexical", k, tokenized=tmp_path / "lt", out=tmp_path / "lex" / f"fold{k}").out_dir
               for k in (0, 1)]
    with pytest.raises(KitError, match="no LoRA adapter"):
        average_models([str(d) for d in lexical], out=str(tmp_path / "a"))
    with pytest.raises(KitError, match="another preset or tokenization"):
        average_models([str(dirs[0]), str(lexical[0])], out=str(tmp_path / "b"))
    with pytest.raises(KitError, match="at least two"):
        average_models([str(dirs[0])], out=str(tmp_path / "c"))
    with pytest.raises(KitError, match="inside the trained model"):
        average_models([str(d) for d in dirs], out=str(dirs[0] / "avg"))
    line = cli_error_line(capsys, "average", "--model-dirs", str(lexical[0]), str(lexical[1]), "--out", str(tmp_path / "d"))
    assert "no LoRA adapter" in line


def test_submit_with_average_folds_scores_each_member_once(folds, tmp_path):
    base, dirs = folds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = submit([str(base / "models")], str(KAGGLE_TEST), weights="equal", average_folds=True, work=tmp_path / "w",
                     out=tmp_path / "submission.csv", tta=False, model_dir={"llama3-8b": str(base / "llama")})
    record = json.loads((res.run_dir / "submit.json").read_text())
    (scored,) = record["scored"]["llama3-8b"]
    assert "averaged" in scored and len(res.members["llama3-8b"]) == 1
    assert not record["left_out"]
    sub = res.submission.read_text().splitlines()
    assert sub[0] == "id,winner_model_a,winner_model_b,winner_tie" and len(sub) == 4
