"""Tasks passed to a sweep as objects (`tasks.Task`: the user's own model, or a built-in task from
`tasks.get_task`) rather than by name: a suite of them, and what their runs are cached under.

    evaluate.run_suite([lion], [my_task, tasks.get_task("mlp_digits_8x8")], "runs/mine", steps=500)

A task object is trained as it is (its parameterization is never replaced) and named in tables and
cache keys by `task.name`, else `task.config.short_name()`. One whose registered config determines it
(a task our registry builds) is cached as that config is, so it shares runs with the same task given by
name. Any other is cached under its name, its class, its config's record, the shapes of its
parameters and how its held-out metrics run the model (its eval loss, or the keyword arguments of a
flax model's call there): changing its code without changing one of those reuses the old runs; clear them with
`evaluate.clear_cache(workdir, task=NAME)` or `--clear-cache NAME`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar, Sequence

import jax

import tasks
from evaluate.suites import Suite, SuiteError, SuiteTask
from tasks.registry import CONFIG_TYPES

SUITE_NAME = "custom"  # a list of task objects as a suite
# Our task classes whose instances a registered config determines: built from equal configs they are the
# same task. A subclass, a wrapper that keeps its inner task's config (AugmentedTask) or the user's own
# class is not: it is only itself; nor is an ArrayTask of the user's arrays (its CustomTaskConfig only
# names it).
_BUILT_FROM_CONFIGS = (tasks.ArrayTask, tasks.QuadraticTask, tasks.LanguageModelTask)


def determined_by_config(task: tasks.Task) -> bool:
    """Whether `task.config` alone determines the task (every build of it is the same task)."""
    config = getattr(task, "config", None)
    return (type(task) in _BUILT_FROM_CONFIGS and not isinstance(config, tasks.CustomTaskConfig)
            and type(config) is CONFIG_TYPES.get(getattr(config, "kind", None)))


@dataclasses.dataclass(frozen=True)
class ObjectTaskConfig(tasks.TaskConfig):
    """The record of a task object its config does not determine: what tables, the sweep file and run
    keys hold of it, since its code cannot be hashed reliably."""

    kind: ClassVar[str] = "object"
    name: str  # as tables show it, unique within the suite
    type: str  # module.qualname of its class
    config: str  # its own config's record as JSON, or "" where it has none that serializes
    params: str  # a hash of its parameters' paths, shapes and dtypes
    evaluation: str = ""  # how its held-out metrics run the model (_evaluation_record)

    def build(self) -> tasks.Task:
        raise SuiteError(f"task {self.name!r} was passed as an object: a sweep runs the object, never a rebuild")

    def short_name(self) -> str:
        return f"object/{self.name}"


def task_name(task: tasks.Task) -> str:
    """`task.name` if it has one, else its config's short name."""
    name = getattr(task, "name", None)
    if isinstance(name, str) and name:
        return name
    config = getattr(task, "config", None)
    if isinstance(config, tasks.TaskConfig):
        return config.short_name()
    raise SuiteError(f"a task of class {type(task).__qualname__} has neither a `name` nor a `config`: give it a "
                     "`name` (tables and cache keys need one)")


def _params_digest(task: tasks.Task) -> str:
    shapes = jax.eval_shape(task.init, jax.random.key(0))  # nothing is computed
    lines = [f"{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype}"
             for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _config_record(task: tasks.Task) -> str:
    config = getattr(task, "config", None)
    if not isinstance(config, tasks.TaskConfig):
        return ""
    try:
        return json.dumps(config.to_dict(), sort_keys=True)
    except (TypeError, ValueError):  # fields JSON cannot hold (functions, arrays): left out of the key
        return ""


def _evaluation_record(task: tasks.Task) -> str:
    """How held-out metrics run the model (Task.eval_loss_and_aux), as far as it can be named: a flax
    model's call keywords in training and evaluation, a given eval loss's name, or the method that
    measures them."""
    evaluation = getattr(task, "eval_loss_fn", None) if isinstance(task, tasks.ArrayTask) else None
    if evaluation is None:
        return f"inference mode: {type(task).eval_loss_and_aux.__qualname__}"
    apply = getattr(evaluation, "apply", None)
    if hasattr(apply, "eval_kwargs"):  # a from_flax model (tasks.custom_flax.FlaxLoss)
        return f"inference mode: {type(apply).__name__} train {apply.train_kwargs!r} eval {apply.eval_kwargs!r}"
    name = getattr(evaluation, "__qualname__", type(evaluation).__qualname__)
    return f"inference mode: {getattr(evaluation, '__module__', '')}.{name}"


def suite_task(task: tasks.Task, num_steps: int) -> SuiteTask:
    """A task object as an entry of a suite, trained for num_steps."""
    if not isinstance(task, tasks.Task):
        raise SuiteError(f"a suite's task must be a tasks.Task, not {type(task).__qualname__}")
    name = task_name(task)
    if determined_by_config(task):
        config = task.config
    else:
        config = ObjectTaskConfig(name=name, type=f"{type(task).__module__}.{type(task).__qualname__}",
                                  config=_config_record(task), params=_params_digest(task),
                                  evaluation=_evaluation_record(task))
    return SuiteTask(name, config, num_steps, keep_parameterization=True, task=task)


def from_tasks(task_objects: Sequence[tasks.Task] | tasks.Task, num_steps: int, name: str = SUITE_NAME) -> Suite:
    """A suite of task objects, each trained for num_steps; their names must differ."""
    items = [task_objects] if isinstance(task_objects, tasks.Task) else list(task_objects)
    entries = [suite_task(task, num_steps) for task in items]
    labels = [entry.label for entry in entries]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise SuiteError(f"two tasks of suite {name!r} are both named {', '.join(map(repr, repeated))}: give each "
                         "task a distinct `name`")
    return Suite(name, f"tasks passed as objects: {', '.join(labels)}", tuple(entries))


def is_task_list(value: Any) -> bool:
    """A task object or a non-empty list or tuple of them: what `from_tasks` takes."""
    return isinstance(value, tasks.Task) or (isinstance(value, (list, tuple)) and bool(value)
                                             and all(isinstance(item, tasks.Task) for item in value))

