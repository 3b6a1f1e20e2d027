"""The optimizers a sweep compares: a learned optimizer (a shipped name or a checkpoint directory) or a
hand-designed baseline tuned over a learning-rate grid, or at the one setting its users start from (the
self-tuning ruleset's `starting_point`).

Every optimizer is a pure function `make(hyper, num_steps, roles) -> Optax transform` plus the hyper
values to try (the candidates). `hyper` is an argument of the compiled run, not a constant in it, so
all of a baseline's learning rates share one compilation, and a learned optimizer's theta is passed
like any other array.

Any Optax optimizer competes as the built-in baselines do, tuned over its learning rates:

    lion = evaluate.optimizer("lion", lambda lr, T: optax.lion(optax.cosine_decay_schedule(lr, T)),
                              rates=(1e-4, 3e-4, 1e-3))
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
import tasks
from lopt.baselines import ADAM_LEARNING_RATES, ADAMW_WEIGHT_DECAY, BASELINES, warmup_adamw

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
    identity: str  # what its runs are cached under: the rule and, for a learned one, hashes of theta and code
    parameterization: str | None  # the model parameterization it trains: "mup", "sp", or None (as given)
    baseline: bool  # a hand-designed baseline (or the user's), tuned over learning rates
    spec: dict[str, Any] | None = None  # a learned optimizer's checkpoint spec (its provenance)
    user: bool = False  # made by `optimizer`: its cache key is what the user gave, not its code

    @property
    def tuned(self) -> bool:
        return len(self.candidates) > 1


REFERENCE_BASELINE = "adam"  # speedups are measured against tuned Adam


def _rate_tuned(name: str, make: Callable[[Any, int, Any], optax.GradientTransformation], rates, rule: str,
                identity: str, parameterization: str | None, user: bool = False) -> EvalOptimizer:
    """An optimizer tuned over a grid of learning rates: the one construction behind the built-in
    baselines and the user's (`optimizer`). Each rate is a candidate; a sweep runs them all and reports
    the best, on each metric."""
    candidates = tuple(Candidate(f"lr={rate!r}", jnp.asarray(rate, jnp.float32)) for rate in rates)
    return EvalOptimizer(name=name, make=make, candidates=candidates, rule=rule, identity=identity,
                         parameterization=parameterization, baseline=True, user=user)


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
    return _rate_tuned(name, make, grid, rule=base, identity=f"{base}: {settings}", parameterization=parameterization)


# The self-tuning ruleset's baselines (tuning="none"), each at the setting its users start from, never
# tuned: Adam at 1e-3, the default of Keras's and PyTorch's Adam; AdamW with warmup-cosine at 1e-3 and
# weight decay 0.1, the decay of GPT-3's and Moonshot's recipes; Muon at 1e-3. optax.contrib.muon
# has no default learning rate; ours rescales its orthogonalized steps to AdamW's RMS (consistent_rms 0.2,
# which optax recommends), the rule Moonshot published so that AdamW's settings carry over unchanged.
STARTING_RATES = {"adam": 1e-3, "adamw_cosine": 1e-3, "muon": 1e-3}
STARTING_WEIGHT_DECAY = 0.1  # AdamW's; Muon keeps its baseline's (lopt.baselines)


def starting_point(name: str) -> EvalOptimizer:
    """The baseline `name` (one of STARTING_RATES) at its starting point, under its own name: one
    candidate, so nothing is tuned. Adam and Muon are their baselines at one rate, and share those runs'
    cache entries."""
    if name not in STARTING_RATES:
        raise OptimizerError(f"baseline {name!r} has no starting point; the self-tuning ruleset runs "
                             f"{', '.join(STARTING_RATES)}, or any baseline at a rate you give (NAME@RATE)")
    rate = STARTING_RATES[name]
    if name != "adamw_cosine":
        return dataclasses.replace(baseline(f"{name}@{rate!r}"), name=name)
    settings = BASELINES[name][3]
    return _rate_tuned(name, warmup_adamw("cosine", STARTING_WEIGHT_DECAY), (rate,), rule=f"{name} weight decay "
                       f"{STARTING_WEIGHT_DECAY!r}", identity=f"{name}: {settings}; weight_decay="
                       f"{STARTING_WEIGHT_DECAY!r} in place of {ADAMW_WEIGHT_DECAY!r}", parameterization="sp")


def starting_points_text() -> str:
    """The starting points in words, for the summary."""
    rates = ", ".join(f"{name} {rate:g}" for name, rate in STARTING_RATES.items())
    return f"learning rates {rates}; AdamW's weight decay {STARTING_WEIGHT_DECAY:g}"


def optimizer(name: str, make: Callable[..., optax.GradientTransformation], *,
              rates: Sequence[float] = ADAM_LEARNING_RATES, version: str | None = None,
              parameterization: str | None = "sp") -> EvalOptimizer:
    """Any Optax optimizer as a competitor, tuned over `rates` as the built-in baselines are over theirs.

    make(learning_rate, num_steps) -> optax.GradientTransformation(ExtraArgs); learning_rate is a traced
        float32 scalar (all rates share one compiled program), so use it in arithmetic and schedules,
        never in Python control flow; num_steps is the run's length, for schedules. A make with a third
        parameter also gets the task's roles (a pytree like the params of "input" / "hidden" / "output"),
        for an optimizer that treats hidden matrices apart, e.g.
        `lambda lr, n, roles: optax.contrib.muon(lr, muon_weight_dimension_numbers=lopt.muon_dimension_numbers(roles))`.
    rates: the learning rates tried on every task (default: Adam's grid); reported at the best per metric,
        and flagged where the best is the first or last.
    parameterization: the model it trains where a suite's task has one ("sp", the practitioner's model,
        as Adam; "mup"; None: as the suite gives it). Tasks passed as objects are trained as they are.

    Its runs are cached across sweeps, as the baselines' are, under `identity`: the name, the rates and
    `version`, nothing of make's code (which cannot be hashed reliably). Changing make without changing
    one of those reuses the old runs: give a new `version`, or clear them (`evaluate.clear_cache(workdir,
    optimizer=name)`, `python -m evaluate ... --clear-cache NAME`)."""
    if not (isinstance(name, str) and name.strip() == name and name and ":" not in name):
        raise OptimizerError(f"optimizer name {name!r}: must be a non-empty string without ':' or surrounding "
                             "spaces (': ' ends the name in its cache key)")
    if not callable(make):
        raise OptimizerError(f"optimizer {name!r}: make must be a function (learning_rate, num_steps) -> "
                             f"optax.GradientTransformation, not {type(make).__name__}")
    rates = (rates,) if isinstance(rates, (int, float)) else tuple(rates)
    if not rates or not all(isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate)
                            and rate > 0 for rate in rates):
        raise OptimizerError(f"optimizer {name!r}: rates={rates!r} must be one or more positive finite numbers")
    rates = tuple(float(rate) for rate in rates)
    if len(set(rates)) != len(rates):
        raise OptimizerError(f"optimizer {name!r}: rates={rates!r} repeat a value")
    if version is not None and not isinstance(version, str):
        raise OptimizerError(f"optimizer {name!r}: version={version!r} must be a string or None")
    if parameterization not in (None, *tasks.PARAMETERIZATIONS):
        raise OptimizerError(f"optimizer {name!r}: parameterization={parameterization!r} must be one of "
                             f"{', '.join(tasks.PARAMETERIZATIONS)} or None")

    takes_roles = _takes_three_arguments(make)

    def make_transform(rate, num_steps, roles):
        transform = make(rate, num_steps, roles) if takes_roles else make(rate, num_steps)
        if not isinstance(transform, optax.GradientTransformation):
            raise OptimizerError(f"optimizer {name!r}: make(learning_rate, num_steps) returned "
                                 f"{type(transform).__name__}, not an optax.GradientTransformation")
        return transform

    identity = f"{name}: evaluate.optimizer(rates={list(rates)!r}, version={version!r})"
    # Runs share a compiled program only with runs of this very make (the program holds it, so its id
    # is not reused while the program is kept).
    return _rate_tuned(name, make_transform, rates, rule=f"evaluate.optimizer {name} {id(make):#x}",
                       identity=identity, parameterization=parameterization, user=True)


def _takes_three_arguments(make: Callable) -> bool:
    try:
        inspect.signature(make).bind(None, None, None)
    except (TypeError, ValueError):  # two parameters only, or no signature to read: called with two
        return False
    return True


def theta_digest(theta: Any) -> str:
    """A short hash of theta's values, so cached results of an edited checkpoint are never reused."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def code_digest(optimizer: lopt.LearnedOptimizer) -> str:
    """A short hash of the source of the lopt package and of every module outside it that defines a class
    of the optimizer's (a user's own architecture and its bases): a learned optimizer's cached runs are
    never reused after an edit of the code its update runs (as saved on disk: reload an edited module
    before a sweep)."""
    package = Path(lopt.__file__).resolve().parent
    files = {path.resolve() for path in package.rglob("*.py")}
    for cls in type(optimizer).__mro__:
        module = sys.modules.get(cls.__module__)
        source = getattr(module, "__file__", None)
        if (cls.__module__.partition(".")[0] in sys.stdlib_module_names or cls.__module__ == "builtins"
                or (source is not None and Path(source).resolve().parent == package)):
            continue
        if source is None or not Path(source).is_file():
            raise OptimizerError(f"{type(optimizer).__qualname__}: its class {cls.__qualname__} is defined outside "
                                 "a source file (a notebook cell, stdin), so its code cannot be hashed for the run "
                                 "cache; define it in a module")
        files.add(Path(source).resolve())
    digest = hashlib.sha256()
    for path in sorted(files):
        source = path.read_bytes()
        name = str(path.relative_to(package)) if path.is_relative_to(package) else str(path)
        digest.update(f"{name}\0{len(source)}\0".encode() + source)
    return digest.hexdigest()[:16]


