"""How much memory one training run of an optimizer on a task needs, estimated from shapes alone (nothing
is allocated or compiled), and how much the device has: `train_each` vmaps as many runs together as fit,
and an evaluation sweep refuses a task that cannot fit before spending minutes compiling it.

The budget is the device's total memory, never what happens to be free: how many runs share a compiled
program changes their rounding, so a run's numbers must not follow whatever else the machine holds."""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import numpy as np
import optax

from tasks.base import Task

GIB = 2 ** 30
# A run may use this share of the device's memory; the rest is left for XLA's workspace and the host.
USABLE_SHARE = 0.7


class TooLargeError(MemoryError):
    """A task too large for this device's memory (the estimate says by how much)."""


def _bytes(tree) -> int:
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class RunMemory:
    num_params: int
    params_bytes: int  # parameters, gradients and updates
    state_bytes: int  # optimizer state
    activation_bytes: int  # what backprop keeps of a batch, and the held-out batch's activations
    update_temporary_bytes: int  # the largest intermediate of the optimizer's update (twice it)

    @property
    def total(self) -> int:
        return self.params_bytes + self.state_bytes + self.activation_bytes + self.update_temporary_bytes

    def describe(self) -> str:
        return (f"about {self.total / GIB:.1f} GiB ({self.num_params / 1e6:.1f}M parameters: "
                f"{self.params_bytes / GIB:.1f} GiB parameters, gradients and updates, {self.state_bytes / GIB:.1f} "
                f"GiB optimizer state, {self.activation_bytes / GIB:.1f} GiB activations, "
                f"{self.update_temporary_bytes / GIB:.1f} GiB update temporaries)")


def estimate(task: Task, optimizer: optax.GradientTransformation) -> RunMemory:
    """The memory one run of `optimizer` (built for the task's roles and run length) on `task` needs."""
    key = jax.random.key(0)
    params = jax.eval_shape(task.init, key)
    optimizer = optax.with_extra_args_support(optimizer)
    state = jax.eval_shape(optimizer.init, params)
    data = task.data

    def residuals(batch):  # jax.vjp's backward function is a pytree of the residuals backprop keeps
        return jax.eval_shape(lambda p, b: jax.vjp(lambda q: task.loss(q, b, key), p)[1], params, batch)

    train = residuals(jax.eval_shape(task.batch, data, key))
    # The held-out batch's forward pass, measured at every record point: about what backprop would keep.
    held_out = residuals(jax.eval_shape(lambda d: task.held_out(d, "valid"), data))
    update = jax.make_jaxpr(lambda g, s, p: optimizer.update(g, s, p, loss=1.0))(params, state, params)
    largest = max((_bytes(var.aval) for equation in update.jaxpr.eqns for var in equation.outvars
                   if hasattr(var.aval, "shape")), default=0)
    return RunMemory(num_params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)),
                     params_bytes=3 * _bytes(params), state_bytes=_bytes(state),
                     activation_bytes=2 * _bytes(train) + _bytes(held_out), update_temporary_bytes=2 * largest)


def device_memory_bytes() -> int:
    """All the memory of the default device: the accelerator's allocator limit, or the host's physical
    memory on CPU (not what is free now: see the module's docstring)."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            match = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read())
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no /proc


def runs_that_fit(task: Task, optimizer: optax.GradientTransformation, wanted: int, label: str,
                  budget: int | None = None) -> int:
    """How many runs of `optimizer` on `task` to vmap together (at most `wanted`); raises TooLargeError,
    naming `label` (the task and optimizer), if not even one fits."""
    need = estimate(task, optimizer)
    budget = int(USABLE_SHARE * (device_memory_bytes() if budget is None else budget))
    if need.total > budget:
        raise TooLargeError(f"{label}: one run needs {need.describe()}, more than the {budget / GIB:.1f} GiB usable "
                            f"on {jax.devices()[0].device_kind}; use a smaller width or a device with more memory")
    return max(1, min(wanted, budget // max(need.total, 1)))
