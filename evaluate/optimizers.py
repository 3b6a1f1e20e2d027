"""The optimizers a sweep compares: a learned optimizer (a shipped name or a checkpoint directory) or a
hand-designed baseline tuned over a learning-rate grid.

Every optimizer is a pure function `make(hyper, num_steps, roles) -> Optax transform` plus the hyper
values to try (the candidates). `hyper` is an argument of the compiled run, not a constant in it, so
all of a baseline's learning rates share one compilation, and a learned optimizer's theta is passed
like any other array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt

# Learning-rate grids, half a decade apart (8 each), wide enough that the best value lies inside on
# the registered tasks; a best value at either end is flagged in the results.
ADAM_LEARNING_RATES = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# muAdam divides hidden-layer steps by their fan-in, so its base learning rate sits higher.
MUADAM_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SGD_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
# Muon's steps at consistent RMS 0.2 (below) are smaller per unit of rate than Adam's: half a decade up.
MUON_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
ADAMW_WEIGHT_DECAY = 1e-2  # decoupled, as PyTorch's AdamW default
SGD_MOMENTUM = 0.9
WARMUP_FRACTION = 0.05  # of the run: linear warmup from 0, then cosine decay to 0 at the last step
# Muon's orthogonalized steps are rescaled to about the RMS of AdamW's (Moonshot's consistent-RMS rule,
# the 0.2 optax recommends), so one learning rate serves its matrices and the Adam-trained rest.
MUON_CONSISTENT_RMS = 0.2


class OptimizerError(ValueError):
    """An optimizer name or path that names nothing we can run."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One setting of an optimizer: a learning rate of a baseline's grid, or a learned theta."""

    label: str  # "lr=0.001" or "theta"
    hyper: Any  # a pytree of float32 arrays; every candidate of an optimizer has the same structure


@dataclasses.dataclass(frozen=True, eq=False)
class EvalOptimizer:
    name: str  # as tables and plots show it
    make: Callable[[Any, int, Any], optax.GradientTransformation]  # (hyper, num_steps, roles) -> transform
    candidates: tuple[Candidate, ...]
    rule: str  # the update rule apart from hyper: runs of one rule share a compiled program
    identity: str  # what its results are cached under: the rule and, for a learned one, a hash of theta
    parameterization: str | None  # the model parameterization it trains: "mup", "sp", or None (as given)
    baseline: bool  # a hand-designed baseline: results cached across sweeps
    spec: dict[str, Any] | None = None  # a learned optimizer's checkpoint spec (its provenance)

    @property
    def tuned(self) -> bool:
        return len(self.candidates) > 1


def _learning_rates(rates) -> tuple[Candidate, ...]:
    return tuple(Candidate(f"lr={rate!r}", jnp.asarray(rate, jnp.float32)) for rate in rates)


