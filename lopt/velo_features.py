"""What VeLO's per-tensor LSTM reads (Metz et al. 2022, learned_optimization's `HyperV2`): the fraction
of training done, features of the loss against its moving averages, and per-tensor summaries of the
momentum and second moment. Every constant and quirk here is the released optimizer's, so that its
meta-parameters give its updates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Points of the run (as fractions of num_steps) around which tanh(10 (fraction - point)) switches sign.
FRACTION_POINTS = (0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)
NUM_LOSS_AVERAGES = 10
MAX_RANK = 4  # ranks 0..4 one-hot; a tensor's rank counts only its axes longer than 1
# In the order of the reference's features, sorted by name: fraction_left, loss_features, mean_rms, rank,
# var_m, var_rms (3 values: the second moment's spread is taken around the momentum's mean).
NUM_LSTM_INPUTS = len(FRACTION_POINTS) + (NUM_LOSS_AVERAGES - 1) + 1 + (MAX_RANK + 1) + 3 + 3


class LossAverages(NamedTuple):
    """Moving averages of the training loss at 10 half-lives, and the lowest bias-corrected value of each."""

    means: jax.Array  # (10,)
    running_min: jax.Array  # (10,)
    decays: jax.Array  # (10,)


def init_loss_averages(horizon: int | jax.Array) -> LossAverages:
    """Half-lives spaced logarithmically from 10 steps to `horizon` steps.

    The released VeLO passes horizon 10 whatever the run's length (HyperV2's use_bugged_loss_features), so
    all ten of its averages have a half-life of 10 steps.
    """
    half_lives = jnp.logspace(1, jnp.log10(horizon), NUM_LOSS_AVERAGES)
    return LossAverages(means=jnp.zeros((NUM_LOSS_AVERAGES,), jnp.float32),
                        running_min=jnp.full((NUM_LOSS_AVERAGES,), 999999999999.0, jnp.float32),
                        decays=jnp.exp(-1.0 / half_lives))


def update_loss_averages(averages: LossAverages, iteration: jax.Array, loss: jax.Array) -> LossAverages:
    """The averages after the loss of step `iteration` (0-based). A loss above twice the largest average is
    clipped to it, so one bad batch does not swamp the averages."""
    decays = averages.decays
    corrected = averages.means / (1 - decays ** (iteration + 1))
    largest = jnp.where(iteration == 0, loss, jnp.max(corrected))
    loss = jnp.minimum(jnp.abs(largest) * 2, loss)
    means = averages.means * decays + loss * (1.0 - decays)
    corrected = means / (1 - decays ** (iteration + 1))
    return LossAverages(means, jnp.minimum(averages.running_min, corrected), decays)


def loss_features(averages: LossAverages, count: jax.Array) -> jax.Array:
    """Where each shorter average sits between its lowest value and the next longer average, in [-1, 1]
    (9 values); zero for the first two losses, whose averages mean little. count: losses seen."""
    corrected = averages.means / (1 - averages.decays ** count)
    longer, shorter = corrected[1:], corrected[:-1]
    lowest = averages.running_min[:-1]
    position = (shorter - lowest) / jnp.maximum(1e-8, longer - lowest)
    features = jnp.clip(position - 1.0, -1, 1)
    return jnp.where(count <= 2, features * 0, features)


def fraction_features(fraction_done: jax.Array) -> jax.Array:
    return jnp.tanh((fraction_done - jnp.asarray(FRACTION_POINTS, jnp.float32)) * 10)


def _clipped_log(value, scale: float) -> jax.Array:
    return jnp.clip(jnp.log(1e-8 + jnp.abs(value * scale)), -5, 5) * 0.5


def lstm_inputs(param, momentum, second_moment, fraction: jax.Array, losses: jax.Array) -> jax.Array:
    """The LSTM's NUM_LSTM_INPUTS inputs for one tensor, from its statistics before this step's gradient.

    fraction: fraction_features of the step; losses: loss_features. The statistics are first divided by
    the tensor's RMS, so that the summaries describe the tensor's relative scales.
    """
    scale = jax.lax.rsqrt(jnp.maximum(1e-9, jnp.mean(param ** 2)))
    momentum, second_moment = momentum * scale, second_moment * scale
    axes = tuple(range(param.ndim))
    mean_momentum = jnp.mean(momentum, axis=axes, keepdims=True)
    momentum_spread = jnp.mean(jnp.square(momentum - mean_momentum), axis=axes)
    mean_second_moment = jnp.mean(second_moment, axis=axes, keepdims=True)
    # The reference centres the second moment on the momentum's mean (3 values, not 1): kept, since the
    # released meta-parameters were trained with it.
    second_moment_spread = jnp.mean(jnp.square(second_moment - mean_momentum), axis=axes)
    rank = jax.nn.one_hot(int(np.sum(np.asarray(param.shape) > 1)), MAX_RANK + 1)
    return jnp.concatenate([fraction, losses, _clipped_log(mean_second_moment.reshape(-1), 10.0), rank,
                            _clipped_log(momentum_spread, 10.0), _clipped_log(second_moment_spread, 10.0)])
