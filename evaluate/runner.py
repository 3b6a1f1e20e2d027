"""Training curves of an optimizer on a task: several runs (seeds, learning rates) vmapped together in
one compiled program (for a conv net on CPU, one compiled step called from Python), recording training
loss, and validation loss and accuracy on the task's fixed held-out batch (`Task.held_out`, the same for
every optimizer), at a stride.

Runs are grouped in fixed chunks of a job list, and a run's numbers depend on the group it ran in (the
group is a batch dimension of the compiled program, and XLA's kernels round differently at other
batch sizes): callers fix the grouping, never the free memory of the moment.

The step is `tasks.train_step`, the very step meta-training unrolls. The runs go wherever JAX puts
them (CPU, GPU); on CPU a conv net's steps are dispatched one by one rather than looped inside the
program, where XLA runs its gradient's convolutions slowly (tasks.steps_from_python).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tasks
from evaluate.optimizers import EvalOptimizer
from evaluate.task_objects import determined_by_config
from tasks.train import held_out_metrics

MAX_RECORD_POINTS = 50


@dataclasses.dataclass(frozen=True)
class Curves:
    """One run. Index 0 is the initialization (train_loss measured on the training split's held-out
    batch); index k is after k * stride steps, where train_loss is the mean minibatch loss of the
    stride's steps (the loss the optimizer saw), valid_loss and valid_accuracy are measured on the
    validation split's fixed held-out batch."""

    steps: tuple[int, ...]
    train_loss: tuple[float, ...]
    valid_loss: tuple[float, ...]
    valid_accuracy: tuple[float, ...] | None  # None for tasks without accuracy
    seconds: float = 0.0  # wall time of the run's group (compilation included), shared out per run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Curves":
        accuracy = record.get("valid_accuracy")
        return cls(tuple(record["steps"]), tuple(record["train_loss"]), tuple(record["valid_loss"]),
                   None if accuracy is None else tuple(accuracy), float(record.get("seconds", 0.0)))


def default_stride(num_steps: int) -> int:
    """The stride that records about MAX_RECORD_POINTS points (more only where it cannot be fewer)."""
    return -(-num_steps // MAX_RECORD_POINTS)


def record_steps(num_steps: int, stride: int) -> tuple[int, ...]:
    """0, stride, 2 * stride, ... and num_steps: a budget the stride does not divide ends with a shorter
    interval."""
    return tuple(range(0, num_steps, stride)) + (num_steps,)


def check_stride(num_steps: int, stride: int) -> None:
    if not (isinstance(num_steps, int) and num_steps > 0):
        raise ValueError(f"steps={num_steps!r}: must be a positive integer")
    if not (isinstance(stride, int) and stride > 0):
        raise ValueError(f"stride={stride!r}: must be a positive integer")


def _compiled_under(task: tasks.Task) -> Any:
    """What a task's compiled programs are kept under: its config where that determines it, so every build
    of a registered config shares them; the object itself for any other (the user's own task), which the
    kept program holds, so its id is not reused while the entry lives."""
    return task.config if determined_by_config(task) else ("object", id(task))


_INITIAL_POINTS: dict[Any, Any] = {}


def _initial_point(task: tasks.Task):
    """A jitted function keys -> (params, train loss, valid loss, valid accuracy) of fresh inits, one per
    key. Kept out of the run programs: every optimizer on a task shares this one compilation."""
    def one(key, data):
        init_key, _, _ = jax.random.split(key, 3)  # (init, training batches, unused): as meta_train splits
        params = task.init(init_key)
        train_loss, _ = held_out_metrics(task, params, data, "train")
        return params, train_loss, *held_out_metrics(task, params, data, "valid")
    key = _compiled_under(task)
    if key not in _INITIAL_POINTS:
        _INITIAL_POINTS[key] = jax.jit(jax.vmap(one, in_axes=(0, None)))
    return _INITIAL_POINTS[key]


def _program(task: tasks.Task, optimizer: EvalOptimizer, num_steps: int, stride: int):
    """A jitted function (hypers, params, keys, data) -> (train_loss, valid_loss, valid_accuracy), each
    of shape (runs, record points after step 0), vmapped over the leading axis of hypers, params and keys."""
    roles = task.roles(jax.eval_shape(task.init, jax.random.key(0)))

    def one_run(hyper, params, key, data):
        transform = optimizer.make(hyper, num_steps, roles)
        _, train_key, _ = jax.random.split(key, 3)

        def record_interval(length):
            def interval(carry, key):
                def step(carry, key):
                    params, opt_state, loss = tasks.train_step(task, transform, *carry, data, key)
                    return (params, opt_state), loss
                carry, losses = jax.lax.scan(step, carry, jax.random.split(key, length))
                return carry, (losses.mean(), *held_out_metrics(task, carry[0], data, "valid"))
            return interval

        intervals, remainder = divmod(num_steps, stride)
        keys = jax.random.split(train_key, intervals + (remainder > 0))
        carry, curves = jax.lax.scan(record_interval(stride), (params, transform.init(params)), keys[:intervals])
        if remainder:  # the last, shorter interval
            _, last = record_interval(remainder)(carry, keys[-1])
            curves = jax.tree.map(lambda values, value: jnp.concatenate([values, value[None]]), curves, last)
        return curves

    return jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, None)))


