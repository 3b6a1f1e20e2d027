"""The learned-optimizer interface and the Optax adapter built on it.

An architecture holds only its settings. Its meta-parameters theta come from `init(key)`, and
`transform(theta, num_steps, roles)` turns them into an `optax.GradientTransformationExtraArgs`. That
transform is the inner step everywhere: meta-training unrolls it, evaluation runs it, and a
practitioner chains it like `optax.adam`. The optimizer a user loads is the function that was
meta-trained.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import optax

from lopt import mup
from lopt.types import PARAMETERIZATIONS, MetaParams, Params, PRNGKey, Roles


class SpecError(ValueError):
    """A spec or setting that names no architecture we have, or settings it does not take."""


class LearnedOptimizer(abc.ABC):
    """An optimizer whose update rule has meta-parameters theta.

    What an architecture implements: `init(key) -> theta` and `transform(theta, num_steps, roles)`, the
    Optax transform that meta-training unrolls, evaluation runs and `lopt.load` returns. Rules written as
    one step function derive from `StepRule` instead, which builds `transform` from `init_state` and
    `step`. What it inherits: `settings()` and `spec()` (a checkpoint rebuilds the optimizer from them),
    `with_settings()` (a variant of the same theta), and `as_optax` (the checks every transform shares).

    Subclasses are final frozen dataclasses of JSON-serializable settings that validate themselves in
    `__post_init__`: a setting is declared and checked there once, and the meta-training config, the
    command line's `--set optimizer.FIELD=...` and `lopt.load(..., FIELD=...)` all read that declaration.
    """

    architecture: ClassVar[str]  # the name a checkpoint's spec records
    parameterization: str  # "mup": hidden updates are divided by fan_in; "sp": nothing is rescaled
    # Settings outside theta that change the harness around the learned rule, not what theta means (a
    # schedule's shape, a fixed step factor): `lopt.load` and a warm start may change them freely.
    harness_settings: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def init(self, key: PRNGKey) -> MetaParams:
        """Fresh meta-parameters."""

    @abc.abstractmethod
    def transform(self, theta: MetaParams, num_steps: int | jax.Array, roles: Roles | None = None
                  ) -> optax.GradientTransformationExtraArgs:
        """This optimizer with meta-parameters theta as an Optax transform.

        `num_steps` is the length of the training run (learned optimizers condition on it). `roles` is a
        pytree like params of "input" | "hidden" | "output"; a muP optimizer requires it.
        """

    def settings(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serializable (the dataclass fields)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def with_settings(self, **changes: Any) -> "LearnedOptimizer":
        """The same architecture with some harness settings changed (validated as at construction);
        a setting that would change what theta means is refused in one line."""
        fixed = sorted(set(changes) - set(self.harness_settings))
        if fixed:
            known = {field.name for field in dataclasses.fields(self)}
            unknown = [name for name in fixed if name not in known]
            if unknown:
                raise SpecError(f"{self.architecture} has no setting {', '.join(unknown)}; "
                                    f"settings that may change: {', '.join(self.harness_settings) or 'none'}")
            raise SpecError(f"{self.architecture}'s {', '.join(fixed)} shape{'s' if len(fixed) == 1 else ''} theta, "
                            f"fixed by the checkpoint; settings that may change: "
                            f"{', '.join(self.harness_settings) or 'none'}")
        return dataclasses.replace(self, **changes)

    def as_optax(self, init: Callable[[Params], Any], update: Callable[..., tuple[Params, Any]],
                 roles: Roles | None) -> optax.GradientTransformationExtraArgs:
        """An Optax transform of init(params) -> state and update(grads, state, params, loss) -> (updates,
        state) that checks roles (a muP optimizer refuses to build without them), requires params, keeps
        its statistics in float32 whatever the params' dtype, and returns updates in that dtype."""
        if self.parameterization == "mup" and roles is None:
            raise mup.RolesError(
                f"this {self.architecture} optimizer is muP-parameterized and needs the muP role of every "
                "parameter tensor: pass roles=task.roles(params) for a tasks.Task, or "
                "roles=lopt.infer_roles(init_params_at_width_a, init_params_at_width_b) for any model")

        def init_fn(params):
            if roles is not None:
                mup.check_roles(roles, params)
            return init(params)

        def update_fn(grads, state, params=None, *, loss=None, **extra_args):
            del extra_args
            if params is None:
                raise ValueError(f"{self.architecture} needs params: call update(grads, state, params)")
            grads32 = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
            params32 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
            updates, state = update(grads32, state, params32, loss)
            return jax.tree.map(lambda u, p: u.astype(p.dtype), updates, params), state

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def spec(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "settings": self.settings(),
                "parameterization": self.parameterization}


class StepRule(LearnedOptimizer):
    """A learned optimizer written as one step function over all tensors. Implement `init`,
    `init_state` and `step`; `transform` is built from them, with muP's rescaling of the step's updates by role."""

    @abc.abstractmethod
    def init_state(self, theta: MetaParams, params: Params, num_steps: int | jax.Array) -> Any:
        """The optimizer state for params (a NamedTuple of arrays; never the params themselves)."""

    @abc.abstractmethod
    def step(self, theta: MetaParams, grads: Params, state: Any, params: Params,
             loss: jax.Array | None) -> tuple[Params, Any]:
        """Updates to add to params before the muP rescaling, and the next state."""

    def transform(self, theta, num_steps, roles=None):
        def update(grads, state, params, loss):
            updates, state = self.step(theta, grads, state, params, loss)
            return mup.scale_updates(updates, roles, self.parameterization), state

        return self.as_optax(lambda params: self.init_state(theta, params, num_steps), update, roles)


def check_parameterization(optimizer: LearnedOptimizer) -> None:
    if optimizer.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"{type(optimizer).__name__}.parameterization={optimizer.parameterization!r}: "
                         f"must be one of {', '.join(PARAMETERIZATIONS)}")


def check_positive_integers(optimizer: LearnedOptimizer, *fields: str) -> None:
    for field in fields:
        value = getattr(optimizer, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(optimizer).__name__}.{field}={value!r}: must be a positive integer")
