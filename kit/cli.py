"""``python -m kit <stage> ...`` — the command line, generated from the settings dataclasses.

Every sub-command's flags are the fields of its settings dataclasses (:mod:`kit.core.settings`,
:mod:`kit.workflows.settings`), added to :mod:`argparse` by :func:`add_settings`: ``--max-length``
or ``--max_length``, ``--no-<flag>`` for a setting that defaults to true, lists separated by spaces
or commas. Every kit error is printed as
one line (``error: ...``) with exit status 2 — never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, fields

from .core.errors import KitError
from .core.log import logger, show_progress
from .core.declare import arg, field_default
from .core.settings import AverageSettings, BlendSettings, InferSettings, PresetOverrides, TokenizeSettings, TrainRun, TrainSettings
from .core.values import comma_list
from .stages.average import average_models
from .stages.blend import blend_stage
from .stages.infer import infer_stage
from .stages.infer_many import infer_isolated
from .stages.tokenize import tokenize_stage
from .stages.train import train_stage
from .workflows.cv import cv_stage
from .workflows.main import run_main
from .workflows.pseudo_label import pseudo_label
from .workflows.settings import CvSettings, MainPlaces, MainRun, MainSettings, PseudoLabelSettings, SubmitSettings
from .workflows.submit import submit


@dataclass
class InferCli:
    """``kit infer``'s command-line-only option."""

    isolate: bool = arg(False, "each model in its own process (--trained takes several folders, comma-separated)")


def _flag_type(hint):
    """(value type, is list, is bool) of a field's type hint, None stripped from an Optional."""
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0] if len(args) == 1 else hint
    if typing.get_origin(hint) is list:
        return (typing.get_args(hint) or (str,))[0], True, False
    return hint, False, hint is bool


def _to_bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1", "y"):
        return True
    if text.lower() in ("false", "no", "0", "n"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: pass true or false")


def _said_in_full(parse):
    """``parse`` whose own message reaches the user: argparse replaces a ValueError's text with
    'invalid <function> value', and keeps an ArgumentTypeError's."""
    def read(text):
        try:
            return parse(text)
        except KitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    read.__name__ = getattr(parse, "__name__", "value")
    return read


def add_settings(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of ``cls`` (``--max-length`` and ``--max_length``), with its help: a bool is
    ``--flag`` / ``--flag false`` (``--no-flag`` when it defaults to true), a list takes spaces or
    commas, ``cli_type`` reads the text where the field's type cannot, ``aliases`` add flags."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        names = [f"--{f.name.replace('_', '-')}", f"--{f.name}"] + list(meta.get("aliases", ()))
        names = list(dict.fromkeys(names))
        kind, is_list, is_bool = _flag_type(hints[f.name])
        default = field_default(f)
        options = {"dest": f.name, "help": meta["help"].replace("%%", "%").replace("%", "%%")}
        if default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = default
        if "cli_type" in meta:
            options["type"] = _said_in_full(meta["cli_type"])
        elif is_bool:
            options.update(type=_to_bool, nargs="?", const=True)
        elif is_list:
            options.update(type=kind if kind in (int, float) else str, nargs="+")
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            options["type"] = str
        if "choices" in meta:
            options["choices"] = meta["choices"]
        parser.add_argument(*names, **options)
        if is_bool and default is True:
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", f"--no_{f.name}", dest=f.name,
                                action="store_false", help=f"the opposite of --{f.name.replace('_', '-')}")


STAGES = {
    "tokenize": ("pack train/test tables for one model preset", [TokenizeSettings]),
    "train": ("LoRA-train one model preset on one fold", [TrainRun, TrainSettings, PresetOverrides]),
    "infer": ("predict test or out-of-fold probabilities with trained models", [InferSettings, InferCli]),
    "average": ("average K trained models of one LoRA member (its folds or seeds) into one model, scored once",
                [AverageSettings]),
    "blend": ("blend member predictions into submission.csv + report", [BlendSettings]),
    "cv": ("tokenize -> train -> infer -> blend, fold by fold, on any labelled table", [CvSettings]),
    "main": ("the main job: the four notebooks on the embedded defaults", [MainRun, MainPlaces]),
    "submit": ("one call for a Kaggle submission: attached trained models + test.csv -> submission.csv "
               "(tokenize, score, blend; nothing written beside the models)", [SubmitSettings]),
    "pseudo-label": ("score an unlabelled table with trained models (or a saved blend) and write it as training "
                     "rows with soft labels", [PseudoLabelSettings]),
}


def build_parser() -> argparse.ArgumentParser:
    """``python -m kit``'s parser: one sub-command per entry of :data:`STAGES`, its flags the dataclasses' fields."""
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (what, groups) in STAGES.items():
        stage = sub.add_parser(name, help=what, description=what)
        for cls in groups:
            add_settings(stage, cls)
    return parser


def _settings(namespace: argparse.Namespace, cls):
    return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls) if f.init})


