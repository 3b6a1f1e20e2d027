"""A task family from a user's tasks: a list of them, or a sampler drawn a fixed number of times.

Meta-training asks a family for its shape buckets (`sample_buckets`) and for each config's task
(`task`); the unroller of a bucket compiles the first task's init, loss, roles and normalizer once and
draws only the batches of the others. So tasks share a bucket when their params and batches have the
same shapes (jax.eval_shape) and they are the same model: equal init and loss functions for a user's
task (tasks.from_flax makes equal ones from equal modules; with tasks.from_functions pass the same
function objects), equal fields but the dataset for a built-in one (as tasks.MixedFamily). Anything else
gets a bucket of its own. The first task's normalizer serves its whole bucket, so data of one bucket
should have one scale (standardized features and targets).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from tasks.base import Task, TaskFamily, numpy_rng
from tasks.array_task import ArrayTask, CustomTaskConfig, TaskError, config_digest

# The keys a sampler family draws its tasks with: fold_in(key(SAMPLER_SEED), draw), the same every run,
# so a resumed or multi-process meta-training run sees the same tasks.
SAMPLER_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class CustomFamily(TaskFamily):
    """A fixed set of tasks in shape buckets; made by tasks.family, which checks them."""

    name: str
    tasks: tuple[Task, ...]  # the tasks, each with its CustomTaskConfig where it is a user's
    configs: tuple[CustomTaskConfig, ...]  # one a task: family, name, index, fingerprint
    buckets: tuple[tuple[CustomTaskConfig, ...], ...]  # the configs grouped by shapes and model

    def sample(self, key) -> CustomTaskConfig:
        return self.configs[int(numpy_rng(key).integers(len(self.configs)))]

    def sample_buckets(self, key, count: int) -> list[tuple[CustomTaskConfig, ...]]:
        """Every bucket, whatever `count` (meta_train's num_task_configs): the family is its tasks, all
        of them trained in every run."""
        del key, count
        return list(self.buckets)

    def task(self, config) -> Task:
        if not (isinstance(config, CustomTaskConfig) and config.family == self.name
                and config.index < len(self.configs) and self.configs[config.index] == config):
            raise TaskError(f"family {self.name!r} holds no task {config!r}" + (
                " (its data or shapes changed since the config was recorded)"
                if isinstance(config, CustomTaskConfig) and config.family == self.name else ""))
        return self.tasks[config.index]

    def __repr__(self) -> str:
        return f"CustomFamily({self.name!r}, {len(self.tasks)} tasks in {len(self.buckets)} buckets)"


def family(tasks_or_sampler: Sequence[Task] | Callable[[Any], Task], *, name: str,
           num_draws: int | None = None) -> CustomFamily:
    """A TaskFamily for meta-training from a list of tasks, or from `sample(key) -> Task` called with
    `num_draws` fixed keys at construction (a draw's config is named "<task name>_<draw>"). The tasks are
    grouped into shape buckets (this module's docstring says how); every bucket is trained in every run."""
    if not isinstance(name, str) or not name:
        raise TaskError(f"name={name!r}: a family needs a non-empty string name")
    if callable(tasks_or_sampler) and not isinstance(tasks_or_sampler, Task):
        if not isinstance(num_draws, int) or isinstance(num_draws, bool) or num_draws < 1:
            raise TaskError(f"family {name!r}: a sampler family needs num_draws, a positive integer "
                            f"(got {num_draws!r})")
        members = [tasks_or_sampler(jax.random.fold_in(jax.random.key(SAMPLER_SEED), draw))
                   for draw in range(num_draws)]
        names = [f"{_task_name(task, name)}_{draw}" for draw, task in enumerate(members)]
    else:
        if num_draws is not None:
            raise TaskError(f"family {name!r}: num_draws={num_draws!r} is for a sampler; a list of tasks is "
                            "used as it is")
        if not isinstance(tasks_or_sampler, (list, tuple)):
            raise TaskError(f"family {name!r}: expected a list of tasks or a callable sample(key) -> Task, "
                            f"got {type(tasks_or_sampler).__name__}")
        members = list(tasks_or_sampler)
        names = [_task_name(task, name) for task in members]
        duplicates = sorted({task_name for task_name in names if names.count(task_name) > 1})
        if duplicates:
            raise TaskError(f"family {name!r}: tasks share the names {', '.join(map(repr, duplicates))}; give "
                            "each task its own name")
    if not members:
        raise TaskError(f"family {name!r} has no tasks")
    configs = tuple(CustomTaskConfig(name=task_name, family=name, index=index, fingerprint=_fingerprint(task))
                    for index, (task_name, task) in enumerate(zip(names, members)))
    members = [dataclasses.replace(task, config=config) if _is_users(task) else task
               for task, config in zip(members, configs)]
    return CustomFamily(name, tuple(members), configs, _buckets(members, configs))


def _task_name(task, family_name: str) -> str:
    if not isinstance(task, Task):
        raise TaskError(f"family {family_name!r}: a {type(task).__name__} is not a Task (make one with "
                        "tasks.from_functions or tasks.from_flax)")
    return task.name if isinstance(task, ArrayTask) else task.config.short_name()


def _is_users(task: Task) -> bool:
    """A task of the user's arrays (a built-in keeps its own config, which rebuilds it)."""
    return isinstance(task, ArrayTask) and isinstance(task.config, CustomTaskConfig)


def _fingerprint(task: Task) -> str:
    return config_digest(task.config)


def _signature(task: Task) -> tuple:
    """What tasks of one bucket share: the shapes of params and a training batch, and the model."""
    shapes = (jax.eval_shape(task.init, jax.random.key(0)),
              jax.eval_shape(lambda data: task.batch(data, jax.random.key(0)), task.data))
    if isinstance(task, ArrayTask):
        return shapes + ("functions", task.init_fn, task.loss_fn, task.eval_loss_fn, task.role_leaves)
    model = {field: value for field, value in dataclasses.asdict(task.config).items() if field != "dataset"}
    return shapes + (type(task.config), model)


def _same(first: tuple, second: tuple) -> bool:
    try:
        return bool(first == second)
    except (TypeError, ValueError):  # a module with array fields compares elementwise: call it another model
        return False


def _buckets(members: list[Task], configs: tuple[CustomTaskConfig, ...]) -> tuple[tuple[CustomTaskConfig, ...], ...]:
    signatures = [_signature(task) for task in members]
    buckets: list[list[int]] = []
    for index, signature in enumerate(signatures):
        bucket = next((bucket for bucket in buckets if _same(signatures[bucket[0]], signature)), None)
        if bucket is None:
            buckets.append([index])
        else:
            bucket.append(index)
    return tuple(tuple(configs[index] for index in bucket) for bucket in buckets)
