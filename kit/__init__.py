"""LoRA-LiteE kit: LoRA/QLoRA three-way preference classifiers and their ensemble.

``import kit`` is light: it imports nothing beyond the standard library; each name below is
loaded on first use. The layers, bottom up (each imports only from the ones before it):

=================  ==========================================================================
``kit.core``       schema, errors, environment, presets, settings, metrics, the ``kit`` logger
``kit.store``      every artefact's writer and reader: atomic writes, manifests, the tokenized
                   cache, model folders, prediction files, figures
``kit.data``       input tables, preference data, dedup, folds
``kit.ops``        packing, batching, devices, backbones, LoRA, losses, the Trainer loop
``kit.members``    member types (joint, pairwise, lexical, zeroshot, yours) and their registry
``kit.ensemble``   blending, stacking, guardrails, evaluation, submission, report
``kit.stages``     tokenize -> train -> infer -> blend
``kit.workflows``  cv, submit (Kaggle), pseudo-label, the main job, and their settings
``kit.cli``        ``python -m kit ...``; ``kit.params``: notebook parameters -> settings
=================  ==========================================================================

Example::

    import kit
    kit.show_progress()
    tok = kit.tokenize_stage("lexical", ["data/pandalm/pandalm_kaggle.csv"], "", n_folds=2, out="tok")
    model = kit.train_stage("lexical", 0, tokenized="tok", out="models/lexical/fold0")
    kit.infer_stage(model.out_dir, "oof")
"""
from __future__ import annotations

import importlib

# name -> the module that defines it
_API = {
    # stages
    "tokenize_stage": "kit.stages.tokenize", "TokenizeResult": "kit.stages.tokenize",
    "train_stage": "kit.stages.train", "TrainResult": "kit.stages.train",
    "infer_stage": "kit.stages.infer", "infer_isolated": "kit.stages.infer_many", "InferResult": "kit.stages.infer",
    "blend_stage": "kit.stages.blend", "average_models": "kit.stages.average", "AverageResult": "kit.stages.average",
    # workflows
    "cv_stage": "kit.workflows.cv", "submit": "kit.workflows.submit", "SubmitResult": "kit.workflows.submit",
    "pseudo_label": "kit.workflows.pseudo_label", "run_main": "kit.workflows.main",
    "load_ensemble": "kit.workflows.ensemble", "Ensemble": "kit.workflows.ensemble",
    # the member registry
    "MemberType": "kit.members", "Predictor": "kit.members", "Fitted": "kit.members", "FitContext": "kit.members",
    "Encoder": "kit.members", "register": "kit.members", "get_member_type": "kit.members",
    "member_types": "kit.members",
    # settings and presets
    "TokenizeSettings": "kit.core.settings", "TrainSettings": "kit.core.settings", "TrainRun": "kit.core.settings",
    "PresetOverrides": "kit.core.settings", "InferSettings": "kit.core.settings", "BlendSettings": "kit.core.settings",
    "AverageSettings": "kit.core.settings",
    "CvSettings": "kit.workflows.settings", "SubmitSettings": "kit.workflows.settings",
    "PseudoLabelSettings": "kit.workflows.settings", "MainSettings": "kit.workflows.settings",
    "MainPlaces": "kit.workflows.settings",
    "from_parameters": "kit.params",
    "Preset": "kit.core.presets", "PRESETS": "kit.core.presets", "resolve_preset": "kit.core.presets",
    "register_preset": "kit.core.presets",
    # data types and helpers
    "load_conversations": "kit.data.ingest", "read_table": "kit.data.ingest",
    "MemberPredictions": "kit.store.predictions", "load_member": "kit.store.predictions",
    "BlendResult": "kit.ensemble.combine", "blend_members": "kit.ensemble.combine", "combine": "kit.ensemble.combine",
    "discover_members": "kit.store.models", "trained_outputs": "kit.store.models",
    "log_loss": "kit.core.metrics", "KitError": "kit.core.errors",
    "show_progress": "kit.core.log", "logger": "kit.core.log",
    "CLASS_NAMES": "kit.core.schema", "PROB_COLUMNS": "kit.core.schema",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name == "__version__":  # read from the repository's pyproject.toml (kit.core.provenance)
        return importlib.import_module("kit.core.provenance").kit_version()
    if name not in _API:
        raise AttributeError(f"module 'kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
