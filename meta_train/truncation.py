"""Truncation schedules: how long each inner training run lasts before it restarts on a fresh task.
Lengths are drawn with jax.random inside jitted code."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ConstantLength:
    """Every inner run lasts `length` steps."""

    length: int

    def __post_init__(self):
        if self.length < 1:
            raise ValueError(f"ConstantLength.length={self.length}: must be at least 1")

    def sample(self, key) -> jax.Array:
        del key
        return jnp.asarray(self.length, jnp.int32)

    @property
    def max_length(self) -> int:
        return self.length


@dataclasses.dataclass(frozen=True)
class LogUniformLength:
    """Run lengths log-uniform in [min_length, max_length] (muLO: 100 to 1,000): short runs teach the
    early phase often, long runs teach what happens late."""

    min_length: int
    max_length: int

    def __post_init__(self):
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"LogUniformLength: need 1 <= min_length ({self.min_length}) <= max_length "
                             f"({self.max_length})")

    def sample(self, key) -> jax.Array:
        log_length = jax.random.uniform(key, (), minval=jnp.log(self.min_length),
                                        maxval=jnp.log(self.max_length + 1))
        return jnp.clip(jnp.exp(log_length).astype(jnp.int32), self.min_length, self.max_length)
