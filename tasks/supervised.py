"""The built-in tasks that fit a flax model to (input, target) examples (image classification, an
autoencoder, tabular and teacher-student regression), made by the public tasks.from_flax as a user's
model is, each under its own config."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from tasks.array_task import ArrayTask
from tasks.base import TaskConfig
from tasks.custom_flax import from_flax


def built_once(build: Callable[[TaskConfig], ArrayTask]) -> Callable[[TaskConfig], ArrayTask]:
    """A config's `build`, made once per config and process: the config determines the task (an
    ArrayTask is immutable, so one object serves every caller), and making it traces the model for
    from_flax's checks."""
    return functools.lru_cache(maxsize=128)(build)


def supervised_task(config: TaskConfig, model: nn.Module, splits: dict[str, Any], input_shape: tuple[int, ...],
                    loss: str, loss_scale: float) -> ArrayTask:
    """`splits` maps each split to {"input": (N, ...), "target": (N, ...)} device arrays; loss is
    "cross_entropy" (class ids) or "mse" (as many floats an example as the model has outputs; an
    autoencoder's target is its input). The model names its tensors' roles (`model.roles`)."""
    pairs = {split: (arrays["input"], arrays["target"]) for split, arrays in splits.items()}
    return from_flax(model, pairs["train"], pairs["valid"], test=pairs.get("test"), loss=loss,
                     batch_size=config.batch_size, name=config.short_name(), roles=model.roles,
                     init_input=jnp.zeros((1,) + tuple(input_shape), jnp.float32), loss_scale=loss_scale,
                     config=config)


def classification_loss_scale(num_classes: int) -> float:
    """The cross-entropy of a uniform prediction, which a muP model (zero readout) starts at."""
    return math.log(num_classes)
