"""Peak memory of ``kit tokenize`` against the size of the table it reads.

    .venv/bin/python scripts/bench_tokenize_memory.py [--rows 100 300] [--cell-mb 1] [--model lexical] \
        [--out results/tokenize_memory.md]

For each ``--rows`` and each text (PandaLM's as written, whose non-Latin characters make Python hold
it at 2 bytes a character; and its ASCII characters alone), writes a test table in the competition's
columns whose two response cells are about ``--cell-mb`` MB each (real PandaLM text, repeated), then runs ``kit tokenize --no-train --test TABLE`` for ``--model`` in a process
of its own and reads that process's peak resident memory (``getrusage``, children). The table: the
file's size, the peak, their ratio, and the baseline of a process that only imports the kit and
pandas (what the peak holds besides the table). Written to ``--out`` and its ``.json`` twin.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from kit.store.io import benchmark_command, write_benchmark

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "data" / "pandalm" / "pandalm_kaggle.csv"


_REPORT_PEAK = ("import sys\n{body}\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], "
                "file=sys.stderr)")


def _peak_mb(body: str, args: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of python code ``body`` run in a process of its own, read from its own
    ``VmHWM`` (a fresh address space's high-water mark: a child's rusage would count this parent's memory)."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", _REPORT_PEAK.format(body=body), *args], capture_output=True,
                          text=True)
    line = [t for t in done.stderr.splitlines() if t.startswith("VmHWM")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    return int(line[-1].split()[1]) / 1024, time.time() - started


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--cell-mb", type=float, default=1.0)
    ap.add_argument("--model", default="lexical")
    ap.add_argument("--out", default=str(ROOT / "results" / "tokenize_memory.md"))
    a = ap.parse_args(argv)
    started = time.time()
    source = pd.read_csv(PANDALM, dtype=str, keep_default_na=False)
    written = " ".join(json.loads(cell)[0] for cell in source["response_a"].head(200))
    results = []
    for text_kind, text in (("as written", written), ("ASCII", written.encode("ascii", "ignore").decode())):
        cell = (text * (int(a.cell_mb * 1e6) // len(text) + 1))[:int(a.cell_mb * 1e6)]
        for n in a.rows:
            results.append(_measure(a.model, text_kind, cell, n))
            print(results[-1], flush=True)
    command = benchmark_command(__file__, argv)
    print(write_benchmark(results, a.out, "Peak memory of kit tokenize against its input table",
                          f"test tables whose two response cells are about {a.cell_mb} MB each (real PandaLM text, "
                          f"repeated: as written, with its accented and CJK characters, and its ASCII characters "
                          f"alone), tokenized for `{a.model}` in a process of its own; peak resident memory from the "
                          f"process's own VmHWM. `import_baseline_mb`: a process that only imports the kit's command "
                          f"line, pandas and pyarrow. `above_baseline_over_table`: the peak less that baseline, over "
                          f"the file's size (0: the table never raised the peak above what the imports took). The "
                          f"test table is parsed, packed and written chunk by chunk, so the peak does not grow with "
                          f"the table.", command, started))


def _measure(model: str, text_kind: str, cell: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "test.csv"
        pd.DataFrame({"id": [str(i) for i in range(rows)], "prompt": [json.dumps(["Which is better?"])] * rows,
                      "response_a": [json.dumps([cell])] * rows, "response_b": [json.dumps([cell[::-1]])] * rows}
                     ).to_csv(table, index=False)
        size_mb = table.stat().st_size / 1e6
        base_mb, _ = _peak_mb("import kit.cli, pandas, pyarrow", [])
        peak_mb, seconds = _peak_mb("import kit.cli\nrc = kit.cli.main(sys.argv[1:])\nassert rc == 0",
                                    ["tokenize", "--model", model, "--no-train", "--test", str(table), "--out",
                                     str(Path(tmp) / "tok")])
    return {"model": model, "text": text_kind, "rows": rows, "table_mb": round(size_mb, 1),
            "peak_rss_mb": round(peak_mb, 1), "import_baseline_mb": round(base_mb, 1),
            "peak_over_table": round(peak_mb / size_mb, 2),
            "above_baseline_over_table": round(max(0.0, peak_mb - base_mb) / size_mb, 2), "seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
