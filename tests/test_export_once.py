"""Backbones exported once per machine: processes asking at the same time share one export."""
import subprocess
import sys
import textwrap

from conftest import ROOT

WORKER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from kit.ops.backbones import export_once

    target = Path(sys.argv[1]) / "backbone"

    def export():
        # slow enough that both processes are inside export_once together
        with open(Path(sys.argv[1]) / "exports.log", "a") as f:
            f.write("export\\n")
        time.sleep(2)
        target.mkdir()
        (target / "model.safetensors").write_text("weights")
        (target / "tokenizer.json").write_text("{}")
        return target

    print(export_once(target, export))
''')


def test_two_processes_asking_at_once_export_once_and_both_get_the_folder(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert (tmp_path / "exports.log").read_text() == "export\n"  # the second waited, then found it exported
    assert {out.strip() for out, _ in outs} == {str(tmp_path / "backbone")}
    assert (tmp_path / "backbone" / "model.safetensors").read_text() == "weights"
