"""Shared test settings: four CPU devices (so sharded code runs split as on an accelerator pod) and
strict rank promotion, which catches silent broadcasting bugs in our code."""

import os

# Before JAX initializes its backends: a session that imported jax first would see one device.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()

# Tests compile from scratch: no on-disk compilation cache (the command line enables one by default).
os.environ["LOPT_COMPILATION_CACHE"] = ""

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
