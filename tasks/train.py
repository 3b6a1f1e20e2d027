"""Train a task with a hand-designed Optax optimizer: the baseline every learned optimizer must beat."""

from __future__ import annotations

import dataclasses
import functools
import operator
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks import memory
from tasks.base import Task

# Optax optimizers the command line offers, by name.
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd, "adamw": optax.adamw}


def train_step(task: Task, optimizer: optax.GradientTransformation, params, opt_state, data, key, *,
               draw_batch=None):
    """One training step of a task with an Optax optimizer: the step that training, meta-training and
    evaluation share. The loss is passed to the optimizer (learned optimizers may read it). The batch is
    `task.batch(data, batch_key)`, or `draw_batch(batch_key)` where the data is another's of the same
    shape (a meta-training bucket's other dataset)."""
    batch_key, loss_key = jax.random.split(key)
    batch = task.batch(data, batch_key) if draw_batch is None else draw_batch(batch_key)
    loss, grads = jax.value_and_grad(task.loss)(params, batch, loss_key)
    # A plain GradientTransformation takes no extra arguments: wrapped, it ignores `loss`.
    optimizer = optax.with_extra_args_support(optimizer)
    updates, opt_state = optimizer.update(grads, opt_state, params, loss=loss)
    return optax.apply_updates(params, updates), opt_state, loss


def steps_from_python(task: Task) -> bool:
    """Whether a training loop of `task` should dispatch its jitted steps one by one from Python rather
    than run them inside `lax.scan`: on XLA's CPU backend, for a model with convolutions. There XLA keeps
    some of the gradient's convolutions inside a loop body at non-canonical dimension labels, which run on
    a slow generic emitter (jax-ml/jax#12868; `python -m benchmarks.conv_loop_cost` measures it)."""
    if jax.default_backend() != "cpu":
        return False
    key = jax.random.key(0)
    params = jax.eval_shape(task.init, key)
    batch = jax.eval_shape(task.batch, task.data, key)
    return _has_convolution(jax.make_jaxpr(task.loss)(params, batch, key).jaxpr)


def _has_convolution(jaxpr) -> bool:
    """Whether a jaxpr or any jaxpr nested in its equations' parameters (jit, scan, cond branches,
    custom_vjp, ...) convolves."""
    def nested(value):
        if hasattr(value, "eqns"):  # a Jaxpr
            yield value
        elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # a ClosedJaxpr
            yield value.jaxpr
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from nested(item)

    return any(equation.primitive.name == "conv_general_dilated"
               or any(_has_convolution(inner) for value in equation.params.values() for inner in nested(value))
               for equation in jaxpr.eqns)


def held_out_metrics(task: Task, params, data, split: str = "valid"):
    """(loss, accuracy, NaN where the task has none) on the split's fixed held-out batch, the model in
    inference mode (Task.eval_loss_and_aux): the one validation measure of training, the meta-training
    comparison and evaluation."""
    loss, aux = task.eval_loss_and_aux(params, task.held_out(data, split))
    return loss, aux.get("accuracy", jnp.nan)


@dataclasses.dataclass
class TrainResult:
    steps: int
    train_loss: float  # mean over the last logging interval (the remainder, where shorter)
    valid_loss: float  # on the validation split's fixed held-out batch (held_out_metrics)
    valid_accuracy: float | None
    steps_per_second: float  # after compiling; train_each's runs share their group's
    params: Any = dataclasses.field(default=None, repr=False, compare=False)  # the model at the end
    # Runs vmapped together in its program (train_each's group, padding included): the batch size that
    # its float rounding depends on.
    runs_per_group: int = 1


def train(task: Task, optimizer: optax.GradientTransformation, num_steps: int, *, seed: int = 0,
          log_every: int = 100, log=print) -> TrainResult:
    """Trains from a fresh init for any positive num_steps, logging the mean training loss at every
    multiple of `log_every` and at the last step. The inner loop is a jitted `lax.scan` of `log_every`
    steps (the last chunk is shorter where log_every does not divide num_steps; a conv net's steps on CPU
    go one by one, see steps_from_python). It is `train_each` over one setting, so its numbers are the ones
    a grid's run gets, up to the float rounding that the grid's batch size changes. Training can amplify
    that rounding: on a model that fits its training set, held-out losses can then differ as much as
    seeds do, so compare optimizers over several seeds."""
    return train_each(task, lambda _: optimizer, jnp.zeros(1), num_steps, seed=seed, log_every=log_every,
                      log=log)[0]