# NAME@tuned: the multipliers of a learned optimizer's whole step tried, half a decade apart around the
# step meta-training learned, as a practitioner tunes a baseline's learning rate.
LEARNED_STEP_SCALES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def learned(name_or_path: str | os.PathLike, name: str | None = None, scale: str = "") -> EvalOptimizer:
    """A learned optimizer from a shipped name or a checkpoint directory. scale: "" for the optimizer as
    meta-trained; a number multiplies its whole step (learning rate and weight decay alike, as a
    learning-rate multiplier does for AdamW); "tuned" tries every LEARNED_STEP_SCALES multiplier and is
    reported at the best one per metric, as the baselines are at their best learning rate."""
    try:
        optimizer, theta, spec = lopt.load_optimizer(name_or_path)
    except ValueError as error:  # CheckpointError, SpecError: not a checkpoint, or not of an optimizer
        raise OptimizerError(f"{name_or_path}: not a learned optimizer we can load: {error}") from None
    path = Path(name_or_path)
    # A meta_train workdir's optimizer is WORKDIR/optimizer: the workdir's name says more.
    label = name or ((str(name_or_path) if not path.exists() else
                      path.absolute().parent.name if path.name == "optimizer" else path.name)
                     + (f"@{scale}" if scale else ""))
    rule = json.dumps(optimizer.spec(), sort_keys=True)
    identity = f"{rule}: theta {theta_digest(theta)}, code {code_digest(optimizer)}"
    if not scale:
        return EvalOptimizer(name=label, make=optimizer.transform, candidates=(Candidate("theta", theta),),
                             rule=rule, identity=identity, parameterization=optimizer.parameterization,
                             baseline=False, spec=spec)
    scales = LEARNED_STEP_SCALES if scale == "tuned" else (_step_scale(name_or_path, scale),)

    def make(hyper, num_steps, roles):
        theta, multiplier = hyper
        return optax.chain(optimizer.transform(theta, num_steps, roles), optax.scale(multiplier))
    candidates = tuple(Candidate(f"theta x{value!r}", (theta, jnp.asarray(value, jnp.float32))) for value in scales)
    return EvalOptimizer(name=label, make=make, candidates=candidates, rule=f"{rule}, step scaled",
                         identity=f"{identity}, step scaled", parameterization=optimizer.parameterization,
                         baseline=False, spec=spec)


