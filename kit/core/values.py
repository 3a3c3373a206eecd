"""How a setting's text becomes its value: the same rules for the CLI, the notebooks and Python.

A value that is already of its type passes through unchanged, so each function can run on a
parsed value again (settings are rebuilt from ``to_dict()`` without change).
"""
from __future__ import annotations

import json
import os

from .errors import SettingsError

__all__ = ["WEIGHT_SCHEMES", "comma_list", "one_path_each", "parse_caps", "parse_fold", "parse_hours", "parse_members",
           "parse_recipes", "parse_seeds", "parse_sample", "parse_weights", "per_model"]

WEIGHT_SCHEMES = ("paper", "equal", "fit", "stack", "auto", "saved")


def comma_list(value) -> list[str] | None:
    """A list of names or paths from a list, or from text separated by commas; None stays None."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return [t for part in items for t in (s.strip() for s in str(part).split(",")) if t]


def parse_fold(text) -> int | None:
    """``'3'`` -> 3; ``'full'`` (or None) -> None: train on every row."""
    if text is None or str(text).lower() in ("full", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"--fold {text!r}: pass a fold number (0, 1, ...) or 'full' (notebook FOLD = None)") from None


def parse_weights(text):
    """``paper`` | ``equal`` | ``fit`` | ``stack`` (| ``auto`` | ``saved``), or numbers separated by commas."""
    if not isinstance(text, str):
        return text
    if text in WEIGHT_SCHEMES:
        return text
    try:
        return [float(x) for x in comma_list(text)]
    except ValueError:
        raise SettingsError(f"--weights {text!r}: pass paper, equal, fit, stack or numbers like 0.7,0.3") from None


def parse_members(text):
    """``'name=dir1,dir2;name2=dir3'`` -> {name: [dirs]} (a dict is returned as it is)."""
    if text is None or isinstance(text, dict):
        return text
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, dirs = part.partition("=")
        if not dirs:
            raise SettingsError(f"--members entry {part!r} is not NAME=DIR[,DIR...]")
        if name.strip() in out:  # the later one would silently win
            raise SettingsError(f"{text!r}: {name.strip()!r} is given twice: one NAME=... each (values separated by "
                                f"commas)")
        out[name.strip()] = comma_list(dirs)
    return out


def parse_recipes(text):
    """``'gemma3-270m@swa=lr_schedule:constant,weight_average:swa'`` -> ``{'gemma3-270m@swa': {'lr_schedule':
    'constant', 'weight_average': 'swa'}}``: each value read as JSON where it is JSON (``0.5``, ``true``), else as
    text (a dict is returned as it is)."""
    if text is None or isinstance(text, dict):
        return text
    out = {}
    for name, pairs in (parse_members(text) or {}).items():
        out[name] = {}
        for pair in pairs:
            key, sep, value = (t.strip() for t in pair.partition(":"))
            if not sep or not key or not value:
                raise SettingsError(f"--recipes {name}=...: {pair!r} is not FIELD:VALUE (e.g. lr_schedule:constant)")
            try:
                out[name][key] = json.loads(value)
            except ValueError:
                out[name][key] = value
    return out


def one_path_each(members: dict | None) -> dict:
    """``{name: [path]}`` or ``{name: path}`` (Python callers) -> ``{name: path}``."""
    return {name: (paths if isinstance(paths, (str, os.PathLike)) else paths[0])
            for name, paths in (members or {}).items()}


def parse_seeds(text):
    """``'gemma3-270m=42,7,13;minilm=1,2'`` -> {'gemma3-270m': [42, 7, 13], 'minilm': [1, 2]}: distinct ints."""
    out = {}
    for name, seeds in (parse_members(text) or {}).items():
        try:
            seeds = [int(x) for x in (seeds if isinstance(seeds, (list, tuple)) else comma_list(str(seeds)))]
        except ValueError:
            raise SettingsError(f"--bag-seeds {name}={seeds}: seeds are whole numbers, e.g. {name}=42,7,13") from None
        if len(set(seeds)) != len(seeds) or not seeds:
            raise SettingsError(f"--bag-seeds {name}={seeds}: give distinct seeds")
        out[name] = seeds
    return out or None


def parse_caps(text):
    """``'300'`` -> 300; ``'smollm2=300,minilm=800'`` -> {'smollm2': 300, 'minilm': 800}."""
    if text is None or isinstance(text, (int, dict)):
        return text
    try:
        if "=" not in text:
            return int(text)
        pairs = [(k.strip(), int(v)) for k, v in (part.split("=", 1) for part in comma_list(text))]
    except ValueError:
        raise SettingsError(f"--max-train-rows {text!r}: pass N, or MODEL=N,MODEL=N") from None
    names = [k for k, _ in pairs]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:  # the later one would silently win
        raise SettingsError(f"--max-train-rows {text!r}: {', '.join(twice)} given twice: one MODEL=N each")
    return dict(pairs)


def per_model(name: str, value, models: list[str], kind: type, known: set[str]) -> dict:
    """A per-member setting as {member: value}: one value (of ``kind``) for every member of ``models``, or a
    dict keyed by members (or other known presets, ignored where not a member); None is {}. A key outside
    them, or a value of another type (an int below 1 for ``int``), is a SettingsError naming the setting."""
    if value is None:
        return {}
    if isinstance(value, kind) and not isinstance(value, bool):
        value = {model: value for model in models}
    if not isinstance(value, dict) or set(value) - set(models) - known:
        raise SettingsError(f"{name} = {value!r}: one {kind.__name__} for every member, or a dict keyed by members "
                            f"of MODELS {models}")
    bad = {m: v for m, v in value.items() if isinstance(v, bool) or not isinstance(v, kind)
           or (kind is int and v < 1)}
    if bad:
        raise SettingsError(f"{name} {bad}: each value must be a {kind.__name__}" + (" of at least 1" if kind is int
                                                                                       else ""))
    return dict(value)


def parse_sample(text):
    """A sample-submission path, ``auto``, or ``none`` (-> None: no check)."""
    return None if text is None or str(text).lower() == "none" else text


def parse_hours(text):
    """``'9'`` -> 9.0; ``'none'`` (or None) -> None: no budget."""
    if text is None or str(text).lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"--budget-hours {text!r}: pass hours (e.g. 9) or 'none'") from None
