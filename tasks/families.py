"""Task families: distributions over task configs, each field drawn uniformly from a tuple of choices.

Choices are discrete on purpose: tasks whose parameters have the same shapes can be vmapped together,
and a finite set of shapes means a finite number of compilations in meta-training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tasks.base import ConfigError, TaskConfig, TaskFamily, numpy_rng
from tasks.image import ImageMLPConfig
from tasks.procedural import QuadraticConfig


def _require_choices(family: object, *fields: str) -> None:
    for field in fields:
        choices = getattr(family, field)
        if not isinstance(choices, tuple) or not choices:
            raise ConfigError(f"{type(family).__name__}.{field}={choices!r}: must be a non-empty tuple of choices")


def _pick(rng, choices: tuple[Any, ...]) -> Any:
    return choices[int(rng.integers(len(choices)))]


@dataclasses.dataclass(frozen=True)
class ImageMLPFamily(TaskFamily):
    """MLP classifiers on image datasets at several sizes, widths and depths."""

    datasets: tuple[tuple[str, int], ...] = (("digits", 8), ("mnist", 8), ("mnist", 14))  # (dataset, image size)
    widths: tuple[int, ...] = (32, 64, 128)  # hidden units
    depths: tuple[int, ...] = (1, 2)  # hidden layers
    batch_sizes: tuple[int, ...] = (64, 128)  # examples a step
    activations: tuple[str, ...] = ("relu",)  # one of tasks.models.ACTIVATIONS each
    parameterizations: tuple[str, ...] = ("mup",)  # "mup" and / or "sp"

    def __post_init__(self):
        _require_choices(self, "datasets", "widths", "depths", "batch_sizes", "activations", "parameterizations")
        for dataset, size in self.datasets:  # fail now, not at the first sample
            ImageMLPConfig(dataset=dataset, image_size=size)

    def sample(self, key) -> ImageMLPConfig:
        rng = numpy_rng(key)
        dataset, image_size = _pick(rng, self.datasets)
        return ImageMLPConfig(dataset=dataset, image_size=image_size, width=_pick(rng, self.widths),
                              depth=_pick(rng, self.depths), batch_size=_pick(rng, self.batch_sizes),
                              activation=_pick(rng, self.activations),
                              parameterization=_pick(rng, self.parameterizations))

    def sample_many(self, key, count: int) -> list[ImageMLPConfig]:
        """Stratified draws: every field takes each of its choices about count / choices times, in a
        random pairing with the other fields. A meta-training run holds a few configs for its whole length;
        independent draws often leave a dataset or a depth out entirely (4 draws with seed 0 were all
        depth-2 MLPs on 8x8 images, and the optimizer meta-trained on them fell behind on the others)."""
        rng = numpy_rng(key)

        def spread(choices: tuple) -> list:
            order = rng.permutation(len(choices))
            return [choices[order[index % len(choices)]] for index in rng.permutation(count)]

        columns = [spread(self.datasets), spread(self.widths), spread(self.depths), spread(self.batch_sizes),
                   spread(self.activations), spread(self.parameterizations)]
        return [ImageMLPConfig(dataset=dataset, image_size=size, width=width, depth=depth, batch_size=batch_size,
                               activation=activation, parameterization=parameterization)
                for (dataset, size), width, depth, batch_size, activation, parameterization in zip(*columns)]


@dataclasses.dataclass(frozen=True)
class QuadraticFamily(TaskFamily):
    """Random quadratics of several sizes and conditionings."""

    dims: tuple[int, ...] = (10,)  # parameters
    condition_numbers: tuple[float, ...] = (10.0, 100.0, 1000.0)  # eigenvalue spread
    noise_stds: tuple[float, ...] = (0.0, 0.1)  # gradient noise
    num_seeds: int = 1000  # distinct matrices A per (dim, condition number)

    def __post_init__(self):
        _require_choices(self, "dims", "condition_numbers", "noise_stds")

    def sample(self, key) -> QuadraticConfig:
        rng = numpy_rng(key)
        return QuadraticConfig(dim=_pick(rng, self.dims), condition_number=_pick(rng, self.condition_numbers),
                               noise_std=_pick(rng, self.noise_stds), seed=int(rng.integers(self.num_seeds)))


def _without_dataset(config: TaskConfig) -> dict:
    fields = dataclasses.asdict(config)
    fields.pop("dataset", None)
    return fields


@dataclasses.dataclass(frozen=True)
class MixedFamily(TaskFamily):
    """Several model families at once, in shape buckets. Every bucket is meta-trained at every outer step
    (its shapes are compiled into the step); a bucket's workers restart on any of its configs, which
    differ only in their dataset (the same model on other data of the same shape)."""

    buckets: tuple[tuple[TaskConfig, ...], ...]

    def __post_init__(self):
        if not isinstance(self.buckets, tuple) or not self.buckets:
            raise ConfigError(f"MixedFamily.buckets={self.buckets!r}: must be a non-empty tuple of buckets")
        for index, bucket in enumerate(self.buckets):
            if not isinstance(bucket, tuple) or not bucket:
                raise ConfigError(f"MixedFamily.buckets[{index}]={bucket!r}: must be a non-empty tuple of configs")
            model = _without_dataset(bucket[0])
            for config in bucket[1:]:
                if type(config) is not type(bucket[0]) or _without_dataset(config) != model:
                    raise ConfigError(f"MixedFamily.buckets[{index}]: {config} differs from {bucket[0]} in more "
                                      "than its dataset (a bucket's configs must share the model)")

    def sample(self, key) -> TaskConfig:
        rng = numpy_rng(key)
        return _pick(rng, _pick(rng, self.buckets))

    def sample_buckets(self, key, count: int) -> list[tuple[TaskConfig, ...]]:
        """Every bucket, whatever `count` (a run of a bucketed family trains all of them)."""
        del key, count
        return list(self.buckets)


class FixedTaskFamily(TaskFamily):
    """A family that always gives the same config: meta-train on one task."""

    def __init__(self, config: TaskConfig):
        self.config = config

    def sample(self, key) -> TaskConfig:
        del key
        return self.config
