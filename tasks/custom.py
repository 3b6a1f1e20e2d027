"""Tasks from what a user has: any JAX model as an init and a loss function, or a flax.linen module, on
their own arrays. The result is a Task like the built-in ones (batches drawn on device, a fixed held-out
batch, muP roles, a loss normalizer), usable by meta-training, evaluation and `tasks.train`:

    task = tasks.from_flax(MyMLP(), (x_train, y_train), (x_valid, y_valid), loss="cross_entropy",
                           batch_size=32, name="my_mlp")

Everything is checked at construction, where a mistake gets one line naming the task: the loss is
traced and measured at a few inits (its mean there is the normalizer, so an untrained model's normalized
loss is about 1, as the built-ins'). from_flax (tasks.custom_flax) builds on from_functions; tasks.family
(tasks.custom_family) makes a meta-training family of such tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import TaskConfig
from tasks.custom_roles import Roles, resolve_roles, traced_init
from tasks.datasets import sample_examples
from tasks.array_task import ArrayTask, CustomTaskConfig, TaskError, split_loss_output, tree_paths

# Inits (each with its own batch and loss key) whose mean loss is the normalizer: several, so that one
# unlucky init or batch does not set a task's scale; few, as a user waits for them.
NORMALIZER_DRAWS = 4
NORMALIZER_SEED = 0


def from_functions(init: Callable[[Any], Any], loss: Callable[[Any, Any, Any], Any], train: Any, valid: Any, *,
                   batch_size: int, name: str, roles: Roles | Callable[[Any], Roles] | None = None,
                   test: Any = None, valid_batch_size: int | None = None,
                   loss_scale: float | None = None, config: TaskConfig | None = None,
                   eval_loss: Callable[[Any, Any], Any] | None = None) -> ArrayTask:
    """A task from plain JAX functions and arrays.

    init: key -> params (a pytree of arrays). loss: (params, batch, key) -> scalar, or (scalar, dict of
    metrics such as {"accuracy": ...}); jittable and vmappable, as meta-training vmaps it over tasks.
    train, valid, test: pytrees of arrays with a leading example axis, e.g. (x, y); a batch is the same
    pytree with `batch_size` rows (`valid_batch_size` for valid and test batches, default batch_size),
    drawn with replacement. roles: the muP role of each tensor, as a pytree like params or a callable
    params -> that pytree (called once, on the init's shapes); default: inferred from the shapes, with
    the first leaf of a batch as the input (tasks.custom_roles says how). loss_scale: what
    normalize_loss divides by; default: the mean loss at init, measured here (which also refuses a loss
    that is not finite there); a given scale skips that measurement and its compilation. config: the
    record that names the task in provenance and caches; default: a CustomTaskConfig holding `name`
    and a digest of the arrays. The built-in tasks pass their own config, which determines them.
    eval_loss: (params, batch) -> as loss, the model in inference mode (dropout off), for held-out
    metrics (validation loss in training, evaluation and meta-training's comparison); default: loss
    with a fixed key, right for a model that draws nothing.
    """
    if eval_loss is not None and not callable(eval_loss):
        raise TaskError(f"task {name!r}: eval_loss must be a function (params, batch) -> loss, got "
                        f"{type(eval_loss).__name__}")
    valid_batch_size = check_name_and_sizes(name, batch_size, valid_batch_size)
    host = {split: _checked_split(name, split, arrays)
            for split, arrays in (("train", train), ("valid", valid), ("test", test)) if arrays is not None}
    _check_splits_alike(name, host)
    num_train = len(jax.tree.leaves(host["train"])[0])
    if num_train < batch_size:
        raise TaskError(f"task {name!r}: the train split has {num_train} examples, fewer than "
                        f"batch_size={batch_size}")
    task = ArrayTask(CustomTaskConfig(name=name), init, loss, jax.device_put(host), batch_size, valid_batch_size,
                      role_leaves=(), role_paths=(), loss_scale=1.0, eval_loss_fn=eval_loss)
    _check_loss_output(task)
    param_shapes, order = traced_init(init, jax.random.key(NORMALIZER_SEED))
    example = jax.tree.leaves(host["train"])[0][0]
    if config is None:
        config = CustomTaskConfig(name=name, fingerprint=_fingerprint(host, param_shapes, batch_size,
                                                                      valid_batch_size))
    elif not isinstance(config, TaskConfig):
        raise TaskError(f"task {name!r}: config must be a tasks.TaskConfig, got {type(config).__name__}")
    return dataclasses.replace(task, config=config,
                               role_leaves=resolve_roles(name, roles, param_shapes, example, order),
                               role_paths=tree_paths(param_shapes), loss_scale=_loss_scale(task, loss_scale))


def check_name_and_sizes(name: str, batch_size: int, valid_batch_size: int | None) -> int:
    """Refuses a name that is not a non-empty string and batch sizes that are not positive integers;
    the valid batch size (default: batch_size)."""
    if not isinstance(name, str) or not name:
        raise TaskError(f"name={name!r}: a task needs a non-empty string name")
    valid_batch_size = batch_size if valid_batch_size is None else valid_batch_size
    for field, value in (("batch_size", batch_size), ("valid_batch_size", valid_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TaskError(f"task {name!r}: {field}={value!r} must be a positive integer")
    return valid_batch_size


def _checked_split(name: str, split: str, arrays) -> Any:
    """The split as NumPy arrays, every leaf holding the same number (at least 1) of examples."""
    leaves, structure = jax.tree.flatten(arrays)
    if not leaves:
        raise TaskError(f"task {name!r}: the {split} split holds no arrays")
    # Device arrays stay where they are (a built-in's splits, uploaded once and shared by its tasks).
    leaves = [leaf if isinstance(leaf, jax.Array) else np.asarray(leaf) for leaf in leaves]
    if any(leaf.ndim == 0 or not (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == bool)
           for leaf in leaves):
        raise TaskError(f"task {name!r}: every {split} array must be numeric with a leading example axis; "
                        f"got {', '.join(f'{leaf.dtype}{list(leaf.shape)}' for leaf in leaves)}")
    counts = sorted({len(leaf) for leaf in leaves})
    if len(counts) > 1:
        raise TaskError(f"task {name!r}: the {split} arrays' leading axes differ "
                        f"({', '.join(str(len(leaf)) for leaf in leaves)}); each needs one row per example")
    if counts[0] == 0:
        raise TaskError(f"task {name!r}: the {split} split has no examples")
    return jax.tree.unflatten(structure, leaves)


def _check_splits_alike(name: str, host: dict[str, Any]) -> None:
    """Valid and test examples shaped as training ones, so one compiled loss takes every split's batch."""
    def example_shapes(arrays) -> str:
        return ", ".join(str(leaf.shape[1:]) for leaf in jax.tree.leaves(arrays))

    for split in host:
        if jax.tree.structure(host[split]) != jax.tree.structure(host["train"]):
            raise TaskError(f"task {name!r}: the {split} split is a {jax.tree.structure(host[split])}, the train "
                            f"split a {jax.tree.structure(host['train'])}; every split needs the same pytree")
        if example_shapes(host[split]) != example_shapes(host["train"]):
            raise TaskError(f"task {name!r}: {split} examples are shaped {example_shapes(host[split])}, training "
                            f"examples {example_shapes(host['train'])}; every split needs the same shapes")


def _check_loss_output(task: ArrayTask) -> None:
    """What the loss returns on a batch of each split, and the eval loss on the held-out valid batch,
    traced (nothing runs): a float scalar, or (scalar, dict of metrics), the same metrics from both."""
    # One trace for every split whose batches are shaped alike (tracing the model is the costly part).
    batches = {split: jax.eval_shape(functools.partial(task.batch, split=split), task.splits, jax.random.key(0))
               for split in task.splits}
    distinct = {str(batch): split for split, batch in reversed(batches.items())}  # the first split of each

    def outputs(data, key):
        params = task.init(key)
        found = {("loss", f"a {split} batch"): task.loss_fn(params, task.batch(data, key, split), key)
                 for split in distinct.values()}
        if task.eval_loss_fn is not None:
            found[("eval_loss", "the held-out valid batch")] = task.eval_loss_fn(params, task.held_out(data, "valid"))
        return found

    try:
        found = jax.eval_shape(outputs, task.splits, jax.random.key(0))
    except TypeError as error:  # a call that does not fit a signature: the loss's, or a flax model's keywords
        raise TaskError(f"task {task.name!r}: tracing the loss and eval loss on a batch failed: "
                        f"{str(error).splitlines()[0]}") from None
    for (function, batch), output in found.items():
        if isinstance(output, tuple) and (len(output) != 2 or not isinstance(output[1], dict)):
            raise TaskError(f"task {task.name!r}: the {function} returned a tuple of {len(output)} items; it must "
                            "return a scalar, or a pair (scalar, dict of metrics)")
        value, _ = split_loss_output(output)
        if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise TaskError(f"task {task.name!r}: the {function} returned {_describe(value)} on {batch}, "
                            "not a float scalar (average it over the batch)")
    metrics = {function: sorted(split_loss_output(output)[1]) for (function, _), output in found.items()}
    if len(set(map(tuple, metrics.values()))) > 1:
        raise TaskError(f"task {task.name!r}: the loss returns the metrics {metrics['loss']} and the eval_loss "
                        f"{metrics['eval_loss']}; return the same (held-out metrics read the eval_loss's)")


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"an array of shape {tuple(shape)} ({value.dtype})" if shape is not None else type(value).__name__


def _initial_losses(init, loss, batch_size: int, train, keys):
    """The loss of a fresh init on a training batch, for each key."""
    def initial_loss(key):
        init_key, batch_key, loss_key = jax.random.split(key, 3)
        batch = sample_examples(train, batch_key, batch_size)
        return split_loss_output(loss(init(init_key), batch, loss_key))[0]
    # lax.map, not vmap: a vmapped init (its random draws batched over keys) compiled 4x slower on CPU.
    return jax.lax.map(initial_loss, keys)


# The functions are static: equal models (the same functions, or equal flax modules) on data of the same
# shapes compile once, as the tasks of a family on several datasets do.
_initial_losses_jit = jax.jit(_initial_losses, static_argnums=(0, 1, 2))


def _loss_scale(task: ArrayTask, given: float | None) -> float:
    """The given scale, else the mean loss over NORMALIZER_DRAWS inits, each on its own training batch
    (refusing non-finite ones)."""
    if given is not None:
        if not (isinstance(given, (int, float)) and not isinstance(given, bool) and 0 < given < float("inf")):
            raise TaskError(f"task {task.name!r}: loss_scale={given!r} must be a positive finite number")
        return float(given)
    keys = jax.random.split(jax.random.key(NORMALIZER_SEED), NORMALIZER_DRAWS)
    try:
        hash((task.init_fn, task.loss_fn))
    except TypeError:  # unhashable callables cannot be static arguments: a compilation of their own
        measure = jax.jit(functools.partial(_initial_losses, task.init_fn, task.loss_fn), static_argnums=0)
    else:
        measure = functools.partial(_initial_losses_jit, task.init_fn, task.loss_fn)
    losses = np.asarray(measure(task.batch_size, task.splits["train"], keys))
    if not np.all(np.isfinite(losses)):
        raise TaskError(f"task {task.name!r}: the loss at init is not finite ({', '.join(map(str, losses))}); "
                        "check the model's init and the data")
    scale = float(np.mean(losses))
    if scale <= 0:
        raise TaskError(f"task {task.name!r}: the mean loss at init is {scale:.4g}; normalize_loss divides by "
                        "it, so it must be positive (pass loss_scale=)")
    return scale


def _fingerprint(host: dict[str, Any], param_shapes, batch_size: int, valid_batch_size: int) -> str:
    """A digest of the arrays, the parameter shapes and the batch sizes: a config names a task's data
    and model sizes, so a result cached under it (evaluate's run store) is never another data's."""
    digest = hashlib.sha256(f"{batch_size},{valid_batch_size}".encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(param_shapes)[0]:
        digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    for split in sorted(host):
        for path, leaf in jax.tree_util.tree_flatten_with_path(host[split])[0]:
            digest.update(f"{split}{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
            digest.update(np.ascontiguousarray(leaf).data)
    return digest.hexdigest()[:16]
