"""A task from a flax.linen module and (inputs, targets) arrays, built on tasks.from_functions."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks.base import TaskConfig
from tasks.custom import check_name_and_sizes, from_functions
from tasks.custom_nnx import NNXApply, NNXInit, check_nnx_make, is_nnx_module
from tasks.custom_roles import Roles
from tasks.array_task import ArrayTask, TaskError


def cross_entropy(outputs, targets):
    """Softmax cross-entropy of logits (..., classes) against integer class labels (...), and accuracy."""
    loss = optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(outputs, axis=-1) == targets)}


def mse(outputs, targets):
    """Mean squared error, the outputs reshaped as the targets (a (B, 1) output against (B,) targets)."""
    return jnp.mean(jnp.square(outputs.reshape(targets.shape) - targets)), {}


LOSSES: dict[str, Callable] = {"cross_entropy": cross_entropy, "mse": mse}


def zeros_like_shapes(structure, shapes: tuple[jax.ShapeDtypeStruct, ...]):
    """A pytree of the given structure whose leaves are zeros of the given shapes."""
    return jax.tree.unflatten(structure, [jnp.zeros(shape.shape, shape.dtype) for shape in shapes])


@dataclasses.dataclass(frozen=True)
class FlaxInit:
    """key -> the module's params, initialized on zero inputs of the given shapes. A hashable value, not a
    closure: equal modules give equal inits, which a family puts in one bucket and which compile once."""

    module: nn.Module
    input_structure: Any  # the pytree structure of a batch of inputs (hashable: a static argument)
    input_shapes: tuple[jax.ShapeDtypeStruct, ...]  # its leaves
    call_kwargs: tuple[tuple[str, Any], ...] = ()  # the training call's keyword arguments (train_kwargs)

    def zero_inputs(self):
        return zeros_like_shapes(self.input_structure, self.input_shapes)

    def variables(self, key):
        # The key itself draws the params, as module.init(key, ...) does (a built-in task's init is the
        # model's own); modules that draw dropout masks at init get a stream folded from it.
        return self.module.init({"params": key, "dropout": jax.random.fold_in(key, 1)}, self.zero_inputs(),
                                **dict(self.call_kwargs))

    def __call__(self, key):
        return self.variables(key)["params"]


@dataclasses.dataclass(frozen=True)
class LinenApply:
    """(params, inputs, key, evaluating) -> the linen module's outputs; the key is its 'dropout' rng, and
    the call takes train_kwargs, or eval_kwargs when evaluating (held-out metrics)."""

    module: nn.Module
    train_kwargs: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs: hashable, as the module is
    eval_kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, params, inputs, key, evaluating: bool = False):
        # No key (a caller that knows the model draws nothing): no 'dropout' rng, as module.apply takes it.
        return self.module.apply({"params": params}, inputs, rngs=None if key is None else {"dropout": key},
                                 **dict(self.eval_kwargs if evaluating else self.train_kwargs))


@dataclasses.dataclass(frozen=True)
class FlaxLoss:
    """(params, (inputs, targets), key) -> loss and metrics of a model's forward pass (LinenApply, NNXApply);
    evaluating: (params, (inputs, targets)) -> the same in inference mode, for held-out metrics."""

    apply: Callable  # (params, inputs, key, evaluating) -> outputs
    loss: str | Callable  # a name in LOSSES, or loss(outputs, batch) -> scalar or (scalar, dict)
    evaluating: bool = False

    @property
    def module(self):
        """The linen module (None for an nnx model)."""
        return getattr(self.apply, "module", None)

    def __call__(self, params, batch, key=None):
        inputs, targets = batch
        # Evaluating, the key is fixed: dropout a module keeps on there (no eval_kwargs) draws one mask.
        outputs = self.apply(params, inputs, jax.random.key(0) if self.evaluating else key, self.evaluating)
        return self.loss(outputs, batch) if callable(self.loss) else LOSSES[self.loss](outputs, targets)


def from_flax(module: nn.Module, train: Any, valid: Any, *, loss: str | Callable, batch_size: int, name: str,
              init_input: Any = None, test: Any = None, roles: Roles | Callable[[Any], Roles] | None = None,
              valid_batch_size: int | None = None, loss_scale: float | None = None,
              config: TaskConfig | None = None, train_kwargs: dict[str, Any] | None = None,
              eval_kwargs: dict[str, Any] | None = None) -> ArrayTask:
    """A task that trains a flax model on (inputs, targets) splits (arrays with a leading example axis;
    inputs may be a pytree).

    module: a flax.linen Module, or for flax.nnx the function that makes the model from its random
    streams, `lambda rngs: MyModel(..., rngs=rngs)` (each init draws its own parameters; see
    tasks.custom_nnx). nnx keeps a model's layers in its attributes' sorted order, which role inference
    reads as creation order (tasks.custom_roles): pass roles where that order misleads it.
    loss: "cross_entropy" (logits against integer labels; reports accuracy), "mse", or a callable
    loss(outputs, batch) -> scalar or (scalar, dict of metrics). init_input: a batch of inputs whose
    shapes a linen module is initialized at (on zeros); default: a training batch's. Modules that use
    dropout get the loss key as their 'dropout' rng (nnx: as every stream's seed). Only parameters are
    trained: models with batch statistics or other mutable state are refused. roles, valid_batch_size, loss_scale, config: as
    tasks.from_functions, which builds the task.
    train_kwargs, eval_kwargs: keyword arguments of the model's call in training and in held-out metrics
    (validation loss), e.g. {"train": True} and {"train": False} for a module whose dropout follows a
    `train` argument; eval_kwargs defaults to train_kwargs. An nnx model is also put in evaluation mode
    there (`model.eval()`: nnx.Dropout off); a linen module whose eval_kwargs leave its dropout on keeps
    it on there, with a fixed key.
    """
    check_name_and_sizes(name, batch_size, valid_batch_size)
    call_kwargs = {}
    for field, kwargs in (("train_kwargs", train_kwargs), ("eval_kwargs", eval_kwargs)):
        if kwargs is not None and not (isinstance(kwargs, dict) and all(isinstance(key, str) for key in kwargs)):
            raise TaskError(f"task {name!r}: {field} must be a dict of keyword arguments, got {kwargs!r}")
        call_kwargs[field] = tuple(sorted((kwargs if kwargs is not None else train_kwargs or {}).items()))
        try:
            hash(call_kwargs[field])
        except TypeError:
            raise TaskError(f"task {name!r}: {field}={kwargs!r}: its values must be hashable (flags, numbers, "
                            "strings), as the model's call is part of the compiled program's identity") from None
    if is_nnx_module(module):
        raise TaskError(f"task {name!r}: pass the function that makes the flax.nnx model, e.g. lambda rngs: "
                        f"{type(module).__name__}(..., rngs=rngs), not a model: each init draws its own parameters")
    if not isinstance(module, nn.Module) and not callable(module):
        raise TaskError(f"task {name!r}: module must be a flax.linen Module or a function rngs -> flax.nnx Module, "
                        f"got {type(module).__name__}")
    if isinstance(loss, str) and loss not in LOSSES:
        raise TaskError(f"task {name!r}: unknown loss {loss!r}; known: {', '.join(LOSSES)}, or pass a callable "
                        "loss(outputs, batch)")
    if not isinstance(loss, str) and not callable(loss):
        raise TaskError(f"task {name!r}: loss must be a name ({', '.join(LOSSES)}) or a callable, got {loss!r}")
    for split, arrays in (("train", train), ("valid", valid), ("test", test)):
        if arrays is not None and not (isinstance(arrays, (tuple, list)) and len(arrays) == 2):
            raise TaskError(f"task {name!r}: the {split} split must be a pair (inputs, targets), "
                            f"got {type(arrays).__name__}")
    if init_input is None:
        init_input = jax.tree.map(lambda array: np.asarray(array)[:batch_size], train[0])
    input_leaves, input_structure = jax.tree.flatten(init_input)
    input_shapes = tuple(jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf)) for leaf in input_leaves)
    if isinstance(module, nn.Module):
        init = FlaxInit(module, input_structure, input_shapes, call_kwargs["train_kwargs"])
        apply = LinenApply(module, **call_kwargs)
        try:
            variables = jax.eval_shape(init.variables, jax.random.key(0))
        except TypeError as error:  # the call's keywords do not fit the module's signature
            raise TaskError(f"task {name!r}: initializing the module with train_kwargs={train_kwargs!r} failed: "
                            f"{str(error).splitlines()[0]}") from None
        if set(variables) != {"params"}:
            raise TaskError(f"task {name!r}: the module has variables besides params "
                            f"({', '.join(sorted(variables))}); from_flax trains modules without mutable state "
                            "(no BatchNorm statistics)")
    else:
        check_nnx_make(name, module)
        init, apply = NNXInit(module), NNXApply(module, **call_kwargs)
    if isinstance(loss, str):
        zero_inputs = zeros_like_shapes(input_structure, input_shapes)
        outputs = jax.eval_shape(lambda key: apply(init(key), zero_inputs, key), jax.random.key(0))
        _check_targets(name, outputs, loss, train, valid, test)
    return from_functions(init, FlaxLoss(apply, loss), train, valid, batch_size=batch_size, name=name, roles=roles,
                          test=test, valid_batch_size=valid_batch_size, loss_scale=loss_scale, config=config,
                          eval_loss=FlaxLoss(apply, loss, evaluating=True))


def _check_targets(name: str, outputs, loss: str, *splits) -> None:
    """Targets a named loss can read, given the model's outputs' shapes on a batch of inputs: integer labels
    below the logits' count for cross_entropy, as many values an example as the outputs for mse."""
    if not hasattr(outputs, "shape"):
        raise TaskError(f"task {name!r}: loss={loss!r} needs the module to return one array, it returns "
                        f"{type(outputs).__name__}; pass a callable loss")
    for targets in (split[1] for split in splits if split is not None):
        if np.ndim(targets) == 0 or np.size(targets) == 0:
            continue  # from_functions names what is wrong with such a split
        if loss == "cross_entropy":
            targets = np.asarray(targets)  # labels: small next to the inputs
            if not np.issubdtype(targets.dtype, np.integer):
                raise TaskError(f"task {name!r}: loss='cross_entropy' takes integer class labels, the targets are "
                                f"{targets.dtype}")
            if targets.shape[1:] != outputs.shape[1:-1] or targets.min() < 0 or targets.max() >= outputs.shape[-1]:
                raise TaskError(f"task {name!r}: loss='cross_entropy' needs labels {outputs.shape[1:-1]} a row in "
                                f"[0, {outputs.shape[-1]}) for logits {outputs.shape[1:]}; got labels "
                                f"{targets.shape[1:]} in [{targets.min()}, {targets.max()}]")
        elif np.prod(np.shape(targets)[1:]) != np.prod(outputs.shape[1:]):
            raise TaskError(f"task {name!r}: loss='mse' needs as many target values an example as outputs; "
                            f"outputs {outputs.shape[1:]}, targets {np.shape(targets)[1:]}")
