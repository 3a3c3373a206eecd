"""Every error the kit raises on purpose derives from :class:`KitError` (a ``ValueError``):
the CLI prints its message as one line and exits 2. A message names the file, row or
parameter at fault and says what to do."""
from __future__ import annotations


class KitError(ValueError):
    """Base of the kit's own errors: bad input, a stale output, a bad setting."""

    def __init__(self, message: str):
        super().__init__(message)


class DataError(KitError):
    """A table that cannot be used as given (missing columns, repeated ids, no usable row)."""


class PresetError(KitError):
    """A preset, setting or member type that does not exist or does not fit what it is used with."""


class SettingsError(PresetError):
    """A parameter that does not exist or has the wrong type."""


class StaleOutput(KitError):
    """A stage output that is unfinished, changed after it was written, or made from inputs
    that have changed since."""


class OutputExists(KitError, FileExistsError):
    """An output that exists and may not be replaced (no ``overwrite``)."""


class BlendError(KitError):
    """Member predictions that cannot be blended as asked."""


class SubmissionError(KitError):
    """A submission that would not be accepted (ids, columns, probabilities)."""


class SubmitError(KitError):
    """``kit submit`` cannot go on (no models, ambiguous blends, missing test table)."""


class BudgetError(KitError):
    """A run whose projected time exceeds its budget, stopped before it spends any."""


class DeadlineReached(KitError):
    """A scoring run stopped at (or projected past) its deadline; it wrote nothing."""
