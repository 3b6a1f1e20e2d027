"""A VeLO-style learned optimizer (Metz et al. 2022): a per-tensor LSTM hypernetwork that, from per-tensor
statistics, mixes a bank of small per-parameter MLPs and sets a per-tensor step multiplier.

Each step, every tensor gets a statistics vector (fraction of training done, the loss against its
moving averages, the scales of gradient, parameter, momenta and second moment, the tensor's rank). One
LSTM, shared by all tensors and batched over them, reads it; its output gives softmax mixing weights
over the bank and a log step multiplier. The mixed per-parameter MLP reads small_fc_lopt's 28 features,
as MLPLOpt does. VeLO also multiplies each step by the tensor's RMS; muLO drops that (it fights muP's
width scaling), so here it is the option `param_scale`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt.declare import setting
from lopt.base import StepRule, check_parameterization
from lopt.mlp_lopt import (NUM_TENSOR_FEATURES, StatisticsDecaySettings, advance_statistics, init_statistics,
                           per_parameter_mlp, statistics_decays)

LOSS_DECAYS = (0.9, 0.99, 0.999)
MAX_RANK = 4  # ranks 0..4, higher ranks share the last one-hot slot
# time (2), loss against its averages (one per decay), log scales (7), rank one-hot
NUM_TENSOR_STATISTICS = 2 + len(LOSS_DECAYS) + 7 + (MAX_RANK + 1)


class LSTMLOptState(NamedTuple):
    statistics: Any  # per tensor: mlp_lopt.Statistics
    lstm_hidden: jax.Array  # (num_tensors, lstm_hidden_size)
    lstm_cell: jax.Array  # (num_tensors, lstm_hidden_size)
    loss_ema: jax.Array  # (len(LOSS_DECAYS),) moving averages of the loss
    iteration: jax.Array  # int32
    num_steps: jax.Array  # int32


def _log_rms(x) -> jax.Array:
    return 0.5 * jnp.log(jnp.mean(jnp.square(x)) + 1e-16)


def tensor_statistics(param, grad, stats, fraction_done, loss_features) -> jax.Array:
    """The LSTM's input for one tensor (NUM_TENSOR_STATISTICS values, all O(1))."""
    momentum_rms = [_log_rms(stats.momentum[..., k]) for k in range(3)]
    rsqrt_second_moment = jax.lax.rsqrt(stats.second_moment[..., 0] + 1e-12)
    scales = jnp.stack([_log_rms(grad), _log_rms(param), *momentum_rms,
                        _log_rms(stats.second_moment), jnp.log(jnp.mean(rsqrt_second_moment) + 1e-12)]) / 10.0
    rank = jax.nn.one_hot(min(param.ndim, MAX_RANK), MAX_RANK + 1)
    time = jnp.stack([fraction_done, jnp.tanh(10.0 * (fraction_done - 0.5))])
    return jnp.concatenate([time, loss_features, scales, rank])


