"""Decoupled weight decay that grows once the training loss has fallen far below where it started.

A learned rule with one weight decay for every task is a compromise: the tasks that memorize their
training set (a wide MLP, a small tabular set run for many epochs) want 30-300x the decay that language
models and conv nets want (benchmarks.weight_decay). The optimizer cannot see a validation loss, but it
sees the training loss it is given, and memorizing shows there: the loss falls many e-folds below its
first value, where a model that is still learning the data's structure (a language model at its entropy
floor, a conv net) falls a few. So the decay is

    weight_decay * exp(gain * (softplus(depth - knee) - softplus(-knee))),
    depth = log(first loss / recent loss)

with depth clipped to [0, MAX_DEPTH] and the log multiplier to +/-MAX_LOG_MULTIPLIER, so the learned
response stays inside what meta-training showed. A negative gain (less decay as the loss falls) is
allowed: clipping it to plain decay would leave the meta-gradient 0 there, and a gain that noise pushed
below 0 could never come back. `gain` and `knee` are meta-learned (theta); a gain of 0,
or a loss that has not fallen, is plain decoupled weight decay. The depth is a ratio of losses, so it does not depend on the
loss's scale; the recent loss is an exponential moving average (bias-corrected), as one minibatch's loss
is noisy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

MAX_DEPTH = 12.0  # e-folds of loss reduction the response reads: beyond this, all look alike
MAX_LOG_MULTIPLIER = 7.0  # the decay moves at most e^7 (about 1,100x) from its base, either way
LOSS_AVERAGE_DECAY = 0.95  # of the recent loss's moving average (about 20 steps)
INITIAL_KNEE = 4.0  # e-folds: where theta's knee offset 0 puts the knee
LOSS_FLOOR = 1e-30  # keeps the log finite at a loss of 0


class FitDecayState(NamedTuple):
    first_loss: jax.Array  # the loss at the run's first step
    loss_average: jax.Array  # the moving average of the loss, before bias correction
    count: jax.Array  # int32, steps seen


def depth(state: FitDecayState) -> jax.Array:
    """How many e-folds the recent loss lies below the first one, in [0, MAX_DEPTH]."""
    recent = state.loss_average / (1.0 - LOSS_AVERAGE_DECAY ** jnp.maximum(state.count, 1).astype(jnp.float32))
    ratio = jnp.maximum(state.first_loss, LOSS_FLOOR) / jnp.maximum(recent, LOSS_FLOOR)
    # A loss that can be negative (a log-likelihood) has no such ratio: no response then.
    # A diverged run's non-finite loss gets none either.
    usable = (state.first_loss > 0) & (recent > 0) & jnp.isfinite(ratio)
    return jnp.where(usable, jnp.clip(jnp.log(jnp.where(usable, ratio, 1.0)), 0.0, MAX_DEPTH), 0.0)


def multiplier(gain, knee_offset, state: FitDecayState) -> jax.Array:
    """The factor on the base weight decay at this state, within e^(+/-MAX_LOG_MULTIPLIER)."""
    knee = INITIAL_KNEE + knee_offset
    response = jax.nn.softplus(depth(state) - knee) - jax.nn.softplus(-knee)  # 0 at depth 0
    return jnp.exp(jnp.clip(gain * response, -MAX_LOG_MULTIPLIER, MAX_LOG_MULTIPLIER))


def fit_decayed_weights(weight_decay, gain, knee_offset) -> optax.GradientTransformationExtraArgs:
    """optax.add_decayed_weights(weight_decay * multiplier) with the multiplier read off the training
    loss, which update takes as `loss=` (as tasks.train_step and the Quickstart pass it)."""

    def init_fn(params):
        del params
        # Separate buffers: a training loop that donates the optimizer state donates each leaf once.
        return FitDecayState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, *, loss=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("fit_decayed_weights needs params: call update(grads, state, params, loss=loss)")
        if loss is None:
            raise ValueError("this optimizer's weight decay reads the training loss: call "
                             "update(grads, state, params, loss=loss)")
        loss = jnp.asarray(loss, jnp.float32)
        first = jnp.where(state.count == 0, loss, state.first_loss)
        average = LOSS_AVERAGE_DECAY * state.loss_average + (1.0 - LOSS_AVERAGE_DECAY) * loss
        state = FitDecayState(first, average, state.count + 1)
        decayed = optax.add_decayed_weights(weight_decay * multiplier(gain, knee_offset, state))
        updates, _ = decayed.update(updates, decayed.init(params), params)  # optax's own, stateless
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
