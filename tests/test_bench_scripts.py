"""The audit's two benchmark scripts run end to end at toy scale and write what their committed results
hold: the projection against the measured time, and tokenize's peak memory against its table."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


def _run(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_projection_benchmark_compares_the_projection_with_the_measured_time(tmp_path):
    _run("bench_projection.py", "--members", "lexical", "--timed-rows", "10", "--rows", "40", "--out",
         tmp_path / "p.md")
    (row,) = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert row["member"] == "lexical" and row["timed_rows"] == 10 and row["rows"] == 40
    assert row["measured_s"] > 0 and row["ratio"] == pytest.approx(row["projected_s"] / row["measured_s"], abs=0.1)
    assert "bench_projection.py --members lexical" in (tmp_path / "p.md").read_text()


def test_the_memory_benchmark_reads_each_runs_own_peak(tmp_path):
    _run("bench_tokenize_memory.py", "--rows", "3", "--cell-mb", "0.05", "--out", tmp_path / "m.md")
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [(r["text"], r["rows"]) for r in rows] == [("as written", 3), ("ASCII", 3)]
    assert all(r["peak_rss_mb"] >= r["import_baseline_mb"] > 50 for r in rows)
