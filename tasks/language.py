"""Character-level language modeling: a decoder-only transformer or a recurrent (LSTM) model."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

from tasks.base import PARAMETERIZATIONS, Task, TaskConfig, require, require_choice, require_positive_int
from tasks.datasets import check_text_dataset_name, held_out_windows, load_text_dataset, sample_windows
from tasks.models import LSTMLM, TransformerLM


@functools.lru_cache(maxsize=8)
def text_device_data(dataset: str):
    """The splits of a text dataset as device token arrays, uploaded once per process."""
    with jax.ensure_compile_time_eval():  # concrete arrays even when first asked for inside a trace
        return load_text_dataset(dataset).device_arrays()


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig(TaskConfig):
    """A causal transformer predicting the next character."""

    kind = "language_model"
    dataset: str = "shakespeare"  # "shakespeare" or "text:FILE"
    width: int = 64  # model dimension d_model
    depth: int = 2  # transformer blocks
    head_dim: int = 16  # d_head; heads = width / head_dim, so heads grow with width (muP)
    sequence_length: int = 64  # characters a training window (the model's context)
    batch_size: int = 16  # windows a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        check_text_dataset_name(self.dataset)
        require_positive_int(self, "width", "depth", "head_dim", "sequence_length", "batch_size")
        require(self.width % self.head_dim == 0, self, "width",
                f"must be a multiple of head_dim={self.head_dim}")
        require_choice(self, "parameterization", PARAMETERIZATIONS)

    def build(self) -> "LanguageModelTask":
        vocab_size = load_text_dataset(self.dataset).vocab_size
        return LanguageModelTask(self, TransformerLM(
            vocab_size=vocab_size, width=self.width, depth=self.depth, head_dim=self.head_dim,
            max_length=self.sequence_length, parameterization=self.parameterization), vocab_size)


@dataclasses.dataclass(frozen=True)
class RecurrentLMConfig(TaskConfig):
    """An LSTM predicting the next character."""

    kind = "recurrent_lm"
    dataset: str = "shakespeare"  # "shakespeare" or "text:FILE"
    width: int = 64  # units of every LSTM layer (and the embedding)
    depth: int = 1  # LSTM layers
    sequence_length: int = 32  # characters a training window (the steps backprop runs through)
    batch_size: int = 16  # windows a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        check_text_dataset_name(self.dataset)
        require_positive_int(self, "width", "depth", "sequence_length", "batch_size")
        require_choice(self, "parameterization", PARAMETERIZATIONS)

    def build(self) -> "LanguageModelTask":
        vocab_size = load_text_dataset(self.dataset).vocab_size
        return LanguageModelTask(self, LSTMLM(vocab_size=vocab_size, width=self.width, depth=self.depth,
                                              parameterization=self.parameterization), vocab_size)


class LanguageModelTask(Task):
    """Batches are {"tokens": (B, L + 1)}: the model reads the first L and predicts the last L. The config
    needs `dataset`, `sequence_length` and `batch_size`; the model maps (B, L) tokens to (B, L, vocab)
    logits and names its tensors' roles."""

    def __init__(self, config: TaskConfig, model, vocab_size: int):
        self.config = config
        self.vocab_size = vocab_size
        self.model = model

    @property
    def data(self):
        return text_device_data(self.config.dataset)

    def init(self, key):
        return self.model.init(key, jnp.zeros((1, self.config.sequence_length), jnp.int32))["params"]

    def batch(self, data, key, split: str = "train"):
        windows = sample_windows(data[split]["tokens"], key, self.config.batch_size,
                                 self.config.sequence_length + 1)
        return {"tokens": windows}

    def held_out(self, data, split: str = "valid"):
        return {"tokens": held_out_windows(data[split]["tokens"], self.config.sequence_length + 1)}

    def loss_and_aux(self, params, batch, key):
        del key
        tokens = batch["tokens"]
        logits_BLV = self.model.apply({"params": params}, tokens[:, :-1])
        targets_BL = tokens[:, 1:]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits_BLV, -1) == targets_BL)}

    def roles(self, params):
        return self.model.roles(params)

    def normalize_loss(self, loss):
        return loss / math.log(self.vocab_size)

    def __repr__(self) -> str:
        return f"LanguageModelTask({self.config!r})"
