"""Shared test settings: strict rank promotion catches silent broadcasting bugs in our code."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
