"""A decoder-only (causal) transformer language model with pre-layer-norm blocks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tasks.models.layers import Readout, assign_roles, fan_in_normal

# Token and position embeddings are drawn from N(0, 1): their fan-in (the vocabulary, the context) does
# not grow with width, and unit-scale coordinates are what muP asks of every activation.
embedding_normal = nn.initializers.normal(1.0)


class CausalSelfAttention(nn.Module):
    width: int
    head_dim: int
    parameterization: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        heads = self.width // self.head_dim

        def project(name: str) -> jax.Array:
            y = nn.Dense(self.width, use_bias=False, kernel_init=fan_in_normal, name=name)(x)
            return y.reshape(batch, length, heads, self.head_dim)

        query, key, value = project("query"), project("key"), project("value")
        # muP divides attention logits by d_head (query and key become correlated as they train, so
        # their dot product grows like d_head, not sqrt(d_head)); SP keeps 1/sqrt(d_head).
        scale = 1.0 / self.head_dim if self.parameterization == "mup" else self.head_dim ** -0.5
        logits_BHLL = jnp.einsum("blhd,bmhd->bhlm", query, key) * scale
        causal = jnp.tril(jnp.ones((length, length), bool))
        logits_BHLL = jnp.where(causal, logits_BHLL, jnp.finfo(logits_BHLL.dtype).min)
        weights = jax.nn.softmax(logits_BHLL, axis=-1)
        mixed = jnp.einsum("bhlm,bmhd->blhd", weights, value).reshape(batch, length, self.width)
        return nn.Dense(self.width, use_bias=False, kernel_init=fan_in_normal, name="out")(mixed)


class Block(nn.Module):
    width: int
    head_dim: int
    parameterization: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + CausalSelfAttention(self.width, self.head_dim, self.parameterization, name="attention")(
            nn.LayerNorm(name="attention_norm")(x))
        hidden = nn.Dense(4 * self.width, kernel_init=fan_in_normal, name="mlp_in")(
            nn.LayerNorm(name="mlp_norm")(x))
        return x + nn.Dense(self.width, kernel_init=fan_in_normal, name="mlp_out")(nn.gelu(hidden))


class TransformerLM(nn.Module):
    """Next-token logits for a batch of token windows (B, L) -> (B, L, vocab)."""

    vocab_size: int
    width: int
    depth: int
    head_dim: int
    max_length: int
    parameterization: str = "mup"

    @nn.compact
    def __call__(self, tokens_BL: jax.Array) -> jax.Array:
        embed = nn.Embed(self.vocab_size, self.width, embedding_init=embedding_normal, name="embed")
        positions = self.param("position_embed", embedding_normal, (self.max_length, self.width))
        x = embed(tokens_BL) + positions[None, : tokens_BL.shape[1]]
        for layer in range(self.depth):
            x = Block(self.width, self.head_dim, self.parameterization, name=f"block_{layer}")(x)
        x = nn.LayerNorm(name="final_norm")(x)
        return Readout(self.vocab_size, self.parameterization, name="readout")(x)

    @staticmethod
    def roles(params):
        return assign_roles(params, input_layers=("embed", "position_embed"), output_layers=("readout",))
