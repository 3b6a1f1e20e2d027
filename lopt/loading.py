"""The practitioners' entry point: a saved or shipped learned optimizer as an Optax transform."""

from __future__ import annotations

import dataclasses
import os
import warnings
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
DEFAULT = "orthogonal_mlp"

# Names shipped before, each now a shipped checkpoint (or one kept under former/) with load-time
# settings: what they loaded, they still load.
FORMER_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "orthogonal_mixed_kinds": ("orthogonal_mlp", {}),
    "orthogonal_mixed_linear": ("orthogonal_mlp", {"schedule": "linear"}),
    "orthogonal_mixed_fit": ("orthogonal_mlp", {"conv_step": 1.0, "embedding_step": 1.0}),
    "orthogonal_mixed": ("orthogonal_mlp", {"conv_step": 1.0, "embedding_step": 1.0, "fit_decay": False}),
    "mulo_small_fc": ("mulo", {}),
    "normalized_mixed": ("former/normalized_mixed", {}),
    "sp_small_fc": ("former/sp_small_fc", {}),
}


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


def load_optimizer(name_or_path: str | os.PathLike, **settings: Any
                   ) -> tuple[LearnedOptimizer, MetaParams, dict[str, Any]]:
    """(architecture, theta, full spec) of a shipped optimizer's name, a checkpoint directory, or a
    learned_optimization checkpoint (its `params` file or their directory, with `config.gin` beside it),
    with harness settings changed (see `load`)."""
    name = str(name_or_path)
    if name in FORMER_NAMES:
        name, former_settings = FORMER_NAMES[name]
        setting_text = ", ".join(f"{key}={value!r}" for key, value in former_settings.items())
        warnings.warn(f"{name_or_path!r} is now lopt.load({name!r}{', ' if setting_text else ''}{setting_text})",
                      FutureWarning, stacklevel=3)
        settings = {**former_settings, **settings}
    optimizer, theta, spec = _read(name)
    if settings:
        optimizer = optimizer.with_settings(**settings)
        theta = refit_theta(optimizer, theta)
        spec = {**spec, "optimizer": optimizer.spec()}
    return optimizer, theta, spec


def _read(name_or_path: str) -> tuple[LearnedOptimizer, MetaParams, dict[str, Any]]:
    shipped = {info.name: info.directory for info in list_pretrained()}
    shipped.update((name, checkpoints.PRETRAINED_DIRECTORY / target) for name, (target, _) in FORMER_NAMES.items()
                   if target.startswith("former/"))
    if name_or_path in shipped:
        directory = shipped[name_or_path]
    elif name_or_path.startswith("former/"):
        directory = checkpoints.PRETRAINED_DIRECTORY / name_or_path
    else:
        directory = Path(name_or_path)
        if not directory.exists():
            raise checkpoints.CheckpointError(
                f"{name_or_path!r} is neither a shipped learned optimizer (shipped: "
                f"{', '.join(sorted(info.name for info in list_pretrained())) or 'none yet'}) nor an existing "
                "checkpoint directory (ours, or learned_optimization's params and config.gin)")
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


def refit_theta(optimizer: LearnedOptimizer, theta: MetaParams, key: jax.Array | None = None) -> MetaParams:
    """theta for optimizer after a change of settings: its entries as they are, entries the optimizer
    does not use dropped, and entries it adds (fit_decay's) at their initial values. An entry whose shape
    no longer fits raises SpecError."""
    fresh = optimizer.init(jax.random.key(0) if key is None else key)
    refit = {name: theta.get(name, value) for name, value in fresh.items()}
    check_theta(optimizer, refit)
    return refit


def load(name_or_path: str | os.PathLike, *, num_steps: int, roles: Roles | None = None, **settings: Any
         ) -> optax.GradientTransformationExtraArgs:
    """A learned optimizer as an Optax transform, to use in place of `optax.adamw` or `optax.contrib.muon`.

        tx = lopt.load(lopt.DEFAULT, num_steps=1000)             # or a checkpoint directory
        opt_state = tx.init(params)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
        params = optax.apply_updates(params, updates)

    num_steps: the length of the training run. The learned optimizers condition on the fraction of it
        done, and the default's learning rate warms up and decays to 0 at step num_steps - 1; past it the
        rate stays 0 (training stops moving): build a new transform for a longer run.
    roles: each parameter tensor's muP role ("input" | "hidden" | "output"), a pytree like params, from
        `task.roles(params)` or `lopt.infer_roles(params_at_width_a, params_at_width_b)`. A muP optimizer
        (`mulo`) requires it. The default uses it to tell hidden matrices (orthogonalized) from input
        and output ones; without it every tensor of 2 or more axes counts as hidden, as in
        optax.contrib.muon without dimension numbers.
    loss: the default's update needs the training loss of the step (`loss=`, as optax passes extra
        arguments through `optax.chain`): its weight decay reads how far the loss has fallen. Pass
        `fit_decay=False` to use it without.
    **settings: the harness around the learned rule, with the meta-trained values as defaults, e.g. for
        the default: schedule ("cosine" | "linear"), learning_rate_scale (times the learned peak),
        weight_decay (in place of the learned one), fit_decay, conv_step, embedding_step (convolution
        kernels' and embedding tables' step factors), feature_sample. A setting that would change what
        theta means is refused, naming those that may change.
    """
    optimizer, theta, _ = load_optimizer(name_or_path, **settings)
    return optimizer.transform(theta, num_steps, roles)


def load_rule(name_or_path: str | os.PathLike, *, num_steps: int, roles: Roles | None = None, **settings: Any
              ) -> optax.GradientTransformation:
    """The learned update direction alone, without the learning rate and weight decay that `load` adds,
    for a chain of your own:

        optax.chain(lopt.load_rule(name, num_steps=T, roles=roles), optax.add_decayed_weights(1e-2),
                    optax.scale_by_learning_rate(my_schedule))

    Only rules that leave the step size to a schedule have one (the default's architecture,
    normalized_mlp); the others set their own step sizes, and `load` is the way to use them.
    """
    optimizer, theta, _ = load_optimizer(name_or_path, **settings)
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
