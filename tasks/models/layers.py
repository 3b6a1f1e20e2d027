"""Pieces shared by the models: muP / standard-parameterization initializers, the readout layer and the
assignment of muP roles to parameter tensors.

muP as muLO (Therien et al. 2024) states it: input and hidden weights are drawn from N(0, 1/fan_in);
the readout is zero-initialized and its logits are multiplied by 1/fan_in; attention logits are divided
by d_head instead of sqrt(d_head). In standard parameterization (SP) the readout is drawn from
N(0, 1/fan_in) like every other weight and has no multiplier.

Kernels follow the flax convention of the output dimension last, so fan_in = prod(shape[:-1]) for a
dense (in, out) or convolution (h, w, in, out) kernel.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# N(0, 1/fan_in), the init of every input and hidden weight in both parameterizations.
fan_in_normal = nn.initializers.variance_scaling(1.0, "fan_in", "normal")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh, "silu": nn.silu,
}


class Readout(nn.Module):
    """The output layer: muP zero-initializes it and scales its logits by 1/fan_in."""

    features: int
    parameterization: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        mup = self.parameterization == "mup"
        kernel = self.param("kernel", nn.initializers.zeros if mup else fan_in_normal,
                            (fan_in, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        logits = x @ kernel.astype(x.dtype)
        if mup:
            logits = logits / fan_in
        return logits + bias.astype(x.dtype).reshape((1,) * (logits.ndim - 1) + (-1,))


def assign_roles(params: Any, input_layers: tuple[str, ...], output_layers: tuple[str, ...]) -> Any:
    """Each tensor's muP role: vectors and scalars (biases, norm weights) and the weights of the named
    input layers are "input", weights of the named output layers are "output", every other weight
    (fan-in and fan-out both grow with width) is "hidden"."""

    def role(path, leaf) -> str:
        names = {getattr(entry, "key", getattr(entry, "name", None)) for entry in path}
        if jnp.ndim(leaf) < 2 or names & set(input_layers):
            return "input"
        if names & set(output_layers):
            return "output"
        return "hidden"

    return jax.tree_util.tree_map_with_path(role, params)


def fan_in(tensor: jax.Array) -> int:
    """The fan-in of a kernel under the output-dimension-last convention (1 for vectors)."""
    shape = jnp.shape(tensor)
    size = 1
    for dim in shape[:-1]:
        size *= dim
    return size
