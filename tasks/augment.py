"""Task augmentation for meta-training, as learned_optimization and VeLO meta-train: the same function
under other coordinates and another loss scale, drawn afresh for every inner run.

Reparameterization (learned_optimization's `ReparamWeights`): parameters are stored as u = w0 / s and the
loss is evaluated at w = u * s, with s log-uniform in [1 / reparam_max, reparam_max], one factor for the
whole model ("global"), one per tensor ("tensor") or one per entry ("parameter"). The function and its
value at init are unchanged; the gradient with respect to u is s times that with respect to w, and a
step of size eta in u moves w by s * eta: an optimizer that only works at one parameter scale is
penalized. The loss scale multiplies the loss (and so every gradient) by c, log-uniform in
[1 / loss_scale_max, loss_scale_max]; `normalize_loss` divides it out again, so the meta-loss measures
the task, not the scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tasks.base import ConfigError, Task

REPARAM_LEVELS = ("none", "global", "tensor", "parameter")


class Factors(NamedTuple):
    scales: Any  # a pytree like params: arrays broadcastable to each tensor
    loss_scale: jax.Array  # scalar


@dataclasses.dataclass(frozen=True)
class Augmentation:
    reparam: str = "none"  # "none", "global", "tensor" or "parameter"
    reparam_max: float = 100.0  # parameter scales log-uniform in [1 / reparam_max, reparam_max]
    loss_scale_max: float = 1.0  # loss times a factor log-uniform in [1 / loss_scale_max, loss_scale_max]

    def __post_init__(self):
        if self.reparam not in REPARAM_LEVELS:
            raise ConfigError(f"Augmentation.reparam={self.reparam!r}: must be one of {', '.join(REPARAM_LEVELS)}")
        for field in ("reparam_max", "loss_scale_max"):
            if not 1 <= getattr(self, field) < float("inf"):
                raise ConfigError(f"Augmentation.{field}={getattr(self, field)!r}: must be at least 1 and finite")

    @property
    def active(self) -> bool:
        return (self.reparam != "none" and self.reparam_max > 1) or self.loss_scale_max > 1

    def sample(self, key: jax.Array, params: Any) -> Factors:
        """The factors of one inner run (params: arrays or shapes, e.g. from jax.eval_shape)."""
        leaves, structure = jax.tree.flatten(params)
        scale_key, loss_key = jax.random.split(key)
        keys = jax.random.split(scale_key, len(leaves))

        def log_uniform(key, shape, bound):
            return jnp.exp(jax.random.uniform(key, shape, minval=-jnp.log(bound), maxval=jnp.log(bound)))

        if self.reparam == "none":
            scales = [jnp.ones((), jnp.float32) for _ in leaves]
        elif self.reparam == "global":
            scales = [log_uniform(scale_key, (), self.reparam_max)] * len(leaves)
        elif self.reparam == "tensor":
            scales = [log_uniform(k, (), self.reparam_max) for k in keys]
        else:
            scales = [log_uniform(k, leaf.shape, self.reparam_max) for k, leaf in zip(keys, leaves)]
        return Factors(jax.tree.unflatten(structure, scales), log_uniform(loss_key, (), self.loss_scale_max))

    def apply(self, task: Task, factors: Factors) -> Task:
        return task if not self.active else AugmentedTask(task, factors)


class AugmentedTask(Task):
    """A task seen through augmentation factors (traced arrays are fine: built inside a jitted step)."""

    def __init__(self, task: Task, factors: Factors):
        self.task = task
        self.factors = factors
        self.config = task.config

    @property
    def data(self):
        return self.task.data

    def init(self, key):
        return jax.tree.map(lambda w, s: w / s, self.task.init(key), self.factors.scales)

    def _weights(self, params):
        return jax.tree.map(lambda u, s: u * s, params, self.factors.scales)

    def loss_and_aux(self, params, batch, key):
        loss, aux = self.task.loss_and_aux(self._weights(params), batch, key)
        return loss * self.factors.loss_scale, aux

    def eval_loss_and_aux(self, params, batch):
        loss, aux = self.task.eval_loss_and_aux(self._weights(params), batch)
        return loss * self.factors.loss_scale, aux

    def batch(self, data, key, split: str = "train"):
        return self.task.batch(data, key, split)

    def held_out(self, data, split: str = "valid"):
        return self.task.held_out(data, split)

    def roles(self, params):
        return self.task.roles(params)

    def normalize_loss(self, loss):
        return self.task.normalize_loss(loss / self.factors.loss_scale)
