"""The pieces a practitioner's optimizer is built from around its update rule, shared by the learned rules
and evaluate's tuned baselines so that both use one definition: the warmup-then-decay learning-rate
schedules and which tensors count as hidden matrices (the ones Muon orthogonalizes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

WARMUP_FRACTION = 0.05  # of the run: linear warmup from 0, then decay to 0 at the last step
# The decay's shape after warmup. Both are written in jnp because meta-training traces the peak (a learned
# theta) and num_steps (each worker's run length), where optax's schedules branch on them in Python;
# their values are optax's (tests hold them equal).
SCHEDULES = ("cosine", "linear")


def warmup_decay(shape: str, peak: Any, num_steps: int | jax.Array) -> optax.Schedule:
    """Linear warmup from 0 over the first WARMUP_FRACTION of the run (at least one step), then a decay of
    the given shape ("cosine" or "linear") to exactly 0 at the run's last step (count num_steps - 1):
    optax.warmup_cosine_decay_schedule's values, or optax.join_schedules of two linear_schedules."""
    if shape not in SCHEDULES:
        raise ValueError(f"schedule={shape!r}: one of {', '.join(SCHEDULES)}")
    num_steps = jnp.asarray(num_steps, jnp.float32)
    warmup = jnp.maximum(1.0, jnp.round(WARMUP_FRACTION * num_steps))
    decay_end = jnp.maximum(num_steps - 1.0, warmup + 1.0)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        rising = count / warmup
        progress = jnp.clip((count - warmup) / (decay_end - warmup), 0.0, 1.0)
        falling = 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) if shape == "cosine" else 1.0 - progress
        return peak * jnp.where(count < warmup, rising, falling)

    return schedule


def warmup_cosine(peak: Any, num_steps: int | jax.Array) -> optax.Schedule:
    """warmup_decay("cosine", ...): the schedule of the tuned AdamW and Muon baselines."""
    return warmup_decay("cosine", peak, num_steps)


def is_hidden_matrix(role: str | None, leaf: Any) -> bool:
    """A tensor Muon-style rules orthogonalize: at least 2-D and of muP role "hidden" (its fan-in and
    fan-out both grow with width); with no roles (None), every tensor of at least 2 dimensions, as
    optax.contrib.muon does without dimension numbers."""
    rank = len(getattr(leaf, "shape", ()))  # optax also passes masked trees: MaskedNode has no shape
    return rank >= 2 and role in (None, "hidden")


def matrix_dimension_numbers(leaf: Any) -> optax.contrib.MuonDimensionNumbers:
    """A tensor as the matrix Newton-Schulz orthogonalizes: its last axis against all the others (a
    convolution kernel (h, w, in, out) as (h * w * in, out), as Muon's authors treat conv filters)."""
    rank = len(leaf.shape)
    return optax.contrib.MuonDimensionNumbers(reduction_axis=tuple(range(rank - 1)), output_axis=rank - 1)


def muon_dimension_numbers(roles) -> Any:
    """optax.contrib.muon's dimension numbers: the hidden matrices orthogonalized, everything else (None)
    to Adam, as Muon is used in practice (embeddings, readouts, biases and norms on Adam). Returned as a
    function of the params, the form `muon_weight_dimension_numbers` takes:

        optax.contrib.muon(3e-3, muon_weight_dimension_numbers=lopt.muon_dimension_numbers(roles))
    """
    def rule(role, leaf):
        return matrix_dimension_numbers(leaf) if role == "hidden" and is_hidden_matrix(role, leaf) else None
    return lambda params: jax.tree.map(rule, roles, params)
