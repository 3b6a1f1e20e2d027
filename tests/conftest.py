"""Shared test settings: four CPU devices (so sharded code runs split as on an accelerator pod) that
wait for each other at collectives however loaded the machine is, no on-disk compilation cache, and
strict rank promotion, which catches silent broadcasting bugs in our code."""

import os

from meta_train.distributed import cpu_device_flags  # imports JAX without starting a backend

# Before JAX initializes its backends: a session that used a device first would see one. Four devices
# two cores share: the collective wait is raised (cpu_device_flags), as a device thread of an in-process
# meta-training step beside other CPU-bound jobs can reach XLA's 60 s; the tests' programs are small, so
# a real deadlock still shows as pytest's own slowness. Subprocesses the tests start inherit them.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), cpu_device_flags(4)]).strip()

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
