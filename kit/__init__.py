"""LoRA-LiteE kit: LoRA/QLoRA three-way preference classifiers and their ensemble.

Stages (each a module, a CLI sub-command and a notebook):
1. tokenize — :mod:`kit.tokenization` (ingest :mod:`kit.data` and :mod:`kit.preference_data`,
   extra-data dedup :mod:`kit.dedup`, packing :mod:`kit.packing`)
2. train    — :mod:`kit.training` (heads :mod:`kit.heads`: joint :mod:`kit.modeling`, pairwise
   :mod:`kit.pairwise`; the lexical member :mod:`kit.lexical`; presets :mod:`kit.presets`)
3. infer    — :mod:`kit.inference`
4. blend    — :mod:`kit.blend` (:mod:`kit.submission`, :mod:`kit.evaluation`)
Every stage output ends with a manifest (:mod:`kit.manifest`) that later stages check;
plus :mod:`kit.cv` (all four, fold by fold) and :mod:`kit.pipeline` (the main job).
Importing ``kit`` (or ``kit.env``) needs nothing beyond the standard library.
"""

__version__ = "0.1.0"
