"""Architectures by the name a checkpoint's spec records."""

from __future__ import annotations

from typing import Any

from lopt.base import LearnedOptimizer, SpecError
from lopt.hand_designed import Adam
from lopt.lstm_lopt import LSTMLOpt
from lopt.mlp_lopt import MLPLOpt
from lopt.momentum_mlp_lopt import MomentumMLPLOpt
from lopt.normalized_mlp import NormalizedMLPLOpt
from lopt.velo import VeLO

ARCHITECTURES: dict[str, type[LearnedOptimizer]] = {
    cls.architecture: cls for cls in (MLPLOpt, LSTMLOpt, Adam, MomentumMLPLOpt, VeLO, NormalizedMLPLOpt)}


def from_spec(spec: dict[str, Any]) -> LearnedOptimizer:
    """The optimizer a spec describes (`LearnedOptimizer.spec()` output, e.g. read from a checkpoint)."""
    architecture = spec.get("architecture")
    if architecture not in ARCHITECTURES:
        raise SpecError(f"unknown learned-optimizer architecture {architecture!r}; "
                        f"known: {', '.join(sorted(ARCHITECTURES))}")
    settings = dict(spec.get("settings", {}))
    if "parameterization" in spec:
        settings["parameterization"] = spec["parameterization"]
    try:
        return ARCHITECTURES[architecture](**settings)
    except TypeError as error:
        raise SpecError(f"settings {sorted(settings)} do not fit {architecture}: {error}") from None
