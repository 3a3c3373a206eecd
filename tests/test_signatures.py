"""Every public callable shows its parameters, and a setting is declared once: the stage functions'
parameters are their settings' fields, one name has one type (and one default, unless the workflow
says why), and every notebook's parameters cell agrees with the settings it is read into."""
import ast
import dataclasses
import inspect
import re
import types
import typing

import pytest

from conftest import ROOT

import kit
from kit.core import settings as stage_settings
from kit.core.declare import field_default, notebook_name
from kit.workflows import settings as workflow_settings
from kit.workflows.settings import PER_MODEL, WORKFLOW_DEFAULTS

SETTINGS = [stage_settings.PresetOverrides, stage_settings.TokenizeSettings, stage_settings.TrainRun,
            stage_settings.TrainSettings, stage_settings.InferSettings, stage_settings.BlendSettings,
            stage_settings.AverageSettings,
            workflow_settings.CvSettings, workflow_settings.SubmitSettings, workflow_settings.PseudoLabelSettings,
            workflow_settings.MainSettings, workflow_settings.MainRun, workflow_settings.MainPlaces]


def _hidden(obj) -> list[str]:
    sig = inspect.signature(obj)
    return [p.name for p in sig.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_no_public_callable_hides_its_parameters():
    hiding = {}
    for name in kit.__all__:
        obj = getattr(kit, name)
        if callable(obj) and _hidden(obj):
            hiding[name] = str(inspect.signature(obj))
    assert not hiding, f"public callables with *args/**kwargs: {hiding}"
    text = kit.train_stage.__doc__
    assert "lora_r:" in text and "learning_rate:" in text and "fold:" in text  # help() lists the parameters


def test_the_check_sees_a_hidden_parameter():
    def stage(*args, **kwargs):
        return args, kwargs
    assert _hidden(stage) == ["args", "kwargs"]


@pytest.mark.parametrize("func", ["tokenize_stage", "infer_stage", "infer_isolated", "blend_stage", "cv_stage",
                                  "submit", "pseudo_label", "train_stage", "average_models", "run_main"])
def test_a_stage_takes_its_settings_fields_with_their_defaults(func):
    fn = getattr(kit, func)
    params = dict(inspect.signature(fn).parameters)
    fields = [f for cls in fn.settings_classes for f in dataclasses.fields(cls)]
    assert list(params) == [f.name for f in fields], func
    for f in fields:
        default = field_default(f)
        given = params[f.name].default
        expected = inspect.Parameter.empty if default is dataclasses.MISSING else default
        assert (list(given) if isinstance(given, tuple) else given) == expected, (func, f.name)


def _listed(fn) -> list[str]:
    """The parameter names ``help(fn)`` lists under Args."""
    args = fn.__doc__.split("\nArgs:\n", 1)[1]
    return re.findall(r"^ {4}(\w+): ", args, re.M)


def test_help_lists_exactly_the_parameters_a_call_takes():
    """One convention: every public callable declared on settings takes their fields flat, by keyword; what
    help() lists under Args is what the call accepts, and each is accepted (a value of its default's kind)."""
    declared = [name for name in kit.__all__ if hasattr(getattr(kit, name), "settings_classes")]
    assert {"train_stage", "tokenize_stage", "infer_stage", "blend_stage", "submit", "cv_stage", "run_main"} <= set(
        declared)
    # the rest of kit.__all__ are library functions and registries, not settings-driven entry points
    objects = [name for name in kit.__all__ if name not in declared and callable(getattr(kit, name))
               and not isinstance(getattr(kit, name), type)  # a class is built from its own fields
               and any("Settings" in str(p.annotation) for p in inspect.signature(getattr(kit, name)).parameters.values())]
    assert objects == [], f"public callables taking a settings object instead of its fields: {objects}"
    for name in declared:
        fn = getattr(kit, name)
        assert _listed(fn) == list(inspect.signature(fn).parameters), name
    from kit.core.errors import SettingsError, StaleOutput
    # a training setting and a preset override, flat: accepted (the call gets as far as the missing cache)
    with pytest.raises(StaleOutput, match="no tokenized train table"):
        kit.train_stage("minilm", 0, tokenized="/nonexistent", learning_rate=1e-4, max_steps=2, lora_r=4)
    with pytest.raises(SettingsError, match="learning_rat"):  # a misspelt one still names the closest
        kit.train_stage("minilm", 0, learning_rat=1e-4)


def test_the_check_sees_a_parameter_help_lists_and_the_call_refuses():
    """A stage that forgot all but one of its settings would list them all in help() and refuse them: the
    decorator now refuses the stage itself."""
    from kit.core.settings import TrainSettings
    from kit.core.signature import settings_function

    def stage(epochs: float | None = None):
        """A stage that forgot all but one of its settings."""
    with pytest.raises(TypeError, match=r"stage: its parameters \['epochs'\] are not the fields of TrainSettings"):
        settings_function(TrainSettings)(stage)


def _base_type(hint):
    """The type without its None (``int | None`` -> ``int``), as text."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(sorted(str(a) for a in typing.get_args(hint) if a is not type(None)))
    return str(hint)


def test_one_name_one_type_and_one_default():
    seen: dict[str, tuple] = {}
    for cls in SETTINGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, default = _base_type(hints[f.name]), field_default(f)
            if f.name not in seen:
                seen[f.name] = (cls.__name__, kind, default)
                continue
            first, first_kind, first_default = seen[f.name]
            if (cls.__name__, f.name) in PER_MODEL:  # {preset: value} or one value for every model
                assert kind in ("<class 'dict'>", " | ".join(sorted(["<class 'dict'>", first_kind]))), (cls, f.name)
                continue
            assert kind == first_kind, f"{f.name}: {first} says {first_kind}, {cls.__name__} says {kind}"
            if default != first_default and default is not dataclasses.MISSING \
                    and first_default is not dataclasses.MISSING:
                assert (cls.__name__, f.name) in WORKFLOW_DEFAULTS or (first, f.name) in WORKFLOW_DEFAULTS, \
                    f"{f.name}: default {first_default!r} in {first}, {default!r} in {cls.__name__}, no reason given"


def test_settings_modules_stay_small_and_carry_no_measured_figure():
    import re
    for path in [ROOT / "kit/core/settings.py", ROOT / "kit/workflows/settings.py",
                 ROOT / "kit/workflows/main_settings.py", ROOT / "kit/core/declare.py",
                 ROOT / "kit/core/values.py", ROOT / "kit/params.py"]:
        text = path.read_text()
        assert len(text.splitlines()) <= 250, path
        assert not re.search(r"\b\d+\.\d{2,}\b|\d+(\.\d+)? (minutes|min)\b", text), path


# the notebook -> the settings its parameters cell is read into; values a notebook sets apart from the
# settings' defaults, each with its reason
NOTEBOOKS = {
    "01_tokenize.py": [stage_settings.TokenizeSettings],
    "02_train.py": [stage_settings.TrainRun, stage_settings.PresetOverrides, stage_settings.TrainSettings],
    "03_infer_two_t4.py": [stage_settings.InferSettings],
    "04_blend.py": [stage_settings.BlendSettings],
    "05_submit.py": [workflow_settings.SubmitSettings],
    "06_pseudo_label.py": [workflow_settings.PseudoLabelSettings],
    "07_one_session.py": [workflow_settings.MainSettings],
}
NOTEBOOK_CHOICES = {
    ("07_one_session.py", "MODELS"): "one Kaggle session on GPUs: a big backbone and the lexical member",
    ("07_one_session.py", "N_FOLDS"): "every training row in play on a GPU: five folds",
    ("07_one_session.py", "TRAIN_FOLDS"): "one fold trained in the session; its held-out rows fit the weights",
    ("07_one_session.py", "MAX_ROWS"): "every training row on a GPU",
    ("07_one_session.py", "MAX_LENGTH"): "each preset's own lengths on a GPU",
}


def _parameters_cell(path) -> dict:
    text = path.read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("\n# %%", 1)[0]
    values = {}
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_every_notebook_parameter_is_a_setting_with_its_default(notebook):
    values = _parameters_cell(ROOT / "notebooks" / notebook)
    fields = {notebook_name(f): f for cls in NOTEBOOKS[notebook] for f in dataclasses.fields(cls) if notebook_name(f)}
    own = {"KIT_DIR", "WHEELS", "TRAINED", "MODELS", "SPLITS", "ISOLATE"} - set(fields)
    unknown = set(values) - set(fields) - own
    assert not unknown, f"{notebook}: parameters that are no setting: {unknown}"
    for name, value in values.items():
        if name in fields and (notebook, name) not in NOTEBOOK_CHOICES:
            default = field_default(fields[name])
            if default is dataclasses.MISSING:  # a required setting: the notebook's example value
                continue
            assert value == default, f"{notebook}: {name} = {value!r}, the setting's default is {default!r}"


def test_a_signature_that_drifts_from_its_settings_does_not_import():
    """The decorator itself holds the written-out signature to the declaration: a renamed, missing or
    re-defaulted parameter is a TypeError when the module is imported, not a test failure later."""
    from kit.core.signature import settings_function
    from kit.core.settings import AverageSettings
    fields = [f.name for f in dataclasses.fields(AverageSettings)]
    defaults = {f.name: field_default(f) for f in dataclasses.fields(AverageSettings)}
    good = ", ".join(n if defaults[n] is dataclasses.MISSING else f"{n}={defaults[n]!r}" for n in fields)
    namespace = {}
    exec(f"def fn({good}):\n    return 1", namespace)
    assert settings_function(AverageSettings)(namespace["fn"])(**{n: None for n in fields}) == 1
    dropped = ", ".join(good.split(", ")[:-1])
    exec(f"def fn({dropped}):\n    return 1", namespace)
    with pytest.raises(TypeError, match="are not the fields of AverageSettings"):
        settings_function(AverageSettings)(namespace["fn"])
    optional = next(n for n in fields if defaults[n] is not dataclasses.MISSING)
    exec(f"def fn({good.replace(f'{optional}={defaults[optional]!r}', f'{optional}=12345')}):\n    return 1",
         namespace)
    with pytest.raises(TypeError, match=f"parameter {optional} defaults to 12345"):
        settings_function(AverageSettings)(namespace["fn"])
