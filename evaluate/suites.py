"""Evaluation suites: named sets of held-out tasks, each with its training budget, built relative to
what the learned optimizer was meta-trained on (its family's widths and depths, its longest run).

    in_distribution  configs sampled from the meta-training family, new seeds, the meta-training horizon
    width            MLP from the meta-training widths to 32x the widest, and transformer LMs of widths
                     64 to 1024 (also separately: width_mlp, width_transformer)
    depth            MLP of depth 1 up to 4x the deepest meta-training depth
    horizon          the same MLP at 1x, 3x and 10x the meta-training horizon
    other            other data and models: a conv net on MNIST, a transformer on Shakespeare
    ood              seven models from families the image MLPs of meta-training are not: a transformer and
                     an LSTM language model, two conv nets (a small one; a wider one with max-pooling, as
                     practitioners write them), an MLP 16x wider for twice as long, a tabular regression,
                     an MNIST autoencoder

A custom suite is a `Suite` built in Python, a list of `tasks.Task` objects (the user's own models,
trained as they are), or a JSON file:
    {"name": "mine", "tasks": [{"task": "mlp_mnist_14x14", "set": {"width": 256}, "steps": 500}]}
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax

import tasks

WIDTH_MULTIPLIERS = (2, 4, 8, 16, 32)  # of the widest meta-training width
TRANSFORMER_WIDTHS = (64, 128, 256, 512, 1024)
DEPTH_MULTIPLIER = 4
HORIZON_MULTIPLIERS = (1, 3, 10)
OOD_WIDTH_MULTIPLIER, OOD_HORIZON_MULTIPLIER = 16, 2  # the ood suite's wide MLP, of the widest / longest
IN_DISTRIBUTION_SAMPLES = 8
# Keys of the in-distribution samples: far from the small seeds meta-training derives its keys from.
HELD_OUT_KEY = 2_000_003


class SuiteError(ValueError):
    """An unknown suite, or a custom suite file that does not describe one."""


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    label: str  # unique within the suite, as tables and plots show it
    config: tasks.TaskConfig
    num_steps: int
    axis: str | None = None  # what the suite varies across its tasks ("width", "depth", "steps")
    x: float | None = None  # this task's value on that axis
    # False: each optimizer trains the task in its own parameterization (muP optimizers the muP model).
    # True: the config's parameterization is kept for every optimizer (a custom suite that sets it).
    keep_parameterization: bool = False
    # A task passed as an object (evaluate.task_objects): trained as it is, never rebuilt from `config`.
    task: tasks.Task | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if (self.axis is None) != (self.x is None):
            raise SuiteError(f"task {self.label!r}: give both an axis and its value x, or neither")
        if self.x is not None and not (isinstance(self.x, (int, float)) and not isinstance(self.x, bool)
                                       and self.x > 0):
            raise SuiteError(f"task {self.label!r}: x={self.x!r} must be a positive number (plots use log axes)")
        if not (isinstance(self.num_steps, int) and self.num_steps > 0):
            raise SuiteError(f"task {self.label!r}: steps={self.num_steps!r} must be a positive integer")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "config": self.config.to_dict(), "steps": self.num_steps,
                "axis": self.axis, "x": self.x}


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[SuiteTask, ...]

    def __post_init__(self):
        labels = [task.label for task in self.tasks]
        if not labels:
            raise SuiteError(f"suite {self.name!r} has no tasks")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise SuiteError(f"suite {self.name!r}: task labels must be unique; repeated: {', '.join(duplicates)}")


@dataclasses.dataclass(frozen=True)
class MetaTrainingScope:
    """What the optimizer under test was meta-trained on; the suites are defined relative to it."""

    family: str = "mlp_images"  # the default meta-training preset's family
    horizon: int = 1000  # its longest inner run

    @staticmethod
    def recorded_in(spec: dict[str, Any] | None) -> bool:
        """Whether a checkpoint spec records a meta_train config whose family we know."""
        config = ((spec or {}).get("provenance") or {}).get("config") or {}
        return config.get("task_family") in tasks.FAMILIES and "max_inner_length" in config

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> "MetaTrainingScope":
        """From a learned optimizer's checkpoint spec (meta_train records its config as provenance)."""
        config = ((spec or {}).get("provenance") or {}).get("config") or {}
        family = config.get("task_family", cls.family)
        return cls(family=family if family in tasks.FAMILIES else cls.family,
                   horizon=int(config.get("max_inner_length", cls.horizon)))

    def image_family(self) -> tasks.ImageMLPFamily:
        family = tasks.get_family(self.family)
        return family if isinstance(family, tasks.ImageMLPFamily) else tasks.ImageMLPFamily()


