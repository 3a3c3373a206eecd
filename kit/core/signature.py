"""Stage functions with real signatures: the parameters are the settings' fields, written out.

:func:`settings_function` ties a function to its settings dataclass(es): a test holds the
function's parameters to the fields (same names, order and defaults), the docstring gains a
``Args`` section generated from the fields' help texts (what ``help()`` shows), and a
misspelt keyword is a :class:`~kit.core.errors.SettingsError` naming the closest parameter, and the
call's start is marked for the manifests it writes (:func:`kit.core.provenance.timed_call`).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import textwrap
from typing import Callable, ParamSpec, TypeVar

from .declare import field_default, unknown_name
from .errors import SettingsError
from .provenance import timed_call

__all__ = ["settings_function"]

P = ParamSpec("P")
R = TypeVar("R")


def _parameters_section(classes) -> str:
    lines = ["", "Args:"]
    for cls in classes:
        if len(classes) > 1:
            lines.append(f"  {cls.__name__}:")
        for f in dataclasses.fields(cls):
            text = f.metadata.get("help", "").replace("%%", "%")
            lines.append(textwrap.fill(f"{f.name}: {text}", width=96, initial_indent="    ",
                                       subsequent_indent="        "))
    return "\n".join(lines)


def _check_matches(func: Callable, classes) -> None:
    """The signature is written out (so editors and type checkers see it); here it is held to the declaration."""
    params = inspect.signature(func).parameters
    fields = [f for cls in classes for f in dataclasses.fields(cls)]
    if list(params) != [f.name for f in fields]:
        raise TypeError(f"{func.__qualname__}: its parameters {list(params)} are not the fields of "
                        f"{', '.join(c.__name__ for c in classes)} {[f.name for f in fields]}, in order")
    for f in fields:
        default = field_default(f)
        expected = inspect.Parameter.empty if default is dataclasses.MISSING else default
        given = params[f.name].default
        if (list(given) if isinstance(given, tuple) else given) != expected:
            raise TypeError(f"{func.__qualname__}: parameter {f.name} defaults to {given!r}, its field to "
                            f"{expected!r}")


def settings_function(*classes, hints: dict[str, str] | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare that a function's parameters are the fields of ``classes`` (in order); ``hints``
    gives the message for a known wrong keyword (e.g. a setting that belongs to another stage)."""

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        _check_matches(func, classes)
        names = list(inspect.signature(func).parameters)

        @functools.wraps(func)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            for key in kwargs:
                if key not in names:
                    if hints and key in hints:
                        raise SettingsError(hints[key])
                    raise SettingsError(unknown_name(key, names, func.__name__))
            if len(args) > len(names):
                raise SettingsError(f"{func.__name__} takes at most {len(names)} positional parameters, got "
                                    f"{len(args)}")
            with timed_call():
                return func(*args, **kwargs)

        call.__doc__ = inspect.cleandoc(func.__doc__ or "") + "\n" + _parameters_section(classes)
        call.settings_classes = classes
        return call

    return wrap
