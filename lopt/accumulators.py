"""Running gradient statistics at several decays at once: momentum, second moment and Adafactor-style
factored second moments. Each tensor's statistic gets a trailing axis, one entry per decay.

Decays are meta-learned as offsets in log(1 - decay) / 10 space (small_fc_lopt), so an offset of 0 is
the initial decay and a step of theta moves short and long horizons alike.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def decay_to_param(decay):
    return jnp.log(1.0 - jnp.asarray(decay, jnp.float32)) / 10.0


def param_to_decay(param):
    return 1.0 - jnp.exp(param * 10.0)


def learned_decays(initial: tuple[float, ...], offset: jax.Array) -> jax.Array:
    return param_to_decay(decay_to_param(initial) + offset)


def trailing(vector: jax.Array, ndim: int) -> jax.Array:
    """A vector shaped to broadcast along the last axis of an ndim-dimensional array."""
    return vector.reshape((1,) * (ndim - 1) + (-1,))


def update_momentum(momentum: jax.Array, grad: jax.Array, decays: jax.Array) -> jax.Array:
    """momentum (*shape, D) <- decay * momentum + (1 - decay) * grad, no bias correction."""
    decays = trailing(decays, momentum.ndim)
    return decays * momentum + (1.0 - decays) * grad[..., None]


def update_second_moment(second_moment: jax.Array, grad: jax.Array, decays: jax.Array) -> jax.Array:
    decays = trailing(jnp.clip(decays, 0.0, 1.0), second_moment.ndim)
    return decays * second_moment + (1.0 - decays) * jnp.square(grad)[..., None]


def safe_rsqrt(x):
    return jax.lax.rsqrt(jnp.maximum(x, 1e-9))


def factored_dims(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (second largest, largest) axes a tensor's second moment is factored over, as in Adafactor;
    None for vectors and scalars, which keep a full (diagonal) second moment."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    return int(order[-2]), int(order[-1])


class Factored(NamedTuple):
    """Adafactor statistics of one tensor at D decays. For a factored tensor with axes (a, b) =
    factored_dims: `row` is the mean of g^2 over axis b (shape without b, plus D), `col` over axis a;
    `diag` is unused (shape (0,)). Unfactored tensors use `diag` (shape + (D,)) instead."""

    row: jax.Array
    col: jax.Array
    diag: jax.Array


def init_factored(shape: tuple[int, ...], num_decays: int) -> Factored:
    # Unused fields are empty arrays, each its own buffer: a state whose leaves alias cannot be donated.
    dims = factored_dims(shape)
    if dims is None:
        return Factored(jnp.zeros((0,)), jnp.zeros((0,)), jnp.zeros(shape + (num_decays,), jnp.float32))
    small, large = dims
    row_shape = tuple(np.delete(shape, large)) + (num_decays,)
    col_shape = tuple(np.delete(shape, small)) + (num_decays,)
    return Factored(jnp.zeros(row_shape, jnp.float32), jnp.zeros(col_shape, jnp.float32), jnp.zeros((0,)))


# Added to g^2 so an all-zero gradient keeps the factored statistics positive.
_GRAD_SQUARE_EPS = 1e-30


def factored_row_col_factors(row: jax.Array, col: jax.Array, dims: tuple[int, int]):
    """The Adafactor preconditioner of a factored tensor, as per-row and per-column factors already
    expanded to broadcast against the tensor (with its trailing decay axis)."""
    small, large = dims
    row_axis_of_small = small - 1 if small > large else small
    row_mean = jnp.mean(row, axis=row_axis_of_small, keepdims=True)
    row_factor = safe_rsqrt(row / (row_mean + 1e-9))
    col_factor = safe_rsqrt(col)
    return jnp.expand_dims(row_factor, large), jnp.expand_dims(col_factor, small)


def update_factored(stats: Factored, grad: jax.Array, decays: jax.Array) -> tuple[Factored, jax.Array]:
    """New statistics and the gradient preconditioned by them (shape + (D,))."""
    decays = jnp.clip(decays, 0.0, 1.0)
    grad_square = (jnp.square(grad) + _GRAD_SQUARE_EPS)[..., None]
    dims = factored_dims(grad.shape)
    if dims is None:
        decays = trailing(decays, grad_square.ndim)
        diag = decays * stats.diag + (1.0 - decays) * grad_square
        return stats._replace(diag=diag), grad[..., None] * safe_rsqrt(diag + 1e-9)
    small, large = dims
    decays = trailing(decays, grad.ndim)  # the statistics have one axis fewer than grad_square
    row = decays * stats.row + (1.0 - decays) * jnp.mean(grad_square, axis=large)
    col = decays * stats.col + (1.0 - decays) * jnp.mean(grad_square, axis=small)
    row_factor, col_factor = factored_row_col_factors(row, col, dims)
    return Factored(row, col, stats.diag), grad[..., None] * row_factor * col_factor
