"""Shared test settings: four CPU devices (so sharded code runs split as on an accelerator pod), no
on-disk compilation cache, and strict rank promotion, which catches silent broadcasting bugs in our
code."""

import os

# Before JAX initializes its backends: a session that imported jax first would see one device.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()

# No on-disk compilation cache, in this process or its subprocesses: every program compiles afresh, so a
# test's result never depends on an executable another process wrote. (Turning the cache off did not stop
# the "Fatal Python error: Aborted" that test runs beside other CPU-bound jobs hit inside in-process
# meta-training steps; run alone, the suite passes.)
os.environ["LOPT_COMPILATION_CACHE"] = ""  # subprocesses inherit it

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
