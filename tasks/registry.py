"""Named tasks and task families, found by plain dictionary look-up (no gin, no string magic).

`get_task("mlp_mnist_14x14", width=512, parameterization="sp")` builds a registered task with fields
changed; `config_from_dict` rebuilds any task from the record `TaskConfig.to_dict` wrote.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tasks.base import ConfigError, Task, TaskConfig, TaskFamily
from tasks.array_task import CustomTaskConfig
from tasks.families import ImageMLPFamily, MixedFamily, QuadraticFamily
from tasks.image import ConvConfig, ImageAutoencoderConfig, ImageMLPConfig, MaxPoolConvConfig
from tasks.language import LanguageModelConfig, RecurrentLMConfig
from tasks.procedural import QuadraticConfig, TeacherStudentConfig
from tasks.tabular import TabularClassificationConfig, TabularRegressionConfig

CONFIG_TYPES: dict[str, type[TaskConfig]] = {
    config_type.kind: config_type
    for config_type in (ImageMLPConfig, ConvConfig, MaxPoolConvConfig, ImageAutoencoderConfig, LanguageModelConfig,
                        RecurrentLMConfig, TabularRegressionConfig, TabularClassificationConfig, QuadraticConfig,
                        TeacherStudentConfig, CustomTaskConfig)  # a user's task: recorded and read back, rebuilt by its family
}

TASKS: dict[str, TaskConfig] = {
    "mlp_digits_8x8": ImageMLPConfig(dataset="digits", image_size=8, width=64, depth=2),
    "mlp_mnist_8x8": ImageMLPConfig(dataset="mnist", image_size=8, width=64, depth=2),
    "mlp_mnist_14x14": ImageMLPConfig(dataset="mnist", image_size=14, width=128, depth=2),
    "mlp_mnist_28x28": ImageMLPConfig(dataset="mnist", image_size=28, width=128, depth=2),
    "conv_digits_8x8": ConvConfig(dataset="digits", image_size=8, width=16, depth=2),
    "conv_mnist_14x14": ConvConfig(dataset="mnist", image_size=14, width=16, depth=2),
    "conv_maxpool_mnist_14x14": MaxPoolConvConfig(dataset="mnist", image_size=14, width=64, depth=3),
    "autoencoder_mnist_14x14": ImageAutoencoderConfig(dataset="mnist", image_size=14, width=128, code_size=16),
    "transformer_shakespeare": LanguageModelConfig(dataset="shakespeare", width=64, depth=2),
    "lstm_shakespeare": RecurrentLMConfig(dataset="shakespeare", width=64, depth=1),
    "mlp_diabetes": TabularRegressionConfig(dataset="diabetes", width=64, depth=2),
    "mlp_breast_cancer": TabularClassificationConfig(dataset="breast_cancer", width=64, depth=2),
    "mlp_wine": TabularClassificationConfig(dataset="wine", width=64, depth=2),
    "quadratic_10d": QuadraticConfig(dim=10, condition_number=100.0),
    "teacher_student": TeacherStudentConfig(),
}


def _in_sp(buckets):
    """The buckets' models in standard parameterization."""
    return tuple(tuple(config.replace(parameterization="sp") for config in bucket) for bucket in buckets)


def _on_digits_and_mnist(config: TaskConfig) -> tuple[TaskConfig, ...]:
    """A bucket of the model on the two offline 8x8 image sets."""
    return config.replace(dataset="digits"), config.replace(dataset="mnist")


# Every model family of the library in one run, at sizes a 2-core CPU meta-trains (each model under 30k
# parameters). The evaluate `ood` suite's transformer, LSTM and conv net are wider or deeper than these,
# and its tabular regression and autoencoder are families this never shows. The width-128 MLP is there to
# overfit (digits has 1,797 images): in models too small to overfit, validation loss tracks training loss
# and the validation half of the meta-loss teaches nothing about generalization.
MIXED_CPU = MixedFamily(buckets=(
    _on_digits_and_mnist(ImageMLPConfig(image_size=8, width=32, depth=2, batch_size=64)),
    _on_digits_and_mnist(ImageMLPConfig(image_size=8, width=128, depth=2, batch_size=32)),
    (ImageMLPConfig(dataset="mnist", image_size=14, width=64, depth=1, batch_size=64),),
    _on_digits_and_mnist(ConvConfig(image_size=8, width=8, depth=2, batch_size=32)),
    (LanguageModelConfig(width=16, depth=1, head_dim=8, sequence_length=16, batch_size=16),),
    (RecurrentLMConfig(width=32, depth=1, sequence_length=16, batch_size=16),),
))

