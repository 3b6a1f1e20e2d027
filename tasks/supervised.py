"""Tasks that fit a model to (input, target) examples: image classification and regression."""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import optax

from tasks.base import Task, TaskConfig
from tasks.datasets import held_out_examples, sample_examples


class SupervisedTask(Task):
    """A flax model trained on minibatches of examples drawn from fixed splits.

    `data` maps each split to {"input": (N, ...), "target": (N, ...)}; classification targets are class
    ids (N,), regression targets are floats, as many per example as the model has outputs (an
    autoencoder's target is its input).
    """

    def __init__(self, config: TaskConfig, model: nn.Module, data: Callable[[], dict[str, Any]],
                 input_shape: tuple[int, ...], batch_size: int, num_classes: int | None, loss_scale: float):
        self.config = config
        self.model = model
        self.input_shape = input_shape  # of one example
        self._data = data
        self.batch_size = batch_size
        self.num_classes = num_classes  # None for regression
        self.loss_scale = loss_scale

    @property
    def data(self) -> dict[str, Any]:
        return self._data()

    def init(self, key):
        return self.model.init(key, jnp.zeros((1,) + self.input_shape, jnp.float32))["params"]

    def batch(self, data, key, split: str = "train"):
        return sample_examples(data[split], key, self.batch_size)

    def held_out(self, data, split: str = "valid"):
        return held_out_examples(data[split])

    def loss_and_aux(self, params, batch, key):
        del key  # the models are deterministic
        outputs = self.model.apply({"params": params}, batch["input"])
        if self.num_classes is None:  # regression: one output per target value
            loss = jnp.mean(jnp.square(outputs.reshape(batch["target"].shape) - batch["target"]))
            return loss, {}
        loss = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["target"]).mean()
        accuracy = jnp.mean(jnp.argmax(outputs, axis=-1) == batch["target"])
        return loss, {"accuracy": accuracy}

    def roles(self, params):
        return self.model.roles(params)

    def normalize_loss(self, loss):
        return loss / self.loss_scale

    def __repr__(self) -> str:
        return f"SupervisedTask({self.config!r})"


def classification_loss_scale(num_classes: int) -> float:
    """The cross-entropy of a uniform prediction, which a muP model (zero readout) starts at."""
    return math.log(num_classes)
