"""A flax.nnx model as a task's functions: its init and its forward pass, for tasks.from_flax.

An nnx module holds parameters it drew when it was made, but a task draws new ones for every key. So
from_flax takes the function that makes the module from its random streams, `lambda rngs:
MyModel(..., rngs=rngs)`, and calls it with `nnx.Rngs(key)`: at init to draw the parameters, and in the
loss to rebuild the module (its random init is then dead code, which XLA drops) before putting the
trained parameters in. The loss key seeds every stream, so nnx.Dropout draws a new mask each step;
held-out metrics put the module in evaluation mode (model.eval()), so there it draws none.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from tasks.array_task import TaskError


def is_nnx_module(value) -> bool:
    try:
        from flax import nnx
    except ImportError:  # an older flax without nnx
        return False
    return isinstance(value, nnx.Module)


@dataclasses.dataclass(frozen=True)
class NNXInit:
    """key -> the trainable parameters (nnx.Param) of a module made with nnx.Rngs(key), as a plain dict."""

    make: Callable  # rngs -> nnx.Module

    def __call__(self, key):
        from flax import nnx

        state = nnx.state(self.make(nnx.Rngs(key)), nnx.Param)
        # The functions of flax 0.11 on; the State methods (deprecated there) before.
        return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """(params, inputs, key, evaluating) -> the module's outputs with those parameters, its streams seeded
    by key; evaluating (held-out metrics), in evaluation mode (model.eval(): nnx.Dropout off). The call
    takes train_kwargs, or eval_kwargs when evaluating."""

    make: Callable  # rngs -> nnx.Module
    train_kwargs: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs: hashable, as make is
    eval_kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, params, inputs, key, evaluating: bool = False):
        from flax import nnx

        model = self.make(nnx.Rngs(jax.random.key(0) if key is None else key))
        state = nnx.state(model, nnx.Param)
        if hasattr(nnx, "replace_by_pure_dict"):
            nnx.replace_by_pure_dict(state, params)
        else:
            state.replace_by_pure_dict(params)
        nnx.update(model, state)
        if evaluating:
            model.eval()
        return model(inputs, **dict(self.eval_kwargs if evaluating else self.train_kwargs))


def check_nnx_make(name: str, make: Callable) -> None:
    """Refuses a `make` that does not return an nnx module from nnx.Rngs, or one whose module holds state
    besides parameters and random streams (BatchNorm statistics), which a task does not train."""
    from flax import nnx

    returned = []  # what make returned, before eval_shape turns arrays into shapes

    def made():
        returned.append(make(nnx.Rngs(0)))
        return returned[-1]

    try:
        model = nnx.eval_shape(made)
    except Exception as error:  # the user's constructor: name what it raised, in one line
        raise TaskError(f"task {name!r}: calling module(nnx.Rngs(0)) to make the nnx model failed: "
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    if not isinstance(returned[0], nnx.Module):
        raise TaskError(f"task {name!r}: module must be a flax.linen Module or a function rngs -> flax.nnx "
                        f"Module; the function returned {type(returned[0]).__name__}")
    *_, other = nnx.split(model, nnx.Param, nnx.RngState, ...)
    kinds = sorted({type(variable).__name__ for variable in
                    jax.tree.leaves(other, is_leaf=lambda leaf: isinstance(leaf, nnx.Variable))})
    if kinds:
        raise TaskError(f"task {name!r}: the nnx model has state besides parameters and random streams "
                        f"({', '.join(kinds)}); from_flax trains models without mutable state (no BatchNorm "
                        "statistics)")
