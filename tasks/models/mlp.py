"""A multilayer perceptron classifier."""

from __future__ import annotations

import flax.linen as nn
import jax

from tasks.models.layers import ACTIVATIONS, Readout, assign_roles, fan_in_normal


class MLP(nn.Module):
    """Flattens its input, then `depth` hidden layers of `width` units, then the readout.

    Layer names carry the muP roles: "input" maps the data to width (its fan-in does not grow),
    "hidden_i" maps width to width, "readout" maps width to the classes.
    """

    width: int
    depth: int
    num_outputs: int
    activation: str = "relu"
    parameterization: str = "mup"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        for layer in range(self.depth):
            name = "input" if layer == 0 else f"hidden_{layer}"
            x = activation(nn.Dense(self.width, kernel_init=fan_in_normal, name=name)(x))
        return Readout(self.num_outputs, self.parameterization, name="readout")(x)

    @staticmethod
    def roles(params):
        return assign_roles(params, input_layers=("input",), output_layers=("readout",))
