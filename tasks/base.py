"""The interfaces every task and task family implements.

A task is a training problem: parameters to initialize, a loss, batches drawn on device, and the muP
role of every parameter tensor. A task family is a distribution over task configs. Learned optimizers
are meta-trained on families and evaluated on held-out tasks.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, ClassVar, Literal

import jax
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of arrays
Batch = Any  # a pytree of arrays
Data = Any  # a pytree of device arrays a task draws its batches from
Role = Literal["input", "hidden", "output"]
ROLES: tuple[str, ...] = ("input", "hidden", "output")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
PARAMETERIZATIONS: tuple[str, ...] = ("mup", "sp")


class Task(abc.ABC):
    """One training problem. Methods are pure JAX functions of explicit arguments, so callers can jit,
    vmap and scan them; the task object itself is never a static argument of a jitted function.

    The data a task samples from is passed explicitly (`task.batch(data, key)`) rather than captured:
    captured arrays become constants inside the compiled program, which costs compile time and memory
    for every function that uses them.
    """

    config: "TaskConfig"

    @abc.abstractmethod
    def init(self, key: PRNGKey) -> Params:
        """Fresh parameters."""

    @abc.abstractmethod
    def loss_and_aux(self, params: Params, batch: Batch, key: PRNGKey) -> tuple[Array, dict[str, Array]]:
        """The scalar training loss and auxiliary metrics such as accuracy."""

    def loss(self, params: Params, batch: Batch, key: PRNGKey) -> Array:
        return self.loss_and_aux(params, batch, key)[0]

    def eval_loss_and_aux(self, params: Params, batch: Batch) -> tuple[Array, dict[str, Array]]:
        """The loss and metrics with the model in inference mode (dropout off): what held-out metrics
        measure. The default is loss_and_aux with a fixed key, right for a model that draws nothing."""
        return self.loss_and_aux(params, batch, jax.random.key(0))

    @property
    @abc.abstractmethod
    def data(self) -> Data:
        """Device arrays the batches come from (an empty dict for tasks that generate their batches)."""

    @abc.abstractmethod
    def batch(self, data: Data, key: PRNGKey, split: str = "train") -> Batch:
        """A batch of the given split, drawn with `jax.random` on device (jittable, no host work)."""

    @abc.abstractmethod
    def held_out(self, data: Data, split: str = "valid") -> Batch:
        """A fixed batch of a split, the same at every call (no key): the whole split where it is small,
        else a fixed sample. Evaluation measures every optimizer on it, so their losses are comparable."""

    @abc.abstractmethod
    def roles(self, params: Params) -> Any:
        """A pytree like params holding each tensor's muP role: "input", "hidden" or "output"."""

    @abc.abstractmethod
    def normalize_loss(self, loss: Array) -> Array:
        """Maps a loss to a scale comparable across tasks (about 1 for an untrained model)."""


class TaskFamily(abc.ABC):
    """A distribution over task configs."""

    @abc.abstractmethod
    def sample(self, key: PRNGKey) -> "TaskConfig":
        """A config drawn from the family; the same key gives the same config."""

    def sample_many(self, key: PRNGKey, count: int) -> list["TaskConfig"]:
        """`count` configs, e.g. the task configs of a meta-training run: independent draws unless a
        family spreads them over its choices."""
        return [self.sample(jax.random.fold_in(key, index)) for index in range(count)]

    def sample_buckets(self, key: PRNGKey, count: int) -> list[tuple["TaskConfig", ...]]:
        """The configs of a meta-training run, grouped in shape buckets: the configs of a bucket differ
        only in their dataset, so their parameters and batches have the same shapes, and a worker of
        the bucket can restart on any of them inside one compiled program. Here: `count` buckets of one
        config each (`sample_many`)."""
        return [(config,) for config in self.sample_many(key, count)]

    def task(self, config: "TaskConfig") -> Task:
        return config.build()


@dataclasses.dataclass(frozen=True)
class TaskConfig(abc.ABC):
    """A small, hashable, JSON-serializable record that fully determines a task.

    Subclasses are frozen dataclasses of plain values with a unique `kind`; they validate their fields
    in `__post_init__` and name the field that is wrong.
    """

    kind: ClassVar[str]

    @abc.abstractmethod
    def build(self) -> Task:
        """The task this config describes."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "TaskConfig":
        return dataclasses.replace(self, **changes)

    def short_name(self) -> str:
        """The kind, then the dataset and sizes, for plots and TensorBoard: "image_mlp/digits_8_w32_d2"."""
        fields = dataclasses.asdict(self)
        parts = [str(fields[name]) for name in ("dataset", "image_size") if fields.get(name) is not None]
        parts += [f"{letter}{fields[name]}" for name, letter in (("width", "w"), ("depth", "d"), ("dim", "n"))
                  if name in fields]
        return f"{self.kind}/{'_'.join(parts)}"


class ConfigError(ValueError):
    """A config field holds a value the task cannot use."""


def require(ok: bool, config: object, field: str, why: str) -> None:
    """Raises a ConfigError naming the config class, the field, its value and what is expected."""
    if not ok:
        value = getattr(config, field)
        raise ConfigError(f"{type(config).__name__}.{field}={value!r}: {why}")


def require_positive_int(config: object, *fields: str) -> None:
    for field in fields:
        value = getattr(config, field)
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0, config, field,
                "must be a positive integer")


def require_choice(config: object, field: str, choices: tuple[str, ...]) -> None:
    require(getattr(config, field) in choices, config, field, f"must be one of {', '.join(choices)}")


def numpy_rng(key: PRNGKey) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key, for host-side choices such as sampling a config."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
