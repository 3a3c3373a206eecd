"""Notebook parameters <-> settings: a notebook's parameters cell of upper-case names
(``MAX_LENGTH = 128``) read into settings dataclasses. An unknown or misspelt parameter is an error
naming it.

A field's notebook parameter is its name upper-cased, unless its ``notebook`` metadata names
another (or None: no notebook parameter) — :mod:`kit.core.declare`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Sequence

from .core.declare import notebook_name, unknown_name
from .core.errors import SettingsError

__all__ = ["from_parameters"]


def from_parameters(groups, namespace: dict, extra: Sequence[str] = ()):
    """Settings instances (one per dataclass in ``groups``, or one for a single class) from a
    notebook's parameters: the upper-case names of ``namespace`` (a notebook's ``globals()``).
    Every upper-case name must be a parameter of one group or listed in ``extra`` (the notebook's
    own, e.g. ``KIT_DIR``); an unknown one is a SettingsError naming it."""
    single = isinstance(groups, type)
    groups = [groups] if single else list(groups)
    mapping = {}
    for cls in groups:
        for f in fields(cls):
            name = notebook_name(f)
            if name:
                mapping[name] = (cls, f.name)
    given = {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}
    unknown = [k for k in given if k not in mapping and k not in extra]
    if unknown:
        raise SettingsError(unknown_name(unknown[0], [*mapping, *extra], "this notebook"))
    values: dict[type, dict] = {cls: {} for cls in groups}
    for key, value in given.items():
        if key in mapping:
            cls, name = mapping[key]
            values[cls][name] = value
    built = [cls(**values[cls]) for cls in groups]
    return built[0] if single else built

