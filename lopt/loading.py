"""The practitioners' entry point: a saved or shipped learned optimizer as an Optax transform."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import checkpoints
from lopt import learned_optimization
from lopt.base import LearnedOptimizer
from lopt.registry import SpecError, from_spec
from lopt.types import MetaParams, Roles


# The shipped optimizer the Quickstart and the main job use, and what the benchmarks measure by default.
DEFAULT = "orthogonal_mixed_kinds"


@dataclasses.dataclass(frozen=True)
class PretrainedInfo:
    name: str
    architecture: str
    parameterization: str
    description: str
    directory: Path


def list_pretrained() -> list[PretrainedInfo]:
    """The learned optimizers shipped inside the package, by name."""
    found = []
    root = checkpoints.PRETRAINED_DIRECTORY
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if (directory / checkpoints.store.SPEC_FILE).is_file():
            spec = checkpoints.load_spec(directory)
            found.append(PretrainedInfo(name=directory.name, architecture=spec["optimizer"]["architecture"],
                                        parameterization=spec["optimizer"]["parameterization"],
                                        description=spec.get("description", ""), directory=directory))
    return found


def save(directory: str | os.PathLike, optimizer: LearnedOptimizer, theta: MetaParams, *,
         description: str = "", **provenance: Any) -> Path:
    """Saves theta with the optimizer's spec; provenance (task family, estimator, outer steps, ...) is
    recorded as given, and `description` is what `list_pretrained` shows. Refuses a theta that does not
    fit the optimizer."""
    check_theta(optimizer, theta)
    spec = {"optimizer": optimizer.spec(), "provenance": provenance}
    if description:
        spec["description"] = description
    return checkpoints.save(directory, theta, spec)


def load_optimizer(name_or_path: str | os.PathLike) -> tuple[LearnedOptimizer, MetaParams, dict[str, Any]]:
    """(architecture, theta, full spec) of a shipped optimizer's name, a checkpoint directory, or a
    learned_optimization checkpoint (its `params` file or their directory, with `config.gin` beside it)."""
    shipped = {info.name: info.directory for info in list_pretrained()}
    if str(name_or_path) in shipped:
        directory = shipped[str(name_or_path)]
    else:
        directory = Path(name_or_path)
        if not directory.exists():
            raise checkpoints.CheckpointError(
                f"{name_or_path!r} is neither a shipped learned optimizer (shipped: "
                f"{', '.join(sorted(shipped)) or 'none yet'}) nor an existing checkpoint directory "
                "(ours, or learned_optimization's params and config.gin)")
        if learned_optimization.is_checkpoint(directory):
            optimizer, theta, provenance = learned_optimization.read_checkpoint(directory)
            check_theta(optimizer, theta, where=str(directory))
            return optimizer, jax.tree.map(jnp.asarray, theta), {"optimizer": optimizer.spec(),
                                                                 "provenance": provenance}
    theta, spec = checkpoints.load(directory)
    if "optimizer" not in spec:
        raise SpecError(f"{directory} is a checkpoint but holds no learned optimizer (its spec has no 'optimizer')")
    optimizer = from_spec(spec["optimizer"])
    check_theta(optimizer, theta, where=str(directory))
    return optimizer, jax.tree.map(jnp.asarray, theta), spec


def load(name_or_path: str | os.PathLike, *, num_steps: int, roles: Roles | None = None
         ) -> optax.GradientTransformationExtraArgs:
    """A learned optimizer as an Optax transform, to use in place of `optax.adam`.

    num_steps: the length of the training run (the optimizer's time features depend on it).
    roles: for muP optimizers, each parameter tensor's role ("input" | "hidden" | "output"), from
        `task.roles(params)` or `lopt.infer_roles(params_at_width_a, params_at_width_b)`.
    """
    optimizer, theta, _ = load_optimizer(name_or_path)
    return optimizer.transform(theta, num_steps, roles)


def load_rule(name_or_path: str | os.PathLike, *, num_steps: int, roles: Roles | None = None
              ) -> optax.GradientTransformation:
    """The learned update direction alone, without the learning rate and weight decay that `load` adds,
    for a chain of your own:

        optax.chain(lopt.load_rule(name, num_steps=T, roles=roles), optax.add_decayed_weights(1e-2),
                    optax.scale_by_learning_rate(my_schedule))

    Only rules that leave the step size to a schedule have one (normalized_mlp); the others set their
    own step sizes, and `load` is the way to use them.
    """
    optimizer, theta, _ = load_optimizer(name_or_path)
    if not hasattr(optimizer, "rule"):
        raise SpecError(f"{name_or_path}: a {optimizer.architecture} optimizer sets its own step sizes and has no "
                        "separate rule to chain with a schedule; use lopt.load")
    return optimizer.rule(theta, num_steps, roles)


def convert_learned_optimization(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Writes a learned_optimization checkpoint (params file or its directory, config.gin beside it) in
    our format, atomically, so that it loads like any of ours; the source is recorded as provenance."""
    optimizer, theta, provenance = learned_optimization.read_checkpoint(source)
    return save(destination, optimizer, theta, **provenance)


def check_theta(optimizer: LearnedOptimizer, theta: MetaParams, where: str = "theta") -> None:
    """Raises SpecError naming the first tensor whose presence, shape or dtype does not fit optimizer."""
    expected = jax.eval_shape(optimizer.init, jax.random.key(0))
    expected_leaves = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    actual_leaves = dict(jax.tree_util.tree_flatten_with_path(theta)[0])
    name = jax.tree_util.keystr
    for path in expected_leaves.keys() - actual_leaves.keys():
        raise SpecError(f"{where}: {optimizer.architecture} needs {name(path)}, which is missing")
    for path in actual_leaves.keys() - expected_leaves.keys():
        raise SpecError(f"{where}: {name(path)} is not a parameter of {optimizer.architecture}")
    for path, want in sorted(expected_leaves.items(), key=lambda item: name(item[0])):
        have = actual_leaves[path]
        if tuple(have.shape) != tuple(want.shape) or jnp.dtype(have.dtype) != jnp.dtype(want.dtype):
            raise SpecError(f"{where}: {name(path)} is {jnp.dtype(have.dtype).name}{list(have.shape)}, "
                            f"{optimizer.architecture} with settings {optimizer.settings()} needs "
                            f"{jnp.dtype(want.dtype).name}{list(want.shape)}")
