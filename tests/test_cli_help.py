"""Every CLI flag says what it does."""
import argparse

from kit.cli import build_parser


def test_every_flag_of_every_stage_has_help():
    parser = build_parser()
    stages = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"tokenize", "train", "infer", "blend", "cv", "main", "submit"} <= set(stages)
    silent = [f"{name} {'/'.join(action.option_strings)}" for name, sub in stages.items()
              for action in sub._actions
              if action.option_strings and action.dest != "help" and not (action.help or "").strip()]
    assert not silent, f"flags without help: {silent}"
    for sub in stages.values():
        assert "--" in sub.format_help()  # renders (no stray % in a help string)