def _stepped_program(task: tasks.Task, optimizer: EvalOptimizer, num_steps: int, stride: int):
    """`_program`'s runs, keys and curves, its steps dispatched one by one from Python (a vmapped jitted
    step, and the held-out measure at every record point): for a conv net on CPU (tasks.steps_from_python)."""
    roles = task.roles(jax.eval_shape(task.init, jax.random.key(0)))

    def make(hyper):
        return optimizer.make(hyper, num_steps, roles)

    init = jax.jit(jax.vmap(lambda hyper, params: make(hyper).init(params)))
    step = jax.jit(jax.vmap(lambda hyper, params, opt_state, key, data: tasks.train_step(
        task, make(hyper), params, opt_state, data, key), in_axes=(0, 0, 0, 0, None)), donate_argnums=(1, 2))
    held_out = jax.jit(jax.vmap(lambda params, data: held_out_metrics(task, params, data, "valid"), in_axes=(0, None)))
    intervals, remainder = divmod(num_steps, stride)
    lengths = [stride] * intervals + [remainder] * (remainder > 0)
    split = jax.jit(jax.vmap(jax.random.split, in_axes=(0, None)), static_argnums=1)

    def runs(hypers, params, keys, data):
        params = jax.tree.map(jnp.copy, params)  # the steps donate theirs: the caller's stay intact
        opt_state = init(hypers, params)
        interval_keys = split(split(keys, 3)[:, 1], len(lengths))  # as one_run: train_key, then intervals
        curves = []
        for interval, length in enumerate(lengths):
            losses = []
            for step_keys in jnp.swapaxes(split(interval_keys[:, interval], length), 0, 1):
                params, opt_state, loss = step(hypers, params, opt_state, step_keys, data)
                losses.append(loss)
            curves.append((jnp.stack(losses).mean(axis=0), *held_out(params, data)))
        return tuple(jnp.stack(values, axis=1) for values in zip(*curves))

    return runs


_PROGRAMS: dict[tuple, Any] = {}


def program(task: tasks.Task, optimizer: EvalOptimizer, num_steps: int, stride: int):
    """The compiled runs (`_program`, or `_stepped_program` where tasks.steps_from_python), reused for every
    learning rate and seed of the same task and optimizer."""
    key = (_compiled_under(task), optimizer.rule, num_steps, stride)
    if key not in _PROGRAMS:
        build = _stepped_program if tasks.steps_from_python(task) else _program
        _PROGRAMS[key] = build(task, optimizer, num_steps, stride)
    return _PROGRAMS[key]


def groups(jobs: Sequence[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """The jobs in consecutive chunks of `size`, the last padded by repeating its first job, so every
    group has the same shape and one compilation serves all: what `run` vmaps together."""
    chunks = [list(jobs[start:start + size]) for start in range(0, len(jobs), size)]
    width = min(size, len(jobs))
    return [chunk + [chunk[0]] * (width - len(chunk)) for chunk in chunks]


def run(task: tasks.Task, optimizer: EvalOptimizer, jobs: Sequence[tuple[int, int]], num_steps: int,
        stride: int, parallel: int, on_result: Callable[[tuple[int, int], Curves], None] | None = None
        ) -> list[Curves]:
    """Curves of each (candidate index, seed) job, run in the groups `groups(jobs, parallel)`."""
    return run_groups(task, optimizer, groups(jobs, parallel), num_steps, stride, on_result)


def run_groups(task: tasks.Task, optimizer: EvalOptimizer, job_groups: Sequence[Sequence[tuple[int, int]]],
               num_steps: int, stride: int,
               on_result: Callable[[tuple[int, int], Curves], None] | None = None) -> list[Curves]:
    """Curves of every distinct job of each group, each group vmapped in `program` (groups of one size share
    its compilation). The same group gives bit-identical curves; another grouping agrees to float
    rounding only. on_result(job, curves) is called as each group finishes (a sweep stores them there,
    so an interruption loses at most the group in progress)."""
    check_stride(num_steps, stride)
    runs = program(task, optimizer, num_steps, stride)
    steps = record_steps(num_steps, stride)
    data = task.data
    # Inits depend on the seed alone: computed once per seed, shared by every candidate.
    seeds = sorted({seed for group in job_groups for _, seed in group})
    params, *initial = _initial_point(task)(jnp.stack([jax.random.key(seed) for seed in seeds]), data)
    initial = [np.asarray(values) for values in initial]
    results = []
    for padded in job_groups:
        began = time.perf_counter()
        group = list(dict.fromkeys(padded))  # the distinct jobs, in the order of their first rows
        hypers = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                              *[optimizer.candidates[index].hyper for index, _ in padded])
        rows = np.asarray([seeds.index(seed) for _, seed in padded])
        keys = jnp.stack([jax.random.key(seed) for _, seed in padded])
        curves = jax.device_get(runs(hypers, jax.tree.map(lambda leaf: leaf[rows], params), keys, data))
        train, valid, accuracy = (np.concatenate([first[rows][:, None], np.asarray(rest)], axis=1)
                                  for first, rest in zip(initial, curves))
        seconds = (time.perf_counter() - began) / len(group)
        for job in group:
            row = list(padded).index(job)
            has_accuracy = not np.all(np.isnan(accuracy[row]))
            results.append(Curves(steps, tuple(map(float, train[row])), tuple(map(float, valid[row])),
                                  tuple(map(float, accuracy[row])) if has_accuracy else None, seconds))
            if on_result is not None:
                on_result(job, results[-1])
    return results
