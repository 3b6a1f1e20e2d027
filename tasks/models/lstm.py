"""A recurrent (LSTM) character language model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tasks.models.layers import Readout, assign_roles, fan_in_normal
from tasks.models.transformer import embedding_normal


class LSTMLM(nn.Module):
    """Next-token logits for token windows (B, L) -> (B, L, vocab): an embedding, `depth` LSTM layers of
    `width` units, the readout.

    Each layer is two matrices: "input_gates" (width -> 4 * width, with the gates' bias) reads the layer
    below for all steps at once, "recurrent_gates" (width -> 4 * width) reads the previous state inside
    the scan. Both grow with width on both sides: muP "hidden". The forget gate's bias starts at 1, the
    usual remedy for vanishing memory early in training.
    """

    vocab_size: int
    width: int
    depth: int
    parameterization: str = "mup"

    @nn.compact
    def __call__(self, tokens_BL: jax.Array) -> jax.Array:
        x_BLW = nn.Embed(self.vocab_size, self.width, embedding_init=embedding_normal, name="embed")(tokens_BL)
        for layer in range(self.depth):
            x_BLW = _LSTMLayer(self.width, name=f"lstm_{layer}")(x_BLW)
        return Readout(self.vocab_size, self.parameterization, name="readout")(x_BLW)

    @staticmethod
    def roles(params):
        return assign_roles(params, input_layers=("embed",), output_layers=("readout",))


def _forget_bias(key, shape, dtype=jnp.float32):
    """Gate order is (input, forget, cell, output): the forget quarter starts at 1."""
    width = shape[0] // 4
    return jnp.zeros(shape, dtype).at[width:2 * width].set(1.0)


class _LSTMLayer(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x_BLW: jax.Array) -> jax.Array:
        gates_in_BLG = nn.Dense(4 * self.width, kernel_init=fan_in_normal, bias_init=_forget_bias,
                                name="input_gates")(x_BLW)
        recurrent_WG = self.param("recurrent_gates", fan_in_normal, (self.width, 4 * self.width))
        batch = x_BLW.shape[0]

        def cell(carry, gates_in_BG):
            hidden_BW, cell_BW = carry
            gates = gates_in_BG + hidden_BW @ recurrent_WG
            input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=-1)
            cell_BW = jax.nn.sigmoid(forget_gate) * cell_BW + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate)
            hidden_BW = jax.nn.sigmoid(output_gate) * jnp.tanh(cell_BW)
            return (hidden_BW, cell_BW), hidden_BW

        zeros = jnp.zeros((batch, self.width), x_BLW.dtype)
        _, hidden_LBW = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(gates_in_BLG, 0, 1))
        return jnp.swapaxes(hidden_LBW, 0, 1)
