"""The task over a model's functions and arrays of examples, which tasks.from_functions and
tasks.from_flax make (for a user's model and for the built-in supervised ones), and the config record of
a user's task."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import jax

from tasks.base import ConfigError, Task, TaskConfig
from tasks.datasets import held_out_examples, sample_examples


class TaskError(ConfigError):
    """A user's task or task family that cannot work, named with what is wrong. A ConfigError, so the
    command lines print it as one line."""


@dataclasses.dataclass(frozen=True)
class CustomTaskConfig(TaskConfig):
    """The record of a user's task: it names the task, it does not rebuild it (the model and the data
    live in the user's code), so `build()` refuses and the family object that holds the task answers
    `family.task(config)`. Recorded in provenance and evaluation caches like any config."""

    kind = "custom"
    name: str  # the task's name, given to tasks.from_functions / from_flax
    family: str | None = None  # the name of the family holding it; None for a task on its own
    index: int = 0  # its place in the family (a sampler family: the draw)
    fingerprint: str = ""  # a digest of the task's arrays and shapes: other data is another config

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TaskError(f"CustomTaskConfig.name={self.name!r}: must be a non-empty string")
        if self.family is not None and (not isinstance(self.family, str) or not self.family):
            raise TaskError(f"CustomTaskConfig.family={self.family!r}: must be a non-empty string or None")
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise TaskError(f"CustomTaskConfig.index={self.index!r}: must be a non-negative integer")
        if not isinstance(self.fingerprint, str):
            raise TaskError(f"CustomTaskConfig.fingerprint={self.fingerprint!r}: must be a string")

    def build(self) -> Task:
        where = f"family {self.family!r}" if self.family else "tasks.from_functions / tasks.from_flax"
        raise TaskError(f"task {self.name!r} is a user's task: its config records it but cannot rebuild it; "
                        f"ask the object that made it ({where}, e.g. by its import path module:attribute)")

    def short_name(self) -> str:
        return f"{self.kind}/{self.family}/{self.name}" if self.family else f"{self.kind}/{self.name}"


def tree_paths(tree) -> tuple[str, ...]:
    """The path of every leaf, in jax.tree.leaves order (dicts by sorted key, whatever their order)."""
    return tuple(jax.tree_util.keystr(path) or "<root>"
                 for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


def split_loss_output(output) -> tuple[Any, dict[str, Any]]:
    """(loss, aux) from what a user's loss returns: a scalar, or (scalar, dict of metrics)."""
    if isinstance(output, tuple):
        loss, aux = output
        return loss, dict(aux)
    return output, {}


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayTask(Task):
    """A Task over a model's functions and arrays of examples; made by tasks.from_functions and
    tasks.from_flax, which check every field. Batches are rows of the splits drawn on device (jittable);
    the held-out batch is the whole split up to tasks.datasets.HELD_OUT_EXAMPLES rows, else a fixed
    sample. Its config is a CustomTaskConfig for a user's task, a built-in's own config for a built-in."""

    config: TaskConfig
    init_fn: Callable[[Any], Any] = dataclasses.field(repr=False)  # key -> params
    loss_fn: Callable[[Any, Any, Any], Any] = dataclasses.field(repr=False)  # (params, batch, key) -> loss[, aux]
    splits: dict[str, Any] = dataclasses.field(repr=False)  # split -> pytree of device arrays, examples first
    batch_size: int = dataclasses.field(repr=False)  # training examples a batch
    valid_batch_size: int = dataclasses.field(repr=False)  # examples of a "valid" or "test" batch
    role_leaves: tuple[str, ...] = dataclasses.field(repr=False)  # in jax.tree.leaves(params) order
    role_paths: tuple[str, ...] = dataclasses.field(repr=False)  # jax.tree_util.keystr of each tensor
    loss_scale: float = dataclasses.field(repr=False)  # the mean loss at init: normalize_loss divides by it
    # (params, batch) -> loss[, aux] in inference mode (dropout off); None: loss_fn with a fixed key
    eval_loss_fn: Callable[[Any, Any], Any] | None = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        """A user's task: the name it was made with; a built-in: its config's short name."""
        return self.config.name if isinstance(self.config, CustomTaskConfig) else self.config.short_name()

    @property
    def data(self) -> dict[str, Any]:
        return self.splits

    def init(self, key):
        return self.init_fn(key)

    def loss_and_aux(self, params, batch, key):
        return split_loss_output(self.loss_fn(params, batch, key))

    def eval_loss_and_aux(self, params, batch):
        if self.eval_loss_fn is None:
            return super().eval_loss_and_aux(params, batch)
        return split_loss_output(self.eval_loss_fn(params, batch))

    def _split(self, data, split: str):
        if split not in data:
            raise TaskError(f"task {self.name!r} has no {split!r} split (it has {', '.join(data)}); "
                            f"pass {split}= when making it")
        return data[split]

    def batch(self, data, key, split: str = "train"):
        size = self.batch_size if split == "train" else self.valid_batch_size
        return sample_examples(self._split(data, split), key, size)

    def held_out(self, data, split: str = "valid"):
        return held_out_examples(self._split(data, split))

    def roles(self, params):
        """The roles fixed at construction, in the structure of `params` (arrays or shapes, any order)."""
        if tree_paths(params) != self.role_paths:
            raise TaskError(f"task {self.name!r}: roles asked for params unlike its init's "
                            f"({len(jax.tree.leaves(params))} tensors, the init has {len(self.role_paths)})")
        return jax.tree.unflatten(jax.tree.structure(params), list(self.role_leaves))

    def normalize_loss(self, loss):
        return loss / self.loss_scale

    def __repr__(self) -> str:
        return f"ArrayTask({self.config.short_name()!r})"


def config_digest(config: TaskConfig) -> str:
    """What names a task's data and sizes in a family's records: a user's task, the digest of its arrays
    (CustomTaskConfig.fingerprint); any other, a digest of its config's record."""
    if isinstance(config, CustomTaskConfig):
        return config.fingerprint
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:16]