def _step_scale(name_or_path, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise OptimizerError(f"{name_or_path}@{text}: after '@' a learned optimizer takes a positive step "
                             "multiplier or 'tuned'")
    return value


def resolve(name_or_path: str | os.PathLike) -> EvalOptimizer:
    """A baseline name ("adam", "sgdm@0.1"), a shipped learned optimizer's name, or a checkpoint path;
    "LABEL=PATH" names a learned optimizer in tables and plots; a learned optimizer followed by "@2" has
    its whole step doubled, by "@tuned" its step multiplier tuned (see `learned`)."""
    text = str(name_or_path)
    if text.partition("@")[0] in BASELINES:
        return baseline(text)
    shipped = [info.name for info in lopt.list_pretrained()]

    def learned_target(target: str) -> tuple[str, str] | None:
        """(name or path, step scale) if target names a learned optimizer, with or without "@SCALE"."""
        if target in shipped or Path(target).exists():
            return target, ""
        base, at, scale = target.rpartition("@")
        return (base, scale) if at and (base in shipped or Path(base).exists()) else None

    label, separator, target = text.partition("=")
    found = learned_target(target) if separator and label else None
    if found is None:
        label, found = None, learned_target(text)
    if found is not None:
        return learned(found[0], name=label, scale=found[1])
    raise OptimizerError(
        f"unknown optimizer {text!r}: not a baseline ({', '.join(BASELINES)}, optionally NAME@LEARNING_RATE), "
        f"not a shipped learned optimizer ({', '.join(shipped) or 'none shipped yet'}, optionally "
        "NAME@STEP_MULTIPLIER or NAME@tuned), and no such checkpoint directory")
