"""A small convolutional classifier."""

from __future__ import annotations

import flax.linen as nn
import jax

from tasks.models.layers import ACTIVATIONS, Readout, assign_roles, fan_in_normal


class ConvNet(nn.Module):
    """`depth` 3x3 convolutions of `width` channels, each followed by 2x2 pooling (`pool`: "avg" or
    "max") while the feature map is at least 4 pixels wide, then global average pooling and the readout.

    "conv_0" reads the image channels (its fan-in does not grow with width: muP "input"); the other
    convolutions map width to width channels ("hidden").
    """

    width: int
    depth: int
    num_outputs: int
    activation: str = "relu"
    parameterization: str = "mup"
    pool: str = "avg"  # "avg" or "max": the 2x2 pooling after each convolution

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        for layer in range(self.depth):
            x = nn.Conv(self.width, (3, 3), kernel_init=fan_in_normal, name=f"conv_{layer}")(x)
            x = activation(x)
            if x.shape[1] >= 4:
                x = (nn.max_pool if self.pool == "max" else nn.avg_pool)(x, (2, 2), strides=(2, 2))
        x = x.mean(axis=(1, 2))
        return Readout(self.num_outputs, self.parameterization, name="readout")(x)

    @staticmethod
    def roles(params):
        return assign_roles(params, input_layers=("conv_0",), output_layers=("readout",))
