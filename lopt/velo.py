"""VeLO (Metz et al. 2022, "VeLO: Training Versatile Learned Optimizers by Scaling Up"), the architecture
learned_optimization calls `HyperV2`, reimplemented to reproduce its released meta-parameters' updates.

Each step a per-tensor LSTM reads velo_features.lstm_inputs. Before the LSTM, a max over all tensors of
one projection of those inputs is added to another, so that each tensor sees the whole model. From the
LSTM's output, one linear head gives the weights of a mixture of a bank of small per-parameter MLPs
(mixed as 100 x the mean of weight x bank member) and another a step multiplier. The mixed MLP reads 30
per-tensor normalized features (small_fc_lopt's 28, the gradient clipped to +-0.1, and the gradient over
the root second moment) and outputs direction d and magnitude m; the step is d * exp(m * exp_mult) *
step_mult * rms(param) * multiplier. Gradients are clipped to +-1000 first. No decay is meta-learned.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt import velo_features as features
from lopt.base import StepRule, check_parameterization, check_positive_integers
from lopt.lstm_lopt import lstm_cell
from lopt.mlp_lopt import (StatisticsDecaySettings, advance_statistics, init_dense, init_mlp, init_statistics,
                           mlp_outputs)

# Columns of each feature block of the per-parameter MLP, in the reference's order (its first-layer
# weights are stored one block at a time, as w0__0 ... w0__13): gradient, clipped gradient, parameter,
# momenta, second moment, momenta / sqrt(second moment), 1 / sqrt(second moment), Adafactor-preconditioned
# gradient, gradient / sqrt(second moment), then row, column, their rsqrt, and factored momentum.
FEATURE_BLOCKS = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
NUM_MLP_INPUTS = sum(FEATURE_BLOCKS)


class VeLOState(NamedTuple):
    statistics: Any  # per tensor: mlp_lopt.Statistics
    lstm_hidden: jax.Array  # (num_tensors, lstm_hidden_size)
    lstm_cell: jax.Array  # (num_tensors, lstm_hidden_size)
    loss_averages: features.LossAverages
    iteration: jax.Array  # int32, steps taken
    num_steps: jax.Array  # int32, the training horizon


@dataclasses.dataclass(frozen=True)
class VeLO(StatisticsDecaySettings, StepRule):  # its decays are fixed, not meta-learned
    """A per-tensor LSTM hypernetwork over a bank of per-parameter MLPs; defaults are the released VeLO's."""

    architecture = "velo"
    lstm_hidden_size: int = 512
    num_mlps: int = 256  # size of the per-parameter MLP bank (learned_optimization: param_inits)
    mlp_hidden_size: int = 4  # (ff_hidden_size)
    mlp_hidden_layers: int = 2  # (ff_hidden_layers)
    # The LSTM restarts from its initial state every step: the released weights were trained that way.
    use_bugged_next_lstm_state: bool = True
    # The loss averages' half-lives all stay 10 steps instead of spanning 10 to num_steps (released: True).
    use_bugged_loss_features: bool = True
    parameterization: str = "sp"  # VeLO already scales each step by the tensor's RMS
    exp_mult: float = 0.001
    step_mult: float = 0.001

    def __post_init__(self):
        check_parameterization(self)
        check_positive_integers(self, "lstm_hidden_size", "num_mlps", "mlp_hidden_size", "mlp_hidden_layers")
        self.settle_statistics_decays()

    def init(self, key):
        keys = jax.random.split(key, 6)
        hidden, inputs = self.lstm_hidden_size, features.NUM_LSTM_INPUTS
        sizes = [NUM_MLP_INPUTS] + [self.mlp_hidden_size] * self.mlp_hidden_layers + [2]
        return {
            "lstm_initial": {"hidden": jnp.zeros((hidden,)), "cell": jnp.zeros((hidden,))},
            # "pool" is max-pooled over the tensors and added to "input", which feeds the LSTM.
            "tensor_mix": {"pool": init_dense(keys[0], inputs, hidden), "input": init_dense(keys[1], inputs, hidden)},
            # Rows: [mixed input; hidden]; columns: gates in haiku's order (input, cell input, forget, output).
            "lstm": init_dense(keys[2], 2 * hidden, 4 * hidden),
            "controls": init_dense(keys[3], hidden, self.num_mlps),
            "step_size": init_dense(keys[4], hidden, 1),
            "bank": init_mlp(keys[5], sizes, batch=(self.num_mlps,)),
        }

    def init_state(self, theta, params, num_steps):
        num_tensors = len(jax.tree.leaves(params))
        initial = theta["lstm_initial"]
        horizon = 10 if self.use_bugged_loss_features else num_steps
        return VeLOState(statistics=jax.tree.map(init_statistics, params),
                         lstm_hidden=jnp.tile(initial["hidden"][None, :], (num_tensors, 1)),
                         lstm_cell=jnp.tile(initial["cell"][None, :], (num_tensors, 1)),
                         loss_averages=features.init_loss_averages(horizon),
                         iteration=jnp.asarray(0, jnp.int32), num_steps=jnp.asarray(num_steps, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        if loss is None:
            raise ValueError("VeLO reads the training loss: call update(grads, state, params, loss=loss)")
        loss_averages = features.update_loss_averages(state.loss_averages, state.iteration,
                                                      jnp.asarray(loss, jnp.float32))
        losses = features.loss_features(loss_averages, state.iteration + 1)
        fraction = features.fraction_features(state.iteration / state.num_steps.astype(jnp.float32))

        treedef = jax.tree.structure(grads)
        grad_leaves = [jnp.clip(g, -1000.0, 1000.0) for g in treedef.flatten_up_to(grads)]
        param_leaves, stats_leaves = treedef.flatten_up_to(params), treedef.flatten_up_to(state.statistics)
        # The LSTM reads the statistics as they were before this step's gradient.
        lstm_inputs = jnp.stack([features.lstm_inputs(p, stats.momentum, stats.second_moment, fraction, losses)
                                 for p, stats in zip(param_leaves, stats_leaves)])
        controls, multipliers, lstm_hidden, lstm_cell = self._hypernetwork(
            theta, lstm_inputs, state.lstm_hidden, state.lstm_cell)
        if self.use_bugged_next_lstm_state:
            lstm_hidden, lstm_cell = state.lstm_hidden, state.lstm_cell

        decays = tuple(jnp.asarray(d, jnp.float32) for d in
                       (self.momentum_decays, self.second_moment_decays, self.adafactor_decays))
        new_statistics, updates = [], []
        for index, (grad, param, stats) in enumerate(zip(grad_leaves, param_leaves, stats_leaves)):
            stats, blocks = advance_statistics(stats, grad, param, decays, diag_eps=0.0)
            new_statistics.append(stats)
            grad_block, rsqrt_second_moment = blocks[0], blocks[5]
            blocks = (blocks[:1] + [jnp.clip(grad_block, -0.1, 0.1)] + blocks[1:7]
                      + [grad_block * rsqrt_second_moment] + blocks[7:])
            layers = self._mixed_mlp(theta["bank"], controls[index])
            direction, magnitude = mlp_outputs(layers, blocks, layers["layer_0"]["b"])
            param_scale = jnp.sqrt(jnp.mean(jnp.square(param)) + 1e-9)
            step = direction * (param_scale * jnp.exp(magnitude * self.exp_mult)) * self.step_mult
            updates.append(-(multipliers[index] * step).reshape(param.shape))
        next_state = VeLOState(treedef.unflatten(new_statistics), lstm_hidden, lstm_cell, loss_averages,
                               state.iteration + 1, state.num_steps)
        return treedef.unflatten(updates), next_state

    @staticmethod
    def _hypernetwork(theta, inputs, hidden, cell):
        """(mixture weights (num_tensors, num_mlps), step multipliers (num_tensors,), hidden, cell)."""
        mix = theta["tensor_mix"]
        pooled = jnp.max(jax.nn.relu(_dense(mix["pool"], inputs)), axis=0, keepdims=True)
        mixed = _dense(mix["input"], inputs) + pooled
        gates = _dense(theta["lstm"], jnp.concatenate([mixed, hidden], axis=-1))
        input_gate, cell_input, forget_gate, output_gate = jnp.split(gates, 4, axis=-1)
        hidden, cell = lstm_cell(input_gate, forget_gate, cell_input, output_gate, cell)
        controls = _dense(theta["controls"], hidden)
        multipliers = _dense(theta["step_size"], hidden)[:, 0]
        return controls, multipliers, hidden, cell

    @staticmethod
    def _mixed_mlp(bank, weights):
        """One tensor's MLP: 100 x the mean over the bank of each member's parameters times its weight."""
        def mix(stacked):
            return 100.0 * jnp.mean(stacked * weights.reshape((-1,) + (1,) * (stacked.ndim - 1)), axis=0)
        return jax.tree.map(mix, bank)


def _dense(layer, inputs):
    return inputs @ layer["w"] + layer["b"][None, :]