def _mlp_label(config: tasks.ImageMLPConfig) -> str:
    return (f"mlp {config.dataset} {config.image_size}x{config.image_size} width {config.width} "
            f"depth {config.depth} batch {config.batch_size}")


def _base_mlp(family: tasks.ImageMLPFamily) -> tasks.ImageMLPConfig:
    """The largest meta-training MLP on the largest image set, in the family's (first) parameterization:
    where the width and depth sweeps start."""
    dataset, size = max(family.datasets, key=lambda item: (item[1], item[0] == "mnist"))
    return tasks.ImageMLPConfig(dataset=dataset, image_size=size, width=max(family.widths),
                                depth=max(family.depths), batch_size=max(family.batch_sizes),
                                parameterization=family.parameterizations[0])


def in_distribution(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    family = tasks.get_family(scope.family)
    configs = []
    for index in range(IN_DISTRIBUTION_SAMPLES * 4):  # a finite family may repeat configs: draw more
        config = family.sample(jax.random.fold_in(jax.random.key(HELD_OUT_KEY), index))
        if config not in configs:
            configs.append(config)
        if len(configs) == IN_DISTRIBUTION_SAMPLES:
            break
    labels = [_mlp_label(c) if isinstance(c, tasks.ImageMLPConfig) else c.short_name().replace("/", " ")
              for c in configs]
    if len(set(labels)) < len(labels):  # configs that differ in fields the label leaves out
        labels = [f"{label} {index}" for index, label in enumerate(labels)]
    return [SuiteTask(label, config, steps) for label, config in zip(labels, configs)]


def width_mlp(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    family = scope.image_family()
    base = _base_mlp(family)
    widths = sorted(set(family.widths) | {max(family.widths) * m for m in WIDTH_MULTIPLIERS})
    return [SuiteTask(f"mlp width {w}", base.replace(width=w), steps, "width", w) for w in widths]


def width_transformer(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    base = tasks.task_config("transformer_shakespeare")
    return [SuiteTask(f"transformer width {w}", base.replace(width=w), steps, "width", w)
            for w in TRANSFORMER_WIDTHS]


def depth(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    family = scope.image_family()
    base = _base_mlp(family)
    deepest = DEPTH_MULTIPLIER * max(family.depths)
    depths = sorted({2 ** k for k in range(deepest.bit_length()) if 2 ** k <= deepest} | {deepest})
    return [SuiteTask(f"mlp depth {d}", base.replace(depth=d), steps, "depth", d) for d in depths]


def horizon(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    base = _base_mlp(scope.image_family())
    return [SuiteTask(f"mlp {m * steps} steps", base, m * steps, "steps", m * steps) for m in HORIZON_MULTIPLIERS]


def other(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    return [SuiteTask(name.replace("_", " "), tasks.task_config(name), steps)
            for name in ("conv_mnist_14x14", "transformer_shakespeare")]


def ood(scope: MetaTrainingScope, steps: int) -> list[SuiteTask]:
    """Models outside the image-MLP family, sized so that the suite with every tuned baseline runs on a
    2-core CPU in well under an hour (the README gives the time): each is the registered task, smaller
    where its default would dominate the suite."""
    family = scope.image_family()
    # One hidden layer: at depth 2 the 2,048 x 2,048 matrix costs 10x the rest of the suite on a CPU.
    wide = _base_mlp(family).replace(width=OOD_WIDTH_MULTIPLIER * max(family.widths), depth=min(family.depths))
    return [
        SuiteTask("transformer shakespeare", tasks.task_config(
            "transformer_shakespeare", width=32, depth=2, sequence_length=32, batch_size=16), steps),
        SuiteTask("lstm shakespeare", tasks.task_config("lstm_shakespeare"), steps),
        SuiteTask("conv mnist 8x8", tasks.task_config("conv_mnist_14x14", image_size=8, batch_size=32), steps),
        SuiteTask("conv max-pool 3x32 mnist 14x14", tasks.task_config("conv_maxpool_mnist_14x14", width=32,
                                                                      batch_size=32), steps),
        SuiteTask(f"mlp width {wide.width} depth {wide.depth} ({OOD_HORIZON_MULTIPLIER * steps} steps)", wide,
                  OOD_HORIZON_MULTIPLIER * steps),
        SuiteTask("mlp diabetes regression", tasks.task_config("mlp_diabetes"), steps),
        SuiteTask("autoencoder mnist 14x14", tasks.task_config("autoencoder_mnist_14x14"), steps),
    ]


SUITES: dict[str, tuple[str, Callable[[MetaTrainingScope, int], list[SuiteTask]]]] = {
    "in_distribution": ("the meta-training family, held-out samples and seeds", in_distribution),
    "width": ("MLP up to 32x the meta-training width, transformer LM widths 64-1024",
              lambda scope, steps: width_mlp(scope, steps) + width_transformer(scope, steps)),
    "width_mlp": ("MLP from the meta-training widths up to 32x the widest", width_mlp),
    "width_transformer": ("transformer LM on Shakespeare, widths 64-1024", width_transformer),
    "depth": ("MLP of depth 1 up to 4x the deepest meta-training depth", depth),
    "horizon": ("MLP at 1x, 3x and 10x the meta-training horizon", horizon),
    "other": ("other data and models: conv net on MNIST, transformer LM on Shakespeare", other),
    "ood": ("models the image-MLP family never showed: transformer and LSTM LMs, two conv nets, 16x-wide MLP at 2x "
            "the horizon, tabular regression, autoencoder", ood),
}


def build(name_or_path: str | os.PathLike, scope: MetaTrainingScope, steps: int | None = None) -> Suite:
    """A named suite relative to scope (steps replaces the meta-training horizon), or a JSON suite file
    (steps, if given, replaces every task's budget)."""
    text = str(name_or_path)
    if text in SUITES:
        description, make = SUITES[text]
        return Suite(text, description, tuple(make(scope, steps or scope.horizon)))
    if text.endswith(".json") or Path(text).is_file():
        return from_file(text, steps)
    raise SuiteError(f"unknown suite {text!r}; suites: {', '.join(SUITES)}, or the path of a JSON suite file")


def from_file(path: str | os.PathLike, steps: int | None = None) -> Suite:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"suite file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise SuiteError(f"suite file {path} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("tasks"), list):
        raise SuiteError(f"suite file {path}: expected {{\"name\": ..., \"tasks\": [{{\"task\": NAME, "
                         "\"set\": {FIELD: VALUE}, \"steps\": N}, ...]}")
    suite_tasks = []
    for index, entry in enumerate(record["tasks"]):
        where = f"suite file {path}, task {index}"
        if not isinstance(entry, dict) or "task" not in entry:
            raise SuiteError(f"{where}: each task needs at least \"task\" (a registered task name)")
        unknown = sorted(set(entry) - {"task", "set", "steps", "label", "axis", "x"})
        if unknown:
            raise SuiteError(f"{where}: unknown keys {', '.join(unknown)}")
        if ":" in str(entry["task"]):
            raise SuiteError(f"{where}: {entry['task']!r} is an import path; a suite file names registered tasks. Give "
                             f"your own tasks as --suite {entry['task']} (a tasks.Task or a list of them), or pass the "
                             "objects to evaluate.run_suite")
        try:
            config = tasks.task_config(entry["task"], **entry.get("set", {}))
        except (KeyError, ValueError, TypeError) as error:
            raise SuiteError(f"{where}: {error}") from None
        label = entry.get("label") or " ".join([entry["task"]] + [f"{k}={v}" for k, v in entry.get("set", {}).items()])
        suite_tasks.append(SuiteTask(label, config, steps or entry.get("steps", 1000), entry.get("axis"),
                                     entry.get("x"), "parameterization" in entry.get("set", {})))
    return Suite(str(record.get("name", Path(path).stem)), str(record.get("description", f"from {path}")),
                 tuple(suite_tasks))
