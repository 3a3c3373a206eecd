"""Layer 1 — what every other layer shares: the schema (class names, columns, the swap),
errors (one :class:`~kit.core.errors.KitError` base), the environment, presets, settings,
metrics and the ``kit`` logger. Imports nothing from the rest of the kit."""
