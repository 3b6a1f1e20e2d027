"""learned_optimization's `MLPLOpt` (Metz et al. 2019, "Understanding and correcting pathologies in the
training of learned optimizers"; also called LOLv2): a per-parameter MLP on the gradient, the parameter
and momenta at six fixed decays, plus small_fc_lopt's 11 time features.

Every parameter gets 19 inputs: 8 per-tensor normalized values and tanh(t / tau - 1) at 11 timescales. A
ReLU MLP maps them to a direction d and a magnitude m, and the update is -d * exp(m * exp_mult) *
step_mult. Unlike small_fc_lopt, nothing but the MLP is meta-learned, and there are no second moments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt import accumulators as acc
from lopt.base import StepRule, check_parameterization, check_positive_integers
from lopt.mlp_lopt import TIMESCALES, init_mlp, time_conditioned_mlp_updates

MOMENTUM_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
NUM_TENSOR_FEATURES = 2 + len(MOMENTUM_DECAYS)  # gradient, parameter, momenta


class MomentumMLPLOptState(NamedTuple):
    momentum: Any  # per tensor: shape + (6,)
    iteration: jax.Array  # int32, steps taken


@dataclasses.dataclass(frozen=True)
class MomentumMLPLOpt(StepRule):
    """A per-parameter MLP on gradient, parameter and six momenta (learned_optimization's MLPLOpt)."""

    architecture = "momentum_mlp_lopt"
    hidden_size: int = 32  # units of each hidden layer
    hidden_layers: int = 2  # ReLU hidden layers
    parameterization: str = "sp"  # learned_optimization's optimizers are standard-parameterized
    exp_mult: float = 0.001  # c in d * exp(m * c) * c
    step_mult: float = 0.001

    def __post_init__(self):
        check_parameterization(self)
        check_positive_integers(self, "hidden_size", "hidden_layers")

    @property
    def num_inputs(self) -> int:
        return NUM_TENSOR_FEATURES + len(TIMESCALES)

    def init(self, key):
        return {"mlp": init_mlp(key, [self.num_inputs] + [self.hidden_size] * self.hidden_layers + [2])}

    def init_state(self, theta, params, num_steps):
        del theta, num_steps  # the time features count steps, not the fraction of the run
        momentum = jax.tree.map(lambda p: jnp.zeros(p.shape + (len(MOMENTUM_DECAYS),), jnp.float32), params)
        return MomentumMLPLOptState(momentum=momentum, iteration=jnp.asarray(0, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        del loss  # reads no loss
        decays = jnp.asarray(MOMENTUM_DECAYS, jnp.float32)

        def advance(momentum, grad, param):
            momentum = acc.update_momentum(momentum, grad, decays)
            blocks = [grad[..., None], param[..., None], momentum]
            if grad.ndim == 0:  # scalars are treated as vectors of one
                blocks = [block[None] for block in blocks]
            return momentum, blocks

        updates, momentum = time_conditioned_mlp_updates(theta["mlp"], state.iteration, grads, params,
                                                         state.momentum, advance, self.exp_mult, self.step_mult)
        return updates, MomentumMLPLOptState(momentum, state.iteration + 1)
