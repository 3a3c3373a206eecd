"""The GPU check's CPU dry run: the script a CUDA machine runs (scripts/gpu_check.sh) stays runnable
while no GPU is at hand — the same stages, tiny Gemma-2 / Llama-3 in 4-bit and full precision, and
the two-shard path (here: two CPU workers sharing one 4-bit replica)."""
import json
import subprocess

from conftest import ROOT


def test_the_gpu_check_dry_run_passes(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu-dry-run.json").read_text())
    assert record["ok"] and record["dry_run"] and len(record["rows"]) == 4
    assert {r["model"].split(" ")[0] for r in record["rows"]} == {"gemma2-9b", "llama3-8b"}
    assert all(r["two_shard_max_diff"] <= 1e-5 for r in record["rows"])
    assert "all checks passed" in (tmp_path / "gpu-dry-run.md").read_text()
    # the 4-bit-trained adapters scored in each precision, and the projection's factor measured on the device
    four_bit = [r for r in record["rows"] if "4-bit" in r["model"]]
    assert all(r[f"score_{q}_rows_per_s"] > 0 for r in four_bit for q in ("4bit", "8bit", "none"))
    calibration = record["calibration"]
    assert calibration["device"] == "cpu" and 0 < calibration["train_share_of_peak"] < 1
    assert 0 < calibration["score_share_of_peak"] < 1
