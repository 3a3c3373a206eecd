"""The member protocol and the registry of member types.

A *member type* is how a preset turns a (prompt, A, B) row into three logits (A, B, tie): the
joint head, the pairwise reward head, the lexical model, or any future one. Each is one module
that subclasses :class:`MemberType` and calls :func:`register`. The stages call only the
registry (:func:`get_member_type`) — they never branch on a member type's name.

The protocol, for a preset of that type:

* :meth:`MemberType.encoder` — rows -> the cache's columns (``cache_columns``) plus, for token
  caches, retention diagnostics (the tokenize stage writes them to ``train/test.parquet``);
* :meth:`MemberType.fit` — training rows (+ held-out rows) -> a :class:`Fitted`: what to save in
  the model folder's ``adapter/``, the held-out rows' probabilities, the run's figures;
* :meth:`MemberType.load` — a trained model folder -> a :class:`Predictor`, whose
  ``predict(frame, swap)`` gives (n, 3) logits for the rows as given or with A and B exchanged.

Third-party member types register through the entry-point group ``lora_litee.members`` (each
entry point names a MemberType subclass or instance); they are loaded on the first lookup of a
name the built-ins do not have, in every process — isolated subprocess inference included.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.errors import PresetError
from ..core.log import get_logger
from ..core.metrics import softmax
from ..core.presets import PRESETS, Preset, resolve_preset
from ..core.settings import TrainSettings
from ..ops.backbones import model_path
from ..ops.compute import backbone_params
from ..ops.devices import RuntimeProjection, load_replicas, predict_sharded

log = get_logger(__name__)
ENTRY_POINT_GROUP = "lora_litee.members"


@dataclass
class FitContext:
    """Where and how a member's fit runs (given by the train stage)."""

    out: Path  # the model folder (a neural fit keeps its checkpoints in out/checkpoints)
    fold: int | None  # the held-out fold, None: every row trains
    tokenized: Path  # the cache the rows come from
    resume: bool = True  # resume a killed run of the same recipe from its checkpoints
    restart: bool = False  # a finished run is being replaced: start afresh


@dataclass
class Fitted:
    """What a member's fit returns to the train stage."""

    save: Callable[[Path], None]  # writes the fitted model into a folder (the model folder's adapter/)
    held_probs: np.ndarray | None  # (n_held, 3) probabilities of the held-out rows, in their order
    metrics: dict = field(default_factory=dict)  # train_rows, train_seconds, trainable_params, ... (member's own)
    log: pd.DataFrame | None = None  # a training log (train_log.csv + training.png), if the fit has one
    main_process: bool = True  # False on DDP ranks other than the first: they publish nothing
    cleanup: Callable[[], None] | None = None  # after publishing (e.g. drop checkpoints)
    # weight averaging: the held-out rows' probabilities under the weights not saved (final, swa, ema), by name
    held_others: dict[str, np.ndarray] = field(default_factory=dict)


class Predictor(ABC):
    """A loaded member model. ``predict`` is the protocol; ``predict_proba`` and ``work`` have
    defaults a member type may refine."""

    @abstractmethod
    def predict(self, frame: pd.DataFrame, swap: bool = False, **options) -> np.ndarray:
        """(n, 3) logits for the rows of ``frame`` (a cache table), in row order; ``swap``: with
        A and B exchanged. ``options``: max_tokens, projection, desc (a member may ignore them)."""

    def predict_proba(self, frame: pd.DataFrame, swap: bool = False, **options) -> np.ndarray:
        """(n, 3) probabilities: the softmax of :meth:`predict`."""
        return softmax(self.predict(frame, swap, **options))

    def work(self, frame: pd.DataFrame) -> int:
        """Tokens one pass over ``frame`` costs (0: too cheap to project a run time for)."""
        return 0


class ShardedPredictor(Predictor):
    """A backbone member's predictor: one model replica per device, rows dealt across them
    (:func:`kit.ops.devices.predict_sharded`); ``score(model, rows, pad_id, swap=, **kw)`` gives a
    shard's logits, ``work_columns`` are the token-id columns one pass reads."""

    def __init__(self, replicas, devices: Sequence[str], tokenizer, score: Callable,
                 work_columns: Sequence[str]):
        self.replicas, self.devices, self.tokenizer = replicas, list(devices), tokenizer
        self.score, self.work_columns = score, tuple(work_columns)

    def lengths(self, frame: pd.DataFrame) -> np.ndarray:
        return sum(frame[c].map(len).to_numpy() for c in self.work_columns)

    def work(self, frame: pd.DataFrame) -> int:
        return int(self.lengths(frame).sum())

    def predict(self, frame: pd.DataFrame, swap: bool = False, *, max_tokens: int = 2048,
                projection: RuntimeProjection | None = None, desc: str = "predict") -> np.ndarray:
        frame = frame.reset_index(drop=True)
        return predict_sharded(self.replicas, self.devices, frame, self.score, self.tokenizer.pad_token_id,
                               lengths=self.lengths(frame), max_tokens=max_tokens, projection=projection,
                               desc=desc, swap=swap)


