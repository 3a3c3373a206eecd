"""How a setting is declared: a dataclass field that carries its help text.

Field metadata: ``help`` (required), ``notebook`` (the notebook parameter's name when it is not the
field's upper-cased; None: no notebook parameter), ``aliases`` (more CLI flags), ``cli_type`` (how
the CLI reads the text; the field's type otherwise), ``choices`` (the only values a text field takes).
The CLI (:mod:`kit.cli`) and the notebooks' parameter cells (:mod:`kit.params`) read these; the stage
functions take the same fields as their keyword parameters.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import field

from .errors import SettingsError
from .values import comma_list

__all__ = ["Settings", "arg", "check_bounds", "field_default", "notebook_name", "same_as", "to_parameters",
           "unknown_name"]


def arg(default=dataclasses.MISSING, help: str = "", *, factory=None, **meta):
    """A dataclass field with its help text (and CLI/notebook metadata)."""
    if not help:
        raise ValueError("every setting needs its help text")
    meta = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_default(f: dataclasses.Field):
    """A field's default value (a fresh one for a factory); ``dataclasses.MISSING`` when required."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def notebook_name(f: dataclasses.Field) -> str | None:
    """The notebook parameter a field maps onto (None: the field has no notebook parameter)."""
    return f.metadata.get("notebook", f.name.upper())


def unknown_name(name: str, known, where: str) -> str:
    """The one-line message for a misspelt parameter, with the closest known name."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return (f"unknown parameter {name!r} for {where}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; the parameters are {sorted(known)}")


def check_given(settings) -> None:
    """A SettingsError for the first field given None where its type does not take None (``max_steps: int``):
    such a value would fail later, deep in a stage, with a TypeError instead of this line."""
    for f in dataclasses.fields(settings):
        if getattr(settings, f.name) is None and "None" not in str(f.type) and "Any" not in str(f.type):
            faces = f"--{f.name.replace('_', '-')} / {notebook_name(f) or f.name.upper()} / {f.name}"
            default = field_default(f)
            said = "" if default is dataclasses.MISSING else f" (default {default!r})"
            raise SettingsError(f"{faces} None: give a value of type {f.type}{said}")


def check_bounds(settings) -> None:
    """A SettingsError for the first numeric field of ``settings`` below its ``minimum`` (field metadata,
    inclusive), not above its ``above`` (exclusive) or above its ``maximum`` (inclusive) — a number, each
    value of a per-model dict, each item of a list; None (the preset's value, no cap) and text not yet parsed pass; a field with ``choices`` holds one of
    them. Named in every face:
    ``--max-train-rows / MAX_TRAIN_ROWS / max_train_rows``."""
    for f in dataclasses.fields(settings):
        low, above, high = f.metadata.get("minimum"), f.metadata.get("above"), f.metadata.get("maximum")
        value = getattr(settings, f.name)
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise SettingsError(f"--{f.name.replace('_', '-')} / {notebook_name(f) or f.name.upper()} / {f.name} "
                                f"{value!r}: must be one of {' | '.join(f.metadata['choices'])}")
        if low is None and above is None and high is None:
            continue
        items = value.items() if isinstance(value, dict) else (
            ((None, v) for v in value) if isinstance(value, (list, tuple)) else ((None, value),))
        for key, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if (low is not None and v < low) or (above is not None and v <= above) or (high is not None and v > high):
                faces = f"--{f.name.replace('_', '-')} / {notebook_name(f) or f.name.upper()} / {f.name}"
                bound = " and ".join(b for b in (f"at least {low}" if low is not None else None,
                                                  f"more than {above}" if above is not None else None,
                                                  f"at most {high}" if high is not None else None) if b)
                raise SettingsError(f"{faces} {f'{key}=' if key else ''}{v}: must be {bound} "
                                    f"({f.metadata['help'].split(';')[0]})")


class Settings:
    """What every settings dataclass shares: list fields normalised, values as a dict, numeric fields held to
    their bounds (``minimum`` / ``above`` metadata) once the class's own ``__post_init__`` has parsed them."""

    _lists: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None:  # bounds are checked after the subclass parsed its text values (e.g. "m=5")
            @functools.wraps(own)
            def post_init(self, _own=own):
                _own(self)
                check_given(self)
                check_bounds(self)
            cls.__post_init__ = post_init

    def __post_init__(self):
        for name in self._lists:
            setattr(self, name, comma_list(getattr(self, name)))
        check_given(self)
        check_bounds(self)

    def to_dict(self) -> dict:
        """The fields by name: ``stage(**settings.to_dict())`` runs the stage with these settings."""
        return dataclasses.asdict(self)

    @classmethod
    def pick(cls, values: dict):
        """These settings from ``values`` (a stage's parameters, ``locals()``): each field by its name."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


_KEEP = object()


def same_as(cls, name: str, default=_KEEP, help: str | None = None, factory=None):
    """The field ``name`` of ``cls``, declared for a workflow that passes it on to that stage: the
    same help text and CLI/notebook metadata (``help`` adds the workflow's own words). A different
    ``default`` is the workflow's deliberate choice; :data:`kit.workflows.settings.WORKFLOW_DEFAULTS`
    lists each one with its reason; ``factory`` makes that default when the field is made (e.g. a path
    found at run time)."""
    source = cls.__dataclass_fields__[name]
    meta = dict(source.metadata)
    if help:
        meta["help"] = help
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is _KEEP:
        if source.default_factory is not dataclasses.MISSING:
            return field(default_factory=source.default_factory, metadata=meta)
        return field(default=source.default, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def to_parameters(settings) -> dict:
    """The notebook parameters (upper-case names) of the fields of ``settings`` that differ from their defaults:
    what the main job passes to papermill, so that no parameter name is typed by hand."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        name = notebook_name(f)
        if name and value != field_default(f):
            out[name] = value
    return out
