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


def mlp_regression(width: int, name: str) -> tasks.Task:
    """A one-hidden-matrix MLP on the 4-d regression: input, hidden and output matrices, as expert
    supervision needs (it imitates Muon on the hidden ones)."""
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"w1": jax.random.normal(k1, (4, width)) / 2, "w2": jax.random.normal(k2, (width, width)) / width ** 0.5,
                "w3": jax.random.normal(k3, (width, 1)) / width ** 0.5}

    def loss(params, batch, key):
        del key
        x, y = batch
        hidden = jnp.tanh(jnp.tanh(x @ params["w1"]) @ params["w2"])
        return jnp.mean((hidden @ params["w3"] - y) ** 2)

    return tasks.from_functions(init, loss, *regression_arrays(4), batch_size=16, name=name,
                                roles={"w1": "input", "w2": "hidden", "w3": "output"})


MLP_FAMILY = tasks.family([mlp_regression(8, "mlp_regression_8")], name="own_mlps")
