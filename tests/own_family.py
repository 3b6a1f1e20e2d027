"""A user's own tasks, never registered: linear regressions written as plain JAX functions, named by the
tests as `tests.own_family:FAMILY` and `tests.own_family:HELD_OUT` the way a launch script names its own."""

import jax
import jax.numpy as jnp
import numpy as np

import tasks


def regression_arrays(dim: int):
    """(train, valid) of a noisy linear regression in dim inputs, 192 and 64 examples."""
    rng = np.random.default_rng(dim)
    inputs = rng.normal(size=(256, dim)).astype(np.float32)
    targets = (inputs @ rng.normal(size=(dim, 1)) + 0.1 * rng.normal(size=(256, 1))).astype(np.float32)
    return (inputs[:192], targets[:192]), (inputs[192:], targets[192:])


def regression(dim: int, name: str) -> tasks.Task:
    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (dim, 1)), "b": jnp.zeros((1, 1))}

    def loss(params, batch, key):
        del key
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    return tasks.from_functions(init, loss, *regression_arrays(dim), batch_size=16, name=name)


FAMILY = tasks.family([regression(4, "regression_4"), regression(6, "regression_6")], name="own_regressions")
OTHER_FAMILY = tasks.family([regression(3, "regression_3")], name="own_regressions")  # same name, other shapes
HELD_OUT = regression(5, "regression_5")

