"""The per-parameter MLP learned optimizer with small_fc_lopt's features ("Practical tradeoffs between
memory, compute, and performance in learned optimizers", Metz et al. 2022), in muP or standard
parameterization (muLO uses hidden size 32, the paper 4).

Every parameter gets 39 inputs: 28 gradient statistics normalized per tensor, and 11 time features
tanh(t / tau - 1). A small ReLU MLP maps them to a direction d and a magnitude m, and the update is
-d * exp(m * exp_mult) * step_mult.

Four options go beyond small_fc_lopt (all off by default; with parameterization="sp" and hidden_size=4 the
defaults are small_fc_lopt's architecture):
- `horizon_schedule`: the step is also multiplied by a learned schedule over the fraction of the run done,
  exp(s(t / T)), s piecewise linear through 11 learned knots. Every input feature is normalized per
  tensor, so without it the size of a step cannot shrink as training ends, and the absolute time features
  cannot tell the end of a 100-step run from the end of a 1,000-step one.
- `time_feature_horizon=H`: a run longer than H steps reads its time features at t * H / T, so they never
  leave the range that meta-training runs of at most H steps showed the optimizer (runs of at most H
  steps are unchanged). Without it, time features past the meta-training horizon are inputs the MLP never
  saw.
- `init_rule="adam"`: theta starts as Adam with each tensor's update normalized (two hidden units carry
  the momentum / sqrt(second moment) feature; the others start with small output weights) and, with the
  schedule, a cosine decay to 2% over the run: meta-training refines a good optimizer instead of first
  discovering one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt import accumulators as acc
from lopt.declare import setting
from lopt.base import StepRule, check_parameterization, check_positive_integers

TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
NUM_TENSOR_FEATURES = 28
# The feature momentum(decay 0.9) * rsqrt(second moment): Adam's direction, which init_rule="adam" passes on.
ADAM_DIRECTION_FEATURE = 6
INIT_RULES = ("random", "adam")
SCHEDULE_KNOTS = 11  # the learned schedule's knots, at fractions 0, 0.1, ..., 1 of the run
ADAM_INIT_FINAL_MULTIPLIER = 0.02  # init_rule="adam": the schedule starts as a cosine decay to this
# Up to this hidden size the MLP runs as fused elementwise arithmetic; above it, as matmuls.
ELEMENTWISE_MAX_HIDDEN = 8


def time_features(iteration: jax.Array) -> jax.Array:
    """tanh(t / tau - 1) at 11 timescales: which phase of training the step is in."""
    return jnp.tanh(jnp.asarray(iteration, jnp.float32) / jnp.asarray(TIMESCALES, jnp.float32) - 1.0)


class MLPLOptState(NamedTuple):
    statistics: Any  # per tensor: Statistics (momenta, second moment, Adafactor factors)
    iteration: jax.Array  # int32, steps taken
    num_steps: jax.Array  # int32, the training horizon


def tensor_features(grad, param, momentum, second_moment, factored_grad, stats: acc.Factored,
                    diag_eps: float = 1e-6) -> list[jax.Array]:
    """The 28 per-parameter statistics of one tensor, before normalization, as blocks of shape + (k,)
    (kept apart so that the small-MLP path never materializes all 28 columns). `diag_eps` is added to an
    unfactored tensor's second moment before it divides the momentum (VeLO adds none)."""
    rsqrt = jax.lax.rsqrt(second_moment + 1e-6)
    features = [grad[..., None], param[..., None], momentum, second_moment, momentum * rsqrt, rsqrt,
                factored_grad]
    dims = acc.factored_dims(grad.shape)
    if dims is None:
        # Unfactored tensors: the diagonal statistic stands in for both the row and column statistic.
        diag = stats.diag
        features += [diag, diag, jax.lax.rsqrt(diag + 1e-8), jax.lax.rsqrt(diag + 1e-8),
                     momentum * (diag + diag_eps) ** -0.5]
    else:
        small, large = dims
        row = jnp.broadcast_to(jnp.expand_dims(stats.row, large), momentum.shape)
        col = jnp.broadcast_to(jnp.expand_dims(stats.col, small), momentum.shape)
        row_factor, col_factor = acc.factored_row_col_factors(stats.row, stats.col, dims)
        features += [row, col, jax.lax.rsqrt(row + 1e-8), jax.lax.rsqrt(col + 1e-8),
                     momentum * row_factor * col_factor]
    return features


