"""An MLP autoencoder: images through a narrow code and back."""

from __future__ import annotations

import flax.linen as nn
import jax

from tasks.models.layers import ACTIVATIONS, Readout, assign_roles, fan_in_normal


class AutoencoderMLP(nn.Module):
    """Flattens its input, maps it to `width` units, a linear code of `code_size`, `width` units again and
    back to the input's size (the reconstruction, flat).

    Roles: "encoder" and "decoder" read inputs of a fixed size (the pixels, the code): muP "input"; "code"
    has a wide fan-in and a fixed fan-out, like a readout: "output"; "readout" reconstructs the pixels.
    The code layer is drawn like every other weight in both parameterizations: zero-initialized, it would
    leave the decoder no signal and no gradient at the start.
    """

    width: int
    code_size: int
    num_outputs: int
    activation: str = "relu"
    parameterization: str = "mup"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        x = activation(nn.Dense(self.width, kernel_init=fan_in_normal, name="encoder")(x))
        code = nn.Dense(self.code_size, kernel_init=fan_in_normal, name="code")(x)
        x = activation(nn.Dense(self.width, kernel_init=fan_in_normal, name="decoder")(code))
        return Readout(self.num_outputs, self.parameterization, name="readout")(x)

    @staticmethod
    def roles(params):
        return assign_roles(params, input_layers=("encoder", "decoder"), output_layers=("code", "readout"))
