"""The per-parameter MLP learned optimizer with small_fc_lopt's features ("Practical tradeoffs between
memory, compute, and performance in learned optimizers", Metz et al. 2022), in muP or standard
parameterization (muLO uses hidden size 32, the paper 4).

Every parameter gets 39 inputs: 28 gradient statistics normalized per tensor, and 11 time features
tanh(t / tau - 1). A small ReLU MLP maps them to a direction d and a magnitude m, and the update is
-d * exp(m * exp_mult) * step_mult.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt import accumulators as acc
from lopt.base import LearnedOptimizer, check_parameterization

TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
NUM_TENSOR_FEATURES = 28


def time_features(iteration: jax.Array) -> jax.Array:
    """tanh(t / tau - 1) at 11 timescales: which phase of training the step is in."""
    return jnp.tanh(jnp.asarray(iteration, jnp.float32) / jnp.asarray(TIMESCALES, jnp.float32) - 1.0)


class MLPLOptState(NamedTuple):
    momentum: Any  # per tensor: shape + (3,), one entry per momentum decay
    second_moment: Any  # per tensor: shape + (1,)
    factored: Any  # per tensor: acc.Factored at the 3 Adafactor decays
    iteration: jax.Array  # int32, steps taken
    num_steps: jax.Array  # int32, the training horizon


def tensor_features(grad, param, momentum, second_moment, factored_grad, stats: acc.Factored) -> jax.Array:
    """The 28 per-parameter statistics of one tensor, shape + (28,), before normalization."""
    rsqrt = jax.lax.rsqrt(second_moment + 1e-6)
    features = [grad[..., None], param[..., None], momentum, second_moment, momentum * rsqrt, rsqrt,
                factored_grad]
    dims = acc.factored_dims(grad.shape)
    if dims is None:
        # Unfactored tensors: the diagonal statistic stands in for both the row and column statistic.
        diag = stats.diag
        features += [diag, diag, jax.lax.rsqrt(diag + 1e-8), jax.lax.rsqrt(diag + 1e-8),
                     momentum * (diag + 1e-6) ** -0.5]
    else:
        small, large = dims
        row = jnp.broadcast_to(jnp.expand_dims(stats.row, large), momentum.shape)
        col = jnp.broadcast_to(jnp.expand_dims(stats.col, small), momentum.shape)
        row_factor, col_factor = acc.factored_row_col_factors(stats.row, stats.col, dims)
        features += [row, col, jax.lax.rsqrt(row + 1e-8), jax.lax.rsqrt(col + 1e-8),
                     momentum * row_factor * col_factor]
    return jnp.concatenate(features, axis=-1)


@dataclasses.dataclass(frozen=True)
class MLPLOpt(LearnedOptimizer):
    """small_fc_lopt: a per-parameter MLP on Adafactor-style features."""

    architecture = "mlp_lopt"
    hidden_size: int = 32  # units of each hidden layer (4 in small_fc_lopt, 32 in muLO)
    hidden_layers: int = 2  # ReLU hidden layers
    parameterization: str = "mup"  # "mup": hidden updates / fan_in; "sp": none
    exp_mult: float = 0.001  # c in d * exp(m * c) * c: keeps the initial steps small
    step_mult: float = 0.001
    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)  # initial decays, meta-learned as offsets
    second_moment_decays: tuple[float, ...] = (0.999,)
    adafactor_decays: tuple[float, ...] = (0.9, 0.99, 0.999)

    def __post_init__(self):
        check_parameterization(self)
        for field in ("hidden_size", "hidden_layers"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ValueError(f"MLPLOpt.{field}={getattr(self, field)!r}: must be a positive integer")
        # JSON gives lists back; keep the settings hashable.
        for field in ("momentum_decays", "second_moment_decays", "adafactor_decays"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if (len(self.momentum_decays), len(self.second_moment_decays), len(self.adafactor_decays)) != (3, 1, 3):
            raise ValueError("MLPLOpt uses 3 momentum, 1 second-moment and 3 Adafactor decays (28 features)")

    def settings(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @property
    def num_inputs(self) -> int:
        return NUM_TENSOR_FEATURES + len(TIMESCALES)

    def init(self, key):
        sizes = [self.num_inputs] + [self.hidden_size] * self.hidden_layers + [2]
        layers = {}
        for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            key, subkey = jax.random.split(key)
            weight = jax.random.truncated_normal(subkey, -2.0, 2.0, (fan_in, fan_out)) / jnp.sqrt(fan_in)
            layers[f"layer_{index}"] = {"w": weight, "b": jnp.zeros((fan_out,))}
        return {"momentum_decays": jnp.zeros((3,)), "second_moment_decays": jnp.zeros((1,)),
                "adafactor_decays": jnp.zeros((3,)), "mlp": layers}

    def init_state(self, theta, params, num_steps):
        del theta
        return MLPLOptState(
            momentum=jax.tree.map(lambda p: jnp.zeros(p.shape + (3,), jnp.float32), params),
            second_moment=jax.tree.map(lambda p: jnp.zeros(p.shape + (1,), jnp.float32), params),
            factored=jax.tree.map(lambda p: acc.init_factored(p.shape, 3), params),
            iteration=jnp.asarray(0, jnp.int32),
            num_steps=jnp.asarray(num_steps, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        del loss  # small_fc_lopt reads no loss
        momentum_decays = acc.learned_decays(self.momentum_decays, theta["momentum_decays"])
        second_moment_decays = acc.learned_decays(self.second_moment_decays, theta["second_moment_decays"])
        adafactor_decays = acc.learned_decays(self.adafactor_decays, theta["adafactor_decays"])
        # The time features are the same for every parameter, so their contribution to the first layer
        # is a per-step bias: computed once instead of broadcasting 11 columns to every parameter.
        first = theta["mlp"]["layer_0"]
        time_bias = time_features(state.iteration) @ first["w"][NUM_TENSOR_FEATURES:] + first["b"]

        treedef = jax.tree.structure(grads)
        new_momentum, new_second_moment, new_factored, updates = [], [], [], []
        for grad, param, momentum, second_moment, stats in zip(
                treedef.flatten_up_to(grads), treedef.flatten_up_to(params),
                treedef.flatten_up_to(state.momentum), treedef.flatten_up_to(state.second_moment),
                treedef.flatten_up_to(state.factored)):
            momentum = acc.update_momentum(momentum, grad, momentum_decays)
            second_moment = acc.update_second_moment(second_moment, grad, second_moment_decays)
            stats, factored_grad = acc.update_factored(stats, grad, adafactor_decays)
            new_momentum.append(momentum)
            new_second_moment.append(second_moment)
            new_factored.append(stats)
            if grad.ndim == 0:  # a scalar is treated as a vector of one
                features = tensor_features(grad[None], param[None], momentum[None], second_moment[None],
                                           factored_grad[None], stats._replace(diag=stats.diag[None]))
            else:
                features = tensor_features(grad, param, momentum, second_moment, factored_grad, stats)
            updates.append(-self._apply_mlp(theta["mlp"], features, time_bias).reshape(grad.shape))
        next_state = MLPLOptState(treedef.unflatten(new_momentum), treedef.unflatten(new_second_moment),
                                  treedef.unflatten(new_factored), state.iteration + 1, state.num_steps)
        return treedef.unflatten(updates), next_state

    def _apply_mlp(self, layers, features, time_bias):
        """The step for one tensor from its raw features (shape + (28,))."""
        axes = tuple(range(features.ndim - 1))
        # Per-tensor normalization x * rsqrt(1e-5 + mean x^2), folded into the first layer's weights.
        scale = jax.lax.rsqrt(1e-5 + jnp.mean(jnp.square(features), axis=axes))
        first = layers["layer_0"]
        hidden = features @ (scale[:, None] * first["w"][:NUM_TENSOR_FEATURES]) + acc.trailing(time_bias, features.ndim)
        for index in range(1, self.hidden_layers + 1):
            layer = layers[f"layer_{index}"]
            hidden = jax.nn.relu(hidden) @ layer["w"] + acc.trailing(layer["b"], hidden.ndim)
        direction, magnitude = hidden[..., 0], hidden[..., 1]
        return direction * jnp.exp(magnitude * self.exp_mult) * self.step_mult