@dataclasses.dataclass(frozen=True)
class StatisticsDecaySettings:
    """The decays of the statistics that the 28 accumulated features read (small_fc_lopt's): 3 momenta,
    1 second moment, 3 Adafactor factorizations. The settings of MLPLOpt, LSTMLOpt and VeLO, whose
    __post_init__ calls `settle_statistics_decays`."""

    momentum_decays: tuple[float, ...] = setting((0.9, 0.99, 0.999), "initial momentum decays (meta-learned offsets)")
    second_moment_decays: tuple[float, ...] = setting((0.999,), "initial second-moment decay (meta-learned offset)")
    adafactor_decays: tuple[float, ...] = setting((0.9, 0.99, 0.999), "initial Adafactor decays (meta-learned offsets)")

    def settle_statistics_decays(self) -> None:
        """Stores the decays as tuples (a spec read back from JSON gives lists; settings stay hashable),
        and refuses other counts than 3 / 1 / 3."""
        for field in ("momentum_decays", "second_moment_decays", "adafactor_decays"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if (len(self.momentum_decays), len(self.second_moment_decays), len(self.adafactor_decays)) != (3, 1, 3):
            raise ValueError(f"{type(self).__name__} uses 3 momentum, 1 second-moment and 3 Adafactor "
                             "decays (28 features)")


@dataclasses.dataclass(frozen=True)
class MLPLOpt(StatisticsDecaySettings, StepRule):
    """small_fc_lopt: a per-parameter MLP on Adafactor-style features."""

    architecture = "mlp_lopt"
    hidden_size: int = setting(32, "units of each hidden layer (4 in small_fc_lopt, 32 in muLO)")
    hidden_layers: int = setting(2, "ReLU hidden layers")
    parameterization: str = setting("mup", "'mup': hidden updates divided by fan_in; 'sp': none")
    exp_mult: float = setting(0.001, "c in the step d * exp(m * c) * step_mult: keeps the initial steps small")
    step_mult: float = setting(0.001, "the step's scale, d * exp(m * exp_mult) * step_mult")
    horizon_schedule: bool = setting(False, "steps times a learned schedule over the fraction of the run done")
    init_rule: str = setting("random", "theta starts 'random', or as per-tensor normalized 'adam'")
    # Without it a run longer than any meta-training run shows the MLP time features it never saw.
    time_feature_horizon: int = setting(0, "> 0: longer runs read time features at t * this / T; 0: absolute t")

    def __post_init__(self):
        check_parameterization(self)
        check_positive_integers(self, "hidden_size", "hidden_layers")
        self.settle_statistics_decays()
        if not isinstance(self.horizon_schedule, bool):
            raise ValueError(f"MLPLOpt.horizon_schedule={self.horizon_schedule!r}: must be True or False")
        if self.init_rule not in INIT_RULES:
            raise ValueError(f"MLPLOpt.init_rule={self.init_rule!r}: must be one of {', '.join(INIT_RULES)}")
        if not isinstance(self.time_feature_horizon, int) or self.time_feature_horizon < 0:
            raise ValueError(f"MLPLOpt.time_feature_horizon={self.time_feature_horizon!r}: must be an integer >= 0")
        if self.init_rule == "adam" and self.hidden_size < 2:
            raise ValueError("MLPLOpt.init_rule='adam' needs hidden_size >= 2 (two units carry Adam's direction)")

    @property
    def num_inputs(self) -> int:
        return NUM_TENSOR_FEATURES + len(TIMESCALES)

    def init(self, key):
        layers = init_mlp(key, [self.num_inputs] + [self.hidden_size] * self.hidden_layers + [2])
        if self.init_rule == "adam":
            layers = adam_like(layers)
        theta = {"momentum_decays": jnp.zeros((3,)), "second_moment_decays": jnp.zeros((1,)),
                 "adafactor_decays": jnp.zeros((3,)), "mlp": layers}
        if self.horizon_schedule:  # log step multipliers at the knots
            theta["schedule"] = cosine_log_multipliers() if self.init_rule == "adam" else jnp.zeros((SCHEDULE_KNOTS,))
        return theta

    def init_state(self, theta, params, num_steps):
        del theta
        return MLPLOptState(statistics=jax.tree.map(init_statistics, params),
                            iteration=jnp.asarray(0, jnp.int32), num_steps=jnp.asarray(num_steps, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        del loss  # small_fc_lopt reads no loss
        decays = statistics_decays(self, theta)
        time_step = state.iteration
        if self.time_feature_horizon:
            time_step = state.iteration * jnp.minimum(1.0, self.time_feature_horizon / jnp.maximum(state.num_steps, 1))
        updates, statistics = time_conditioned_mlp_updates(
            theta["mlp"], time_step, grads, params, state.statistics,
            lambda stats, grad, param: advance_statistics(stats, grad, param, decays), self.exp_mult, self.step_mult)
        if self.horizon_schedule:
            multiplier = horizon_multiplier(theta["schedule"], state.iteration, state.num_steps)
            updates = jax.tree.map(lambda update: update * multiplier, updates)
        return updates, MLPLOptState(statistics, state.iteration + 1, state.num_steps)


def horizon_multiplier(log_multipliers: jax.Array, iteration, num_steps) -> jax.Array:
    """exp of the piecewise-linear interpolation of log_multipliers (knots evenly spaced over [0, 1]) at
    the fraction of the run done, iteration / num_steps, clipped to [0, 1] (past the horizon the last
    knot holds)."""
    fraction = jnp.clip(jnp.asarray(iteration, jnp.float32) / jnp.maximum(num_steps, 1), 0.0, 1.0)
    # Evenly spaced knots: the segment is found by arithmetic (jnp.interp's search is a loop of its own
    # in every inner step, which costs compile time).
    log_multipliers = jnp.asarray(log_multipliers)  # a theta read back to the host holds NumPy arrays
    position = fraction * (log_multipliers.shape[0] - 1)
    left = jnp.clip(jnp.floor(position), 0, log_multipliers.shape[0] - 2).astype(jnp.int32)
    weight = position - left
    return jnp.exp(log_multipliers[left] * (1.0 - weight) + log_multipliers[left + 1] * weight)


def cosine_log_multipliers(final: float = ADAM_INIT_FINAL_MULTIPLIER) -> jax.Array:
    """The knots of a cosine decay from 1 to `final` over the run, as log multipliers."""
    fraction = jnp.linspace(0.0, 1.0, SCHEDULE_KNOTS)
    return jnp.log(final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * fraction)))


def adam_like(layers, others_scale: float = 0.01, feature: int = ADAM_DIRECTION_FEATURE):
    """MLP layers whose direction output is Adam's direction feature (column `feature` of the inputs,
    normalized per tensor): hidden units
    0 and 1 carry relu(+x) and relu(-x) through every layer and the output takes their difference. The
    other units keep their random input weights but reach the output through weights `others_scale` as
    large, so that they start as a small perturbation which meta-training can grow."""
    layers = dict(layers)
    last = len(layers) - 1
    for index in range(last + 1):
        w = layers[f"layer_{index}"]["w"]
        if index == 0:
            w = w.at[:, :2].set(0.0).at[feature, 0].set(1.0).at[feature, 1].set(-1.0)
        elif index < last:
            w = w.at[:2, :].set(0.0).at[:, :2].set(0.0).at[0, 0].set(1.0).at[1, 1].set(1.0)
        else:
            w = (w * others_scale).at[:2, :].set(0.0).at[0, 0].set(1.0).at[1, 0].set(-1.0)
        layers[f"layer_{index}"] = {"w": w, "b": jnp.zeros_like(layers[f"layer_{index}"]["b"])}
    return layers


def time_conditioned_mlp_updates(layers, iteration, grads, params, statistics, advance, exp_mult: float,
                                 step_mult: float):
    """(updates, next statistics) of every tensor from a per-parameter MLP whose last 11 inputs are the
    time features. advance(stats, grad, param) -> (next stats, raw feature blocks) gives the other inputs."""
    # The time features are the same for every parameter, so their contribution to the first layer is a
    # per-step bias: computed once instead of broadcasting 11 columns to every parameter.
    first = layers["layer_0"]
    time_bias = time_features(iteration) @ first["w"][-len(TIMESCALES):] + first["b"]
    treedef = jax.tree.structure(grads)
    new_statistics, updates = [], []
    for grad, param, stats in zip(treedef.flatten_up_to(grads), treedef.flatten_up_to(params),
                                  treedef.flatten_up_to(statistics)):
        stats, blocks = advance(stats, grad, param)
        new_statistics.append(stats)
        step = per_parameter_mlp(layers, blocks, time_bias, exp_mult, step_mult)
        updates.append(-step.reshape(grad.shape))
    return treedef.unflatten(updates), treedef.unflatten(new_statistics)


def init_dense(key, fan_in: int, fan_out: int, batch: tuple[int, ...] = ()) -> dict[str, jax.Array]:
    """A linear layer {"w": batch + (fan_in, fan_out), "b"}: truncated-normal weights of variance about
    1 / fan_in, zero biases."""
    weight = jax.random.truncated_normal(key, -2.0, 2.0, batch + (fan_in, fan_out)) / jnp.sqrt(fan_in)
    return {"w": weight, "b": jnp.zeros(batch + (fan_out,))}


def init_mlp(key, sizes: list[int], batch: tuple[int, ...] = ()) -> dict[str, dict[str, jax.Array]]:
    """{"layer_0": ..., "layer_L": ...} of init_dense layers through the given sizes."""
    layers = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, subkey = jax.random.split(key)
        layers[f"layer_{index}"] = init_dense(subkey, fan_in, fan_out, batch)
    return layers


def per_parameter_mlp(layers, blocks, first_bias, exp_mult: float, step_mult: float) -> jax.Array:
    """The step of one tensor from its raw feature blocks: d * exp(m * exp_mult) * step_mult, with the
    direction d and magnitude m of `mlp_outputs`."""
    direction, magnitude = mlp_outputs(layers, blocks, first_bias)
    return direction * jnp.exp(magnitude * exp_mult) * step_mult


def mlp_outputs(layers, blocks, first_bias) -> tuple[jax.Array, jax.Array]:
    """The direction and magnitude (the first two outputs) of the per-parameter MLP on one tensor."""
    outputs = mlp_output_units(layers, blocks, first_bias)
    return outputs[0], outputs[1]


def mlp_output_units(layers, blocks, first_bias, feature_scales=None) -> list[jax.Array]:
    """Every output unit of the per-parameter MLP on one tensor, each shaped like the tensor.

    blocks: raw feature blocks of shape + (k,), F columns in all. layers: {"layer_0": {"w": (>=F, h),
    "b"}, ..., "layer_L": {"w": (h, outputs), "b": (outputs,)}}; only the first F rows of layer_0's
    weights read the features, and `first_bias` replaces its bias (it may carry a per-step time
    contribution). feature_scales: each column's multiplier, shape (F,); None normalizes each column by
    its own RMS over the tensor.
    """
    if feature_scales is None:
        feature_scales = rms_scales(blocks)
    # Folded into the first layer's weights: a column's scale costs nothing per parameter.
    first_weights = feature_scales[:, None] * layers["layer_0"]["w"][:feature_scales.shape[0]]
    num_layers = len(layers)
    if first_weights.shape[1] <= ELEMENTWISE_MAX_HIDDEN:
        return _elementwise_mlp(layers, num_layers, blocks, first_weights, first_bias)
    hidden = jnp.concatenate(blocks, axis=-1) @ first_weights + acc.trailing(first_bias, blocks[0].ndim)
    for index in range(1, num_layers):
        layer = layers[f"layer_{index}"]
        hidden = jax.nn.relu(hidden) @ layer["w"] + acc.trailing(layer["b"], hidden.ndim)
    return [hidden[..., k] for k in range(hidden.shape[-1])]


def rms_scales(blocks) -> jax.Array:
    """Each column's per-tensor normalizer, rsqrt(1e-5 + mean x^2) over every axis but the last (one
    reduction per column); blocks of shape + (k,), as mlp_output_units takes them."""
    axes = tuple(range(blocks[0].ndim - 1))
    return jax.lax.rsqrt(1e-5 + jnp.concatenate([jnp.mean(jnp.square(b), axis=axes) for b in blocks]))


def _elementwise_mlp(layers, num_layers, blocks, first_weights, first_bias):
    """The MLP as sums of per-parameter products: for a few hidden units, XLA fuses the features and
    every layer into loops over the parameters, where a matmul would first write 28 columns out."""
    columns = [block[..., k] for block in blocks for k in range(block.shape[-1])]
    units = [sum(column * first_weights[i, j] for i, column in enumerate(columns)) + first_bias[j]
             for j in range(first_weights.shape[1])]
    for index in range(1, num_layers):
        layer = layers[f"layer_{index}"]
        inputs = [jax.nn.relu(unit) for unit in units]
        units = [sum(unit * layer["w"][i, j] for i, unit in enumerate(inputs)) + layer["b"][j]
                 for j in range(layer["w"].shape[1])]
    return units


def statistics_decays(optimizer, theta):
    """The (momentum, second moment, Adafactor) decays: the settings' initial values moved by theta."""
    return (acc.learned_decays(optimizer.momentum_decays, theta["momentum_decays"]),
            acc.learned_decays(optimizer.second_moment_decays, theta["second_moment_decays"]),
            acc.learned_decays(optimizer.adafactor_decays, theta["adafactor_decays"]))


class Statistics(NamedTuple):
    """The running gradient statistics of one tensor."""

    momentum: jax.Array  # shape + (3,)
    second_moment: jax.Array  # shape + (1,)
    factored: acc.Factored  # at the 3 Adafactor decays


def init_statistics(param) -> Statistics:
    return Statistics(jnp.zeros(param.shape + (3,), jnp.float32), jnp.zeros(param.shape + (1,), jnp.float32),
                      acc.init_factored(param.shape, 3))


def advance_statistics(stats: Statistics, grad, param, decays, diag_eps: float = 1e-6
                       ) -> tuple[Statistics, list[jax.Array]]:
    """Statistics after one more gradient, and the tensor's 28 raw feature blocks (scalars are treated
    as vectors of one). decays: (momentum, second moment, Adafactor) decay arrays."""
    momentum_decays, second_moment_decays, adafactor_decays = decays
    momentum = acc.update_momentum(stats.momentum, grad, momentum_decays)
    second_moment = acc.update_second_moment(stats.second_moment, grad, second_moment_decays)
    factored, factored_grad = acc.update_factored(stats.factored, grad, adafactor_decays)
    new = Statistics(momentum, second_moment, factored)
    if grad.ndim == 0:
        return new, tensor_features(grad[None], param[None], momentum[None], second_moment[None],
                                    factored_grad[None], factored._replace(diag=factored.diag[None]), diag_eps)
    return new, tensor_features(grad, param, momentum, second_moment, factored_grad, factored, diag_eps)