class MemberType(ABC):
    """One kind of member; see the module docstring. Subclasses set the class attributes and
    implement the three methods."""

    name: ClassVar[str]  # the registry key: Preset.member, --member / --head, notebook MEMBER
    uses_backbone: ClassVar[bool] = True  # a Hugging Face backbone and tokenizer (token budget checked)
    uses_tta: ClassVar[bool] = False  # a swapped (B, A) pass adds information (swap TTA)
    is_judge: ClassVar[bool] = False  # trains nothing: compared with the members (kit cv --judges), not blended
    averages_weights: ClassVar[bool] = False  # fit honours weight_average (swa / ema of its trained weights)
    cache_columns: ClassVar[tuple[str, ...]] = ()  # the columns encode() writes besides id and retention

    @abstractmethod
    def encoder(self, preset: Preset, pack: dict | None = None) -> "Encoder":
        """How rows become cache columns for ``preset`` (``pack``: packing options)."""

    @abstractmethod
    def fit(self, preset: Preset, train_rows: pd.DataFrame, held_rows: pd.DataFrame, settings: TrainSettings,
            context: FitContext) -> Fitted:
        """Fit on ``train_rows`` (cache rows with label, fold, targets); score ``held_rows``."""

    @abstractmethod
    def load(self, model_dir: Path, preset: Preset, devices: Sequence[str] = ("cpu",)) -> Predictor:
        """The trained model in ``model_dir`` (its ``adapter/``) ready to predict on ``devices``."""

    def compute_shape(self, preset: Preset) -> tuple[tuple[str, ...], dict] | None:
        """(the token columns one pass reads, the backbone's shape for :mod:`kit.ops.compute`) — what a time
        projection by arithmetic needs; None for a member type without a backbone or token columns, or a
        backbone whose config cannot be read (loading it names the problem)."""
        columns = tuple(getattr(self, "work_columns", ()))
        if not self.uses_backbone or not columns:
            return None
        try:
            return columns, backbone_params(model_path(preset) / "config.json")
        except (PresetError, OSError, KeyError, ValueError):
            return None

    def check_cache(self, frame: pd.DataFrame, where) -> None:
        """A PresetError when a cache table lacks this member type's columns (made for another one)."""
        missing = [c for c in self.cache_columns if c not in frame.columns]
        if missing:
            raise PresetError(f"{where} lacks {missing}: it was not tokenized for the {self.name!r} member type; "
                              f"re-run the tokenize stage with --member {self.name} (notebook MEMBER = {self.name!r})")


@dataclass
class Encoder:
    """What :meth:`MemberType.encoder` returns: ``encode(frame, desc)`` -> cache columns, and the
    packing configuration recorded in meta.json (None: no token budget)."""

    encode: Callable[[pd.DataFrame, str], pd.DataFrame]
    pack_config: object | None = None


def backbone_predictor(model_dir: Path, preset: Preset, devices: Sequence[str], load: Callable, score: Callable,
                       work_columns: Sequence[str]) -> ShardedPredictor:
    """A :class:`ShardedPredictor` with one replica of ``load(model_dir, preset[, device_map])`` per device."""
    replicas, tokenizer = load_replicas(model_dir, preset, devices, load)
    return ShardedPredictor(replicas, devices, tokenizer, score, work_columns)


# -- the registry ----------------------------------------------------------------------------------
_REGISTRY: dict[str, MemberType] = {}


def register(member: MemberType | type[MemberType]) -> MemberType:
    """Add a member type (an instance or a class, instantiated here) under its ``name``; returns it.
    Usable as a class decorator. A second type under a taken name is an error."""
    instance = member() if isinstance(member, type) else member
    if not isinstance(instance, MemberType):
        raise PresetError(f"{member!r} is not a kit.members.MemberType")
    taken = _REGISTRY.get(instance.name)
    if taken is not None and type(taken) is not type(instance):
        raise PresetError(f"member type {instance.name!r} is already registered ({type(taken).__name__})")
    _REGISTRY[instance.name] = instance
    return member


def _load_entry_points() -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _REGISTRY:
            continue
        try:
            register(entry.load())
        except Exception as e:  # a broken plug-in is named, never silently missing
            raise PresetError(f"member type {entry.name!r} (entry point {entry.value!r} in {ENTRY_POINT_GROUP}) "
                              f"failed to load: {type(e).__name__}: {e}") from None


def get_member_type(name: str) -> MemberType:
    """The registered member type ``name`` (entry points are searched when it is not built in)."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise PresetError(f"unknown member type {name!r}; choose one of {sorted(_REGISTRY)} (CLI --member/--head, "
                          f"notebook MEMBER), or register one (kit.members.register, entry point group "
                          f"{ENTRY_POINT_GROUP!r})")
    return _REGISTRY[name]


def resolve_member_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Preset:
    """:func:`kit.core.presets.resolve_preset`, after loading the entry points' member types when
    ``name`` is not a preset yet (a plug-in registers its presets when it loads)."""
    try:
        return resolve_preset(name, overrides)
    except PresetError:
        if name in PRESETS:
            raise
        _load_entry_points()
        return resolve_preset(name, overrides)


def member_types() -> dict[str, MemberType]:
    """Every registered member type by name (built-ins and entry points)."""
    _load_entry_points()
    return dict(_REGISTRY)
