"""muP roles of a user's parameters, inferred from one model's shapes or taken from the user.

`lopt.infer_roles` compares a model at two widths; a user's task holds one model, so this reads the
shapes of one init and the data it is fed, with the conventions of the built-in models
(tasks.models.layers.assign_roles) and muLO:

- every tensor of rank below 2 (biases, norm scales, scalars) is "input";
- a kernel (output dimension last) that reads the data is "input": its fan-in prod(shape[:-1]) is the
  feature count of one example of the input, or its shape[-2] is the example's last dimension (a conv
  kernel on channels, a dense layer on the last axis); for integer inputs (token ids) the first kernel
  the model creates is the embedding, and "input";
- the last kernel the model creates is the readout, "output" (unless it reads the data: a linear model's
  one kernel has no dimension that grows with width, "input" as in `lopt.infer_roles`);
- every other kernel is "hidden".

"Creates" is the order of the init's own pytree: flax records layers in call order and a plain dict
keeps the order it was written in (a list, its positions). `jax.tree` functions and `jax.eval_shape`
rebuild dicts with sorted keys ("Dense_10" before "Dense_2"), so the order is read once, inside a trace
of the init (nothing runs), and the roles are kept. The rule misjudges a hidden kernel as "input" when
the width equals the input's feature count; pass roles explicitly then, or for any model it does not
describe: a pytree like params of role names, or a callable params -> that pytree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

import jax
import numpy as np

from tasks.base import ROLES
from tasks.array_task import TaskError, tree_paths

Roles = Any  # a pytree like params of "input" / "hidden" / "output"


def _creation_order(params) -> tuple[int, ...]:
    """Flatten indices of the leaves, in the order the params pytree holds them (dict insertion order)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

    def insertion_ranks(path) -> list[int]:
        node, ranks = params, []
        for entry in path:
            if not (isinstance(node, Mapping) and hasattr(entry, "key")):
                break  # lists, tuples and other nodes flatten in their own order already
            ranks.append(list(node).index(entry.key))
            node = node[entry.key]
        return ranks

    return tuple(sorted(range(len(paths)), key=lambda index: (insertion_ranks(paths[index]), index)))


def traced_init(init: Callable[[Any], Any], key) -> tuple[Any, tuple[int, ...]]:
    """The init's params as shapes (jax.ShapeDtypeStruct leaves) and the flatten indices of its tensors
    in creation order, read from the pytree the init builds before jax.eval_shape sorts its dicts."""
    order: list[int] = []

    def recorded(key):
        params = init(key)
        order.extend(_creation_order(params))
        return params

    return jax.eval_shape(recorded, key), tuple(order)


def infer_roles(params, example_input, order: tuple[int, ...]) -> tuple[str, ...]:
    """Each leaf's role, in `jax.tree.leaves(params)` order (params may be shapes); `example_input` is one
    example of the input (its leading example axis removed), the first leaf of a batch; `order` the
    leaves' flatten indices in creation order (traced_init)."""
    leaves = jax.tree.leaves(params)
    features = tuple(np.shape(example_input))
    tokens = np.issubdtype(np.asarray(example_input).dtype, np.integer)
    kernels = [index for index in order if len(np.shape(leaves[index])) >= 2]

    def reads_input(index: int) -> bool:
        if tokens:
            return index == kernels[0]
        shape = np.shape(leaves[index])
        return math.prod(shape[:-1]) == math.prod(features) or (bool(features) and shape[-2] == features[-1])

    def role(index: int) -> str:
        if len(np.shape(leaves[index])) < 2 or reads_input(index):
            return "input"
        return "output" if index == kernels[-1] else "hidden"

    return tuple(role(index) for index in range(len(leaves)))


def resolve_roles(task_name: str, roles: Roles | Callable[[Any], Roles] | None, params, example_input,
                  order: tuple[int, ...]) -> tuple[str, ...]:
    """The task's role leaves (flatten order): inferred when `roles` is None, else the user's pytree or
    `roles(params)` (params as shapes), checked against params."""
    if roles is None:
        return infer_roles(params, example_input, order)
    given = roles(params) if callable(roles) else roles
    check_roles(task_name, given, params)
    return tuple(jax.tree.leaves(given))


def check_roles(task_name: str, roles: Roles, params) -> None:
    """Raises a TaskError naming the task and the first tensor whose role is missing or unknown."""
    param_paths, role_paths = tree_paths(params), tree_paths(roles)
    if param_paths != role_paths:
        missing = sorted(set(param_paths) - set(role_paths))
        extra = sorted(set(role_paths) - set(param_paths))
        raise TaskError(f"task {task_name!r}: roles do not match the params pytree"
                          + (f"; params without a role: {', '.join(missing[:5])}" if missing else "")
                          + (f"; roles without a param: {', '.join(extra[:5])}" if extra else ""))
    for path, role in zip(role_paths, jax.tree.leaves(roles)):
        if role not in ROLES:
            raise TaskError(f"task {task_name!r}: the role of {path} is {role!r}; expected one of "
                              f"{', '.join(ROLES)}")
