"""Keep a blend report under ``results/``: a copy a reader can trust and ``kit submit`` never takes.

    .venv/bin/python scripts/keep_report.py artifacts/runs/<run>/report results/main_job

Copies the report's files (report.md, evaluation.csv, blend.json, the PNGs) into the target folder,
writes every absolute path they name relative to the repository (a path outside it as its file
name), and leaves out the blend stage's ``manifest.json``: without it the copy is a record, never a
saved blend that ``kit submit`` could pick up when the repository is attached as a dataset. With
the same folder as source and target it cleans a kept report in place.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from kit.store.io import write_json, write_text

KEPT = ("report.md", "evaluation.csv", "blend.json", "methods.png", "reliability.png", "confusion.png")
ABSOLUTE = re.compile(r"(?<![\w.])/(?:[\w.-]+/)*[\w.-]+")


def relative(path: str) -> str:
    """``/.../<repo>/artifacts/x`` -> ``artifacts/x``; a path outside the repository -> its name."""
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def without_machine_paths(value):
    if isinstance(value, dict):
        return {k: without_machine_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return relative(value)
    return value


def keep(source: Path, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in KEPT:
        if not (source / name).is_file():
            continue
        if name == "blend.json":
            saved = without_machine_paths(json.loads((source / name).read_text()))
            written.append(write_json(saved, target / name, overwrite=True))
        elif name == "report.md":
            text = ABSOLUTE.sub(lambda m: relative(m.group()), (source / name).read_text())
            written.append(write_text(text, target / name, overwrite=True))
        elif source.resolve() != target.resolve():
            shutil.copyfile(source / name, target / name)
            written.append(target / name)
    (target / "manifest.json").unlink(missing_ok=True)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a blend report folder (kit main's <run>/report, kit blend's --out)")
    parser.add_argument("target", type=Path, help="where to keep it (under results/)")
    args = parser.parse_args(argv)
    for path in keep(args.source, args.target):
        print(path)


if __name__ == "__main__":
    main()