# The same models in standard parameterization: what a practitioner's own model looks like, and what the
# standard-parameterization rules (normalized_mlp) meta-train on.
MIXED_CPU_SP = MixedFamily(buckets=_in_sp(MIXED_CPU.buckets))

# Its accelerator twin: the same buckets at muLO-like widths.
MIXED_WIDE = MixedFamily(buckets=(
    _on_digits_and_mnist(ImageMLPConfig(image_size=8, width=256, depth=2, batch_size=128)),
    _on_digits_and_mnist(ImageMLPConfig(image_size=8, width=1024, depth=2, batch_size=64)),
    (ImageMLPConfig(dataset="mnist", image_size=14, width=512, depth=2, batch_size=128),),
    _on_digits_and_mnist(ConvConfig(image_size=8, width=32, depth=3, batch_size=64)),
    (LanguageModelConfig(width=128, depth=2, head_dim=16, sequence_length=64, batch_size=32),),
    (RecurrentLMConfig(width=128, depth=1, sequence_length=32, batch_size=32),),
))

# In standard parameterization: what the standard-parameterization rules (normalized_mlp) meta-train on.
MIXED_WIDE_SP = MixedFamily(buckets=_in_sp(MIXED_WIDE.buckets))

# Seconds: two buckets of tiny models (an MLP on either 8x8 set, a transformer LM), for tests and for
# trying the mixed machinery.
MIXED_TINY = MixedFamily(buckets=(
    _on_digits_and_mnist(ImageMLPConfig(image_size=8, width=8, depth=1, batch_size=16)),
    (LanguageModelConfig(width=8, depth=1, head_dim=4, sequence_length=8, batch_size=4),),
))

FAMILIES: dict[str, TaskFamily] = {
    # The default meta-training distribution: MLPs of widths 32-128 on the 8x8 and 14x14 image sets.
    "mlp_images": ImageMLPFamily(),
    # The same in standard parameterization, the muP optimizers' comparison.
    "mlp_images_sp": ImageMLPFamily(parameterizations=("sp",)),
    # muLO's meta-training widths, for accelerators.
    "mlp_images_wide": ImageMLPFamily(widths=(128, 512, 1024)),
    "quadratics": QuadraticFamily(),
    # MLPs, conv nets, transformer and LSTM language models together, in standard parameterization (the
    # default's meta-training family), and at muLO-like widths for accelerators.
    "mixed_sp": MIXED_CPU_SP,
    "mixed_wide_sp": MIXED_WIDE_SP,
    "mixed_tiny": MIXED_TINY,
}


def _unknown(kind: str, name: str, known) -> KeyError:
    return KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")


def task_config(name: str, **changes: Any) -> TaskConfig:
    """The config of a registered task, with fields changed (each checked by the config)."""
    if name not in TASKS:
        raise _unknown("task", name, TASKS)
    config = TASKS[name]
    fields = {field.name for field in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"task {name!r} ({type(config).__name__}) has no field {', '.join(unknown)}; "
                          f"its fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(config, **changes)


def get_task(name_or_config: str | TaskConfig, **changes: Any) -> Task:
    """A task from a registered name (with optional field changes) or from a config."""
    if isinstance(name_or_config, TaskConfig):
        return dataclasses.replace(name_or_config, **changes).build()
    return task_config(name_or_config, **changes).build()


def get_family(name: str) -> TaskFamily:
    if name not in FAMILIES:
        raise _unknown("task family", name, FAMILIES)
    return FAMILIES[name]


def config_from_dict(record: dict[str, Any]) -> TaskConfig:
    """Rebuilds a config from `TaskConfig.to_dict()` output (e.g. read back from JSON)."""
    record = dict(record)
    kind = record.pop("kind", None)
    if kind not in CONFIG_TYPES:
        raise _unknown("task config kind", str(kind), CONFIG_TYPES)
    config_type = CONFIG_TYPES[kind]
    fields = {field.name for field in dataclasses.fields(config_type)}
    unknown = sorted(set(record) - fields)
    if unknown:
        raise ConfigError(f"{config_type.__name__} has no field {', '.join(unknown)}")
    return config_type(**record)
