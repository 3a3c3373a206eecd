"""Layer 6 — the four stages, each thin: read through :mod:`kit.store`, call a member type
(:mod:`kit.members`) or the ensemble (:mod:`kit.ensemble`), write through :mod:`kit.store`.

1. :mod:`.tokenize` · 2. :mod:`.train` (and :mod:`.average`: K trained models into one) · 3. :mod:`.infer` · 4. :mod:`.blend`
"""
