"""Shared test settings: four CPU devices (so sharded code runs split as on an accelerator pod), a
compilation cache of the session's own, and strict rank promotion, which catches silent broadcasting
bugs in our code."""

import atexit
import os
import shutil
import tempfile

# Before JAX initializes its backends: a session that imported jax first would see one device.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()

# The session compiles from scratch, into an on-disk compilation cache of its own that it removes at
# exit: a program compiled again (a resumed run, the same run in a subprocess) is read back from it, as
# the command line's cache does for users, and nothing is shared with another session or the user's cache.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="lopt-tests-xla-")
atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)
os.environ["LOPT_COMPILATION_CACHE"] = COMPILATION_CACHE  # subprocesses inherit it

import jax  # noqa: E402
import pytest  # noqa: E402

from checkpoints.files import enable_compilation_cache  # noqa: E402

enable_compilation_cache()
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
