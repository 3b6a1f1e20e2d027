"""Hand-designed optimizers behind the learned-optimizer interface, with their hyperparameters as
meta-parameters, so meta-training can tune them and evaluation compares like with like.

`Adam(parameterization="mup")` is muAdam: Adam followed by the muP rule (hidden updates / fan_in).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import optax

from lopt.base import StepRule, check_parameterization


@dataclasses.dataclass(frozen=True)
class Adam(StepRule):
    """Adam with a learnable log learning rate and betas (as log(1 - beta), so they stay below 1)."""

    architecture = "adam"
    learning_rate: float = 1e-3  # the initial learning rate theta starts from
    beta1: float = 0.9  # initial first-moment decay
    beta2: float = 0.999  # initial second-moment decay
    epsilon: float = 1e-8
    parameterization: str = "sp"  # "mup" makes this muAdam

    def __post_init__(self):
        check_parameterization(self)
        if not self.learning_rate > 0:
            raise ValueError(f"Adam.learning_rate={self.learning_rate!r}: must be positive")
        for field in ("beta1", "beta2"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"Adam.{field}={getattr(self, field)!r}: must be in [0, 1)")

    def init(self, key):
        del key
        return {"log_learning_rate": jnp.asarray(math.log(self.learning_rate), jnp.float32),
                "log_one_minus_beta1": jnp.asarray(math.log1p(-self.beta1), jnp.float32),
                "log_one_minus_beta2": jnp.asarray(math.log1p(-self.beta2), jnp.float32)}

    def _adam(self, theta) -> optax.GradientTransformation:
        return optax.scale_by_adam(b1=1.0 - jnp.exp(theta["log_one_minus_beta1"]),
                                   b2=1.0 - jnp.exp(theta["log_one_minus_beta2"]), eps=self.epsilon)

    def init_state(self, theta, params, num_steps):
        del num_steps  # Adam does not condition on the horizon
        return self._adam(theta).init(params)

    def step(self, theta, grads, state, params, loss):
        del loss
        directions, state = self._adam(theta).update(grads, state, params)
        learning_rate = jnp.exp(theta["log_learning_rate"])
        return optax.tree.scale(-learning_rate, directions), state
