"""muP for optimizers (muLO, Therien et al. 2024): updates of "hidden" tensors, whose fan-in and fan-out
both grow with width, are multiplied by 1/fan_in; "input" and "output" tensors are left alone. Every
input feature of a learned optimizer is normalized per tensor, so its raw output is O(1) at any width
and this one rescaling is all the width-dependence it needs."""

from __future__ import annotations

import jax

from lopt.types import PARAMETERIZATIONS, ROLES, Params, Roles


def fan_in(tensor) -> int:
    """Fan-in under the output-dimension-last kernel convention (flax, haiku): prod(shape[:-1])."""
    size = 1
    for dim in tensor.shape[:-1]:
        size *= dim
    return size


def _path_name(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


class RolesError(ValueError):
    """Roles that do not fit the parameters."""


def check_roles(roles: Roles, params: Params) -> None:
    """Raises RolesError naming the first tensor whose role is missing or not a known role."""
    params_structure = jax.tree.structure(params)
    try:
        roles_structure = jax.tree.structure(roles)
    except TypeError as error:
        raise RolesError(f"roles must be a pytree like params: {error}") from None
    if roles_structure != params_structure:
        param_paths = {_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
        role_paths = {_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(roles)[0]}
        missing, extra = sorted(param_paths - role_paths), sorted(role_paths - param_paths)
        raise RolesError("roles do not match the params pytree"
                         + (f"; params without a role: {', '.join(missing[:5])}" if missing else "")
                         + (f"; roles without a param: {', '.join(extra[:5])}" if extra else "")
                         + ("" if missing or extra else f" (params {params_structure}, roles {roles_structure})"))
    for path, role in jax.tree_util.tree_flatten_with_path(roles)[0]:
        if role not in ROLES:
            raise RolesError(f"role of {_path_name(path)} is {role!r}; expected one of {', '.join(ROLES)}")


def scale_updates(updates: Params, roles: Roles | None, parameterization: str) -> Params:
    """Applies the muP rule (hidden updates / fan_in) when parameterization is "mup"."""
    if parameterization == "sp":
        return updates
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")

    def scale(update, role):
        return update / fan_in(update) if role == "hidden" else update

    return jax.tree.map(scale, updates, roles)


def infer_roles(params_a: Params, params_b: Params) -> Roles:
    """muP roles from the same model initialized at two widths (the method of Microsoft's mup package).

    A dimension whose size differs between the two is "wide". A kernel (output dimension last) whose
    fan-in and fan-out are both wide is "hidden"; one whose fan-in alone is wide is "output"; every other
    tensor (fan-out alone wide, nothing wide, vectors such as biases and norm weights) is "input".
    Only shapes are read, so `jax.eval_shape(model.init, ...)` outputs serve as well as real params.
    """
    leaves_a, structure_a = jax.tree_util.tree_flatten_with_path(params_a)
    leaves_b, structure_b = jax.tree.flatten(params_b)
    if structure_a != structure_b:
        raise RolesError(f"the two params pytrees differ in structure: {structure_a} vs {structure_b}")
    roles = []
    for (path, a), b in zip(leaves_a, leaves_b):
        if len(a.shape) != len(b.shape):
            raise RolesError(f"{_path_name(path)} has rank {len(a.shape)} in one model and {len(b.shape)} in "
                             "the other; initialize the same model at two widths")
        wide = [size_a != size_b for size_a, size_b in zip(a.shape, b.shape)]
        if len(a.shape) < 2:
            roles.append("input")
            continue
        wide_in, wide_out = any(wide[:-1]), wide[-1]
        roles.append("hidden" if wide_in and wide_out else "output" if wide_in else "input")
    return jax.tree.unflatten(structure_b, roles)
