"""Layer 4 — member types: how a preset turns rows into three logits, one module per type.

The package's ``__all__`` is the registry's face: importing :mod:`kit.members` registers the
built-in types (``joint``, ``pairwise``, ``lexical``, ``zeroshot``); :func:`register` adds one (a module of
your own, or an entry point in the group ``lora_litee.members``); :func:`get_member_type`
looks one up — the only way the stages reach a member type.
"""
from .base import (ENTRY_POINT_GROUP, Encoder, FitContext, Fitted, MemberType, Predictor, ShardedPredictor,
                   get_member_type, member_types, register, resolve_member_preset)
from .joint import JointMember
from .lexical import LexicalMember
from .pairwise import PairwiseMember
from .zeroshot import ZeroShotMember

__all__ = ["ENTRY_POINT_GROUP", "Encoder", "FitContext", "Fitted", "MemberType", "Predictor", "ShardedPredictor",
           "get_member_type", "member_types", "register", "resolve_member_preset", "JointMember", "PairwiseMember", "LexicalMember",
           "ZeroShotMember"]