@dataclasses.dataclass(frozen=True)
class LSTMLOpt(StatisticsDecaySettings, StepRule):
    """A per-tensor LSTM that mixes a bank of per-parameter MLPs (VeLO's design, our own sizes)."""

    architecture = "lstm_lopt"
    lstm_hidden_size: int = setting(32, "units of the per-tensor LSTM (VeLO: 512)")
    num_mlps: int = setting(8, "size of the per-parameter MLP bank (VeLO: 256)")
    mlp_hidden_size: int = setting(4, "hidden units of each per-parameter MLP (VeLO: 4)")
    param_scale: bool = setting(False, "each step times the tensor's RMS (VeLO: True; muLO: False)")
    parameterization: str = setting("mup", "'mup': hidden updates divided by fan_in; 'sp': none")
    exp_mult: float = setting(0.001, "c in the step d * exp(m * c) * step_mult")
    step_mult: float = setting(0.001, "the step's scale")

    def __post_init__(self):
        check_parameterization(self)
        for field in ("lstm_hidden_size", "num_mlps", "mlp_hidden_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LSTMLOpt.{field}={value!r}: must be a positive integer")
        self.settle_statistics_decays()

    def init(self, key):
        keys = jax.random.split(key, 5)
        hidden, inputs = self.lstm_hidden_size, NUM_TENSOR_STATISTICS
        bank_shape = (self.num_mlps, NUM_TENSOR_FEATURES, self.mlp_hidden_size)
        return {
            "momentum_decays": jnp.zeros((3,)), "second_moment_decays": jnp.zeros((1,)),
            "adafactor_decays": jnp.zeros((3,)),
            "lstm": {"w_input": jax.random.normal(keys[0], (inputs, 4 * hidden)) / jnp.sqrt(inputs),
                     "w_hidden": jax.random.normal(keys[1], (hidden, 4 * hidden)) / jnp.sqrt(hidden),
                     "b": jnp.zeros((4 * hidden,))},
            # Small head weights: the mixture starts near the bank's average and the multiplier near 1.
            "head": {"w": 0.01 * jax.random.normal(keys[2], (hidden, self.num_mlps + 1)),
                     "b": jnp.zeros((self.num_mlps + 1,))},
            "bank": {
                "layer_0": {"w": jax.random.truncated_normal(keys[3], -2, 2, bank_shape) / jnp.sqrt(NUM_TENSOR_FEATURES),
                            "b": jnp.zeros((self.num_mlps, self.mlp_hidden_size))},
                "layer_1": {"w": jax.random.truncated_normal(keys[4], -2, 2, (self.num_mlps, self.mlp_hidden_size, 2))
                            / jnp.sqrt(self.mlp_hidden_size),
                            "b": jnp.zeros((self.num_mlps, 2))}},
        }

    def init_state(self, theta, params, num_steps):
        del theta
        num_tensors = len(jax.tree.leaves(params))
        zeros = jnp.zeros((num_tensors, self.lstm_hidden_size), jnp.float32)
        return LSTMLOptState(statistics=jax.tree.map(init_statistics, params), lstm_hidden=zeros,
                             lstm_cell=jnp.zeros_like(zeros), loss_ema=jnp.zeros((len(LOSS_DECAYS),)),
                             iteration=jnp.asarray(0, jnp.int32), num_steps=jnp.asarray(num_steps, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        if loss is None:
            raise ValueError("LSTMLOpt reads the training loss: call update(grads, state, params, loss=loss)")
        loss = jnp.asarray(loss, jnp.float32)
        decays = jnp.asarray(LOSS_DECAYS)
        # The moving averages start at the first loss, so early features compare like with like.
        loss_ema = jnp.where(state.iteration == 0, loss, decays * state.loss_ema + (1 - decays) * loss)
        # How far the loss is above or below each average, relative to it: the direction of progress.
        loss_features = jnp.tanh((loss - loss_ema) / (jnp.abs(loss_ema) + 1e-8))
        fraction_done = state.iteration.astype(jnp.float32) / jnp.maximum(state.num_steps, 1).astype(jnp.float32)

        treedef = jax.tree.structure(grads)
        grad_leaves, param_leaves = treedef.flatten_up_to(grads), treedef.flatten_up_to(params)
        decays_of_statistics = statistics_decays(self, theta)
        advanced = [advance_statistics(stats, g, p, decays_of_statistics)
                    for stats, g, p in zip(treedef.flatten_up_to(state.statistics), grad_leaves, param_leaves)]
        lstm_inputs = jnp.stack([tensor_statistics(p, g, stats, fraction_done, loss_features)
                                 for (stats, _), g, p in zip(advanced, grad_leaves, param_leaves)])
        lstm_hidden, lstm_cell = self._lstm(theta["lstm"], lstm_inputs, state.lstm_hidden, state.lstm_cell)
        head = lstm_hidden @ theta["head"]["w"] + theta["head"]["b"][None, :]
        mixture = jax.nn.softmax(head[:, :-1], axis=-1)  # (num_tensors, num_mlps)
        log_multiplier = head[:, -1]

        updates = []
        for index, ((_, blocks), param) in enumerate(zip(advanced, param_leaves)):
            layers = jax.tree.map(lambda bank: jnp.tensordot(mixture[index], bank, axes=1), theta["bank"])
            step = per_parameter_mlp(layers, blocks, layers["layer_0"]["b"], self.exp_mult, self.step_mult)
            step = step.reshape(param.shape) * jnp.exp(log_multiplier[index])
            if self.param_scale:
                step = step * jnp.sqrt(jnp.mean(jnp.square(param)) + 1e-8)
            updates.append(-step)
        next_state = LSTMLOptState(treedef.unflatten([stats for stats, _ in advanced]), lstm_hidden, lstm_cell,
                                   loss_ema, state.iteration + 1, state.num_steps)
        return treedef.unflatten(updates), next_state

    @staticmethod
    def _lstm(weights, inputs, hidden, cell):
        gates = inputs @ weights["w_input"] + hidden @ weights["w_hidden"] + weights["b"][None, :]
        input_gate, forget_gate, cell_input, output_gate = jnp.split(gates, 4, axis=-1)
        return lstm_cell(input_gate, forget_gate, cell_input, output_gate, cell)


def lstm_cell(input_gate, forget_gate, cell_input, output_gate, cell) -> tuple[jax.Array, jax.Array]:
    """(hidden, cell) after one step from the gates' pre-activations; the forget gate is biased by +1, so
    an untrained LSTM keeps most of its memory."""
    cell = jax.nn.sigmoid(forget_gate + 1.0) * cell + jax.nn.sigmoid(input_gate) * jnp.tanh(cell_input)
    return jax.nn.sigmoid(output_gate) * jnp.tanh(cell), cell
