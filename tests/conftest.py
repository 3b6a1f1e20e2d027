"""Shared test settings: four CPU devices (so sharded code runs split as on an accelerator pod) that
wait for each other at collectives however loaded the machine is, no on-disk compilation cache, and
strict rank promotion, which catches silent broadcasting bugs in our code."""

import os
from importlib.metadata import version


def _xla_flags() -> list[str]:
    """Four CPU devices and, where jaxlib knows the flag (0.8.0 on; older ones abort on an unknown flag),
    no termination of a collective whose devices arrive far apart. XLA:CPU kills the process ("Fatal
    Python error: Aborted", after "Termination timeout for `all reduce ...` of 40 seconds exceeded") when
    a device has waited 60 s for the others at a collective (a warning at 20 s, then 40 s more), which four
    device threads on two cores shared with other CPU-bound jobs can reach in an in-process meta-training
    step; the tests' programs are small, so a real deadlock still shows as pytest's own slowness."""
    flags = ["--xla_force_host_platform_device_count=4"]
    if tuple(int(part) for part in version("jaxlib").split(".")[:2]) >= (0, 8):
        flags.append("--xla_cpu_collective_call_terminate_timeout_seconds=1800")
    return flags


# Before JAX initializes its backends: a session that imported jax first would see one device.
# Subprocesses the tests start inherit them.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_xla_flags()]).strip()

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