def warmup_cosine(peak: Any, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over the first WARMUP_FRACTION of the run, then cosine decay to exactly 0 at
    the run's last step (count num_steps - 1), with optax's schedule."""
    warmup = max(1, round(WARMUP_FRACTION * num_steps))
    shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=warmup,
                                               decay_steps=max(num_steps - 1, warmup + 1), end_value=0.0)
    # The peak is traced (a grid's rates share one compilation); optax's schedule branches on it.
    return lambda count: peak * shape(count)


def muon_dimension_numbers(roles) -> Any:
    """Which tensors Muon orthogonalizes: the hidden ones (muP role "hidden", at least 2-D; a convolution
    kernel (h, w, in, out) as the matrix (h * w * in, out), as Muon's authors treat conv filters).
    Embeddings, readouts, biases and norms (None) go to Adam, as Muon is used in practice."""
    def rule(role, leaf):
        rank = len(getattr(leaf, "shape", ()))  # optax also passes masked trees: MaskedNode has no shape
        if role != "hidden" or rank < 2:
            return None
        return optax.contrib.MuonDimensionNumbers(reduction_axis=tuple(range(rank - 1)), output_axis=rank - 1)
    return lambda params: jax.tree.map(rule, roles, params)


def _muon(rate, num_steps, roles):
    return optax.contrib.muon(warmup_cosine(rate, num_steps), weight_decay=ADAMW_WEIGHT_DECAY,
                              adam_weight_decay=ADAMW_WEIGHT_DECAY, consistent_rms=MUON_CONSISTENT_RMS,
                              muon_weight_dimension_numbers=muon_dimension_numbers(roles))


def _muadam(hyper, num_steps, roles):
    return lopt.Adam(parameterization="mup").transform(
        {**lopt.Adam().init(None), "log_learning_rate": jnp.log(hyper)}, num_steps, roles)


# name: (make, default grid, model parameterization, every setting besides the learning rate: part of
# the cache key, so a changed default never returns results of the old one)
BASELINES: dict[str, tuple[Callable, tuple[float, ...], str, str]] = {
    "adam": (lambda rate, num_steps, roles: optax.adam(rate), ADAM_LEARNING_RATES, "sp",
             "optax.adam(b1=0.9, b2=0.999, eps=1e-8)"),
    "adamw": (lambda rate, num_steps, roles: optax.adamw(rate, weight_decay=ADAMW_WEIGHT_DECAY),
              ADAM_LEARNING_RATES, "sp", f"optax.adamw(b1=0.9, b2=0.999, eps=1e-8, weight_decay={ADAMW_WEIGHT_DECAY!r})"),
    "adamw_cosine": (lambda rate, num_steps, roles: optax.adamw(warmup_cosine(rate, num_steps),
                                                                weight_decay=ADAMW_WEIGHT_DECAY),
                     ADAM_LEARNING_RATES, "sp", f"optax.adamw(b1=0.9, b2=0.999, eps=1e-8, weight_decay="
                     f"{ADAMW_WEIGHT_DECAY!r}), warmup {WARMUP_FRACTION!r} then cosine to 0"),
    "muon": (_muon, MUON_LEARNING_RATES, "sp",
             f"optax.contrib.muon(beta=0.95, nesterov, ns_steps=5, consistent_rms={MUON_CONSISTENT_RMS!r}, "
             f"weight_decay={ADAMW_WEIGHT_DECAY!r}, adam_weight_decay={ADAMW_WEIGHT_DECAY!r}) on hidden "
             f"matrices, warmup {WARMUP_FRACTION!r} then cosine to 0"),
    "muadam": (_muadam, MUADAM_LEARNING_RATES, "mup", json.dumps(lopt.Adam(parameterization="mup").spec(),
                                                                  sort_keys=True)),
    "sgdm": (lambda rate, num_steps, roles: optax.sgd(rate, momentum=SGD_MOMENTUM), SGD_LEARNING_RATES, "sp",
             f"optax.sgd(momentum={SGD_MOMENTUM!r}, nesterov=False)"),
}
BASELINE_DESCRIPTIONS = {
    "adam": f"Adam, learning rate tuned over {len(ADAM_LEARNING_RATES)} values "
            f"{ADAM_LEARNING_RATES[0]:g}-{ADAM_LEARNING_RATES[-1]:g}",
    "adamw": f"AdamW (weight decay {ADAMW_WEIGHT_DECAY:g}), the same grid as Adam",
    "adamw_cosine": f"AdamW (weight decay {ADAMW_WEIGHT_DECAY:g}), linear warmup over {WARMUP_FRACTION:.0%} of "
                    "the run, cosine decay to 0; the same grid as Adam",
    "muon": f"Muon (optax.contrib.muon) on the hidden matrices, AdamW on the rest, warmup-cosine; "
            f"{len(MUON_LEARNING_RATES)} values {MUON_LEARNING_RATES[0]:g}-{MUON_LEARNING_RATES[-1]:g}",
    "muadam": f"muAdam (Adam with hidden steps / fan_in), {len(MUADAM_LEARNING_RATES)} values "
              f"{MUADAM_LEARNING_RATES[0]:g}-{MUADAM_LEARNING_RATES[-1]:g}",
    "sgdm": f"SGD with momentum {SGD_MOMENTUM:g}, {len(SGD_LEARNING_RATES)} values "
            f"{SGD_LEARNING_RATES[0]:g}-{SGD_LEARNING_RATES[-1]:g}",
}
REFERENCE_BASELINE = "adam"  # speedups are measured against tuned Adam


def baseline(name: str) -> EvalOptimizer:
    """A tuned baseline ("adam") or one at a fixed learning rate ("adam@0.001")."""
    base, _, rate = name.partition("@")
    if base not in BASELINES:
        raise OptimizerError(f"unknown baseline {base!r}; baselines: {', '.join(BASELINES)}")
    make, grid, parameterization, settings = BASELINES[base]
    if rate:
        try:
            grid = (float(rate),)
        except ValueError:
            raise OptimizerError(f"{name!r}: the learning rate after '@' must be a number") from None
        if not (math.isfinite(grid[0]) and grid[0] > 0):
            raise OptimizerError(f"{name!r}: the learning rate must be positive and finite")
    return EvalOptimizer(name=name, make=make, candidates=_learning_rates(grid), rule=base,
                         identity=f"{base}: {settings}", parameterization=parameterization, baseline=True)


def theta_digest(theta: Any) -> str:
    """A short hash of theta's values, so cached results of an edited checkpoint are never reused."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def learned(name_or_path: str | os.PathLike, name: str | None = None) -> EvalOptimizer:
    """A learned optimizer from a shipped name or a checkpoint directory."""
    try:
        optimizer, theta, spec = lopt.load_optimizer(name_or_path)
    except ValueError as error:  # CheckpointError, SpecError: not a checkpoint, or not of an optimizer
        raise OptimizerError(f"{name_or_path}: not a learned optimizer we can load: {error}") from None
    path = Path(name_or_path)
    # A meta_train workdir's optimizer is WORKDIR/optimizer: the workdir's name says more.
    label = name or (str(name_or_path) if not path.exists() else
                     path.absolute().parent.name if path.name == "optimizer" else path.name)
    return EvalOptimizer(name=label, make=optimizer.transform, candidates=(Candidate("theta", theta),),
                         rule=json.dumps(optimizer.spec(), sort_keys=True),
                         identity=f"{json.dumps(optimizer.spec(), sort_keys=True)}: theta {theta_digest(theta)}",
                         parameterization=optimizer.parameterization, baseline=False, spec=spec)


def resolve(name_or_path: str | os.PathLike) -> EvalOptimizer:
    """A baseline name ("adam", "sgdm@0.1"), a shipped learned optimizer's name, or a checkpoint path;
    "LABEL=PATH" names a learned optimizer in tables and plots."""
    text = str(name_or_path)
    if text.partition("@")[0] in BASELINES:
        return baseline(text)
    shipped = [info.name for info in lopt.list_pretrained()]
    label, separator, target = text.partition("=")
    if separator and label and (target in shipped or Path(target).exists()):
        return learned(target, name=label)
    if text in shipped or Path(text).exists():
        return learned(text)
    raise OptimizerError(
        f"unknown optimizer {text!r}: not a baseline ({', '.join(BASELINES)}, optionally NAME@LEARNING_RATE), "
        f"not a shipped learned optimizer ({', '.join(shipped) or 'none shipped yet'}), "
        "and no such checkpoint directory")