def train_each(task: Task, make_optimizer: Callable[[Any], optax.GradientTransformation], settings: Any,
               num_steps: int, *, seed: int = 0, log_every: int = 100, log=print,
               parallel: int | None = None, label: str = "train_each") -> list[TrainResult]:
    """`train(task, make_optimizer(setting), ...)` for each setting, vmapped in compiled programs (one
    compilation for a whole learning-rate grid): `settings` is a pytree whose leaves' leading axis runs
    over the settings (an array of rates, stacked thetas), and every run starts from the same init and
    draws the same batches. make_optimizer gets a setting as a traced value, so it may compute with it
    (optax schedules and rates do) but not branch on it in Python; with more than one setting and
    `parallel=None` it is also called once on the first setting, outside jit, for the memory estimate.

    `parallel` runs are vmapped together. None: all of them, or, where the device's memory holds fewer
    (tasks.memory's estimate), groups of equal size that fit, each finished group's models moved to the
    host; where not even one run fits, TooLargeError (naming `label`) before anything compiles. Each log
    line holds a group's losses; each result's steps_per_second is its group's.

        results = train_each(task, optax.adam, jnp.asarray([1e-3, 1e-2]), 1000)  # Adam at two rates
    """
    if num_steps < 1 or log_every < 1:
        raise ValueError(f"num_steps={num_steps} and log_every={log_every} must be positive")
    if parallel is not None:
        try:  # any integer, numpy's too; not a float or a bool
            runs = 0 if isinstance(parallel, bool) else operator.index(parallel)
        except TypeError:
            runs = 0
        if runs < 1:
            raise ValueError(f"parallel={parallel!r}: a positive number of runs, or None")
        parallel = runs
    settings = jax.tree.map(jnp.asarray, settings)
    sizes = {leaf.shape[0] if leaf.ndim else 0 for leaf in jax.tree.leaves(settings)}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError("settings: a pytree of arrays with one leading axis of at least one setting, got "
                         f"leading sizes {sorted(sizes) or 'of no leaves'} (0: a scalar, as each number of a list is, or an "
                         "empty axis; a grid of rates is jnp.asarray(rates))")
    (count,) = sizes
    if parallel is None:  # one run is not estimated: it runs or fails as it would alone
        parallel = count if count == 1 else memory.runs_that_fit(
            task, make_optimizer(jax.tree.map(lambda leaf: leaf[0], settings)), count, label)
    groups = -(-count // min(parallel, count))
    size = -(-count // groups)  # groups of equal size: the last is padded by fewer copies
    # The padding repeats the last setting, so every group runs one compiled program at one size (and so
    # one rounding); its runs are dropped.
    padded = jax.tree.map(lambda leaf: jnp.concatenate([leaf, jnp.repeat(leaf[-1:], groups * size - count, axis=0)]),
                          settings)
    run_group = _group_runner(task, make_optimizer, num_steps, seed, log_every)
    results = []
    for start in range(0, count, size):
        real = min(size, count - start)
        prefix = "" if groups == 1 else (f"run {start + 1} of {count}: " if real == 1 else
                                         f"runs {start + 1}-{start + real} of {count}: ")
        group = run_group(jax.tree.map(lambda leaf: leaf[start:start + size], padded), real,
                          lambda line: log(prefix + line))
        if groups > 1:  # the memory is the next group's: finished models wait on the host
            group = [dataclasses.replace(result, params=jax.device_get(result.params)) for result in group]
        results += group
    return results


def _group_runner(task: Task, make_optimizer, num_steps: int, seed: int, log_every: int):
    """settings, real, log -> the results of the first `real` runs of one vmapped group (train_each; the
    rest are padding), its programs compiled once for every group of the same size."""
    key_init, key_train = jax.random.split(jax.random.key(seed))
    init_params = task.init(key_init)

    @functools.partial(jax.jit, static_argnames="length")
    @functools.partial(jax.vmap, in_axes=(0, 0, 0, None, None, None))
    def looped_chunk(setting, params, opt_state, data, key, length):
        optimizer = make_optimizer(setting)

        def one_step(carry, key):
            params, opt_state, loss = train_step(task, optimizer, *carry, data, key)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), jax.random.split(key, length))
        return params, opt_state, losses.mean()

    one_step = jax.jit(jax.vmap(lambda setting, params, opt_state, data, key: train_step(
        task, make_optimizer(setting), params, opt_state, data, key), in_axes=(0, 0, 0, None, None)))

    def stepped_chunk(settings, params, opt_state, data, key, length):
        """looped_chunk's steps and keys, dispatched one by one (see steps_from_python)."""
        losses = []
        for step_key in jax.random.split(key, length):
            params, opt_state, loss = one_step(settings, params, opt_state, data, step_key)
            losses.append(loss)
        return params, opt_state, jnp.stack(losses).mean(axis=0)

    run_chunk = stepped_chunk if steps_from_python(task) else looped_chunk

    held_out = jax.jit(jax.vmap(lambda p, d: held_out_metrics(task, p, d), in_axes=(0, None)))
    compiled = set()  # programs run_chunk has compiled (by chunk length where looped): groups share them

    def run_group(settings, real: int, log) -> list[TrainResult]:
        size = jax.tree.leaves(settings)[0].shape[0]
        params = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (size, *leaf.shape)), init_params)
        opt_state = jax.vmap(lambda setting, params: make_optimizer(setting).init(params))(settings, params)
        data = task.data
        train_loss = np.full(size, np.nan)
        timed_steps, elapsed = 0, 0.0
        for chunk, done in enumerate(range(0, num_steps, log_every)):
            length = min(log_every, num_steps - done)
            start = time.perf_counter()
            params, opt_state, mean_loss = run_chunk(settings, params, opt_state, data,
                                                     jax.random.fold_in(key_train, chunk), length)
            train_loss = np.asarray(mean_loss)
            program = None if run_chunk is stepped_chunk else length  # stepped: one program, any length
            if program in compiled:  # a chunk that compiled its program is left out of the throughput
                timed_steps, elapsed = timed_steps + length, elapsed + time.perf_counter() - start
            compiled.add(program)
            log(f"step {done + length:6d}  train loss {', '.join(f'{loss:.4f}' for loss in train_loss[:real])}")
        valid_loss, valid_accuracy = map(np.asarray, held_out(params, data))
        return [TrainResult(steps=num_steps, train_loss=float(train_loss[run]), valid_loss=float(valid_loss[run]),
                            valid_accuracy=None if np.isnan(valid_accuracy[run]) else float(valid_accuracy[run]),
                            steps_per_second=timed_steps / elapsed if timed_steps else float("nan"),
                            params=jax.tree.map(lambda leaf: leaf[run], params), runs_per_group=size)
                for run in range(real)]

    return run_group