def _run(stage: str, a: argparse.Namespace) -> None:
    if stage == "tokenize":
        res = tokenize_stage(**_settings(a, TokenizeSettings).to_dict())
        print(res.retention_summary().to_string(index=False))
        print(f"wrote {res.out_dir}")
    elif stage == "train":
        run, overrides = _settings(a, TrainRun), _settings(a, PresetOverrides).given()
        res = train_stage(**run.to_dict(), **_settings(a, TrainSettings).to_dict(), **overrides)
        if res.metrics:
            print({k: res.metrics[k] for k in ("log_loss", "accuracy", "train_seconds") if k in res.metrics})
            print(f"wrote {res.out_dir}")
    elif stage == "infer":
        s = _settings(a, InferSettings)
        dirs = comma_list(s.trained) or [None]  # None: infer_stage names the missing flag
        if s.out and len(dirs) > 1:
            raise KitError("--out names one file: pass one --trained with it")
        for trained in dirs:
            one = {**s.to_dict(), "trained": trained}
            if a.isolate:
                infer_isolated(**one)
            else:
                infer_stage(**one)
    elif stage == "average":
        print(f"wrote {average_models(**_settings(a, AverageSettings).to_dict()).out_dir}")
    elif stage == "blend":
        res = blend_stage(**_settings(a, BlendSettings).to_dict())
        print(res.report)
        if res.table is not None:
            print(res.table.to_string(float_format=lambda x: f"{x:.4f}"))
    elif stage == "cv":
        print(cv_stage(**_settings(a, CvSettings).to_dict())["markdown"])
    elif stage == "main":
        run_main(**MainSettings.for_run(_settings(a, MainRun)).to_dict(), **_settings(a, MainPlaces).to_dict())
    elif stage == "submit":
        submit(**_settings(a, SubmitSettings).to_dict())
    elif stage == "pseudo-label":
        pseudo_label(**_settings(a, PseudoLabelSettings).to_dict())


def main(argv=None) -> int:
    """Run one sub-command; 0 on success, 2 (with one ``error:`` line on stderr) on any kit error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    show_progress()
    try:
        _run(args.stage, args)
    except (ValueError, OSError, RuntimeError) as err:  # KitError is a ValueError; OSError: a full disk, ...
        logger.debug("failed", exc_info=True)
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a write that failed below the kit (safetensors): still one line
        if not type(err).__module__.startswith("safetensors"):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


def _one_line(err: BaseException) -> str:
    """The error as one line, with the likely cause where the library's own words do not say it."""
    text = " ".join(str(err).split())
    if type(err).__module__.startswith("safetensors") and "deserializ" in text:  # reading, not writing
        return (f"a .safetensors file could not be read ({type(err).__name__}: {text}): it is damaged or truncated "
                f"(a broken download or copy): copy or download it again")
    if "enforce fail" in text or "inline_container" in text or type(err).__module__.startswith("safetensors"):
        text = (f"writing or reading a model file failed ({type(err).__name__}: {text}): is the disk full or the "
                f"folder read-only? Free space or write elsewhere (--out), then rerun the same command (a killed or "
                f"failed training run resumes from its last complete checkpoint)")
    return text
