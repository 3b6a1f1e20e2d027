"""Devices: the task axis of every worker is sharded over a one-axis `jax.sharding.Mesh`; theta, the
meta-optimizer state and the data are replicated. The same config then runs on one CPU, one GPU or
many, and XLA inserts the cross-device mean of the meta-gradient.

Several processes (meta_train.distributed): `jax.devices()` lists every process's devices, and the mesh
spans them all, so every process holds an equal share of the workers.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meta_train.config import ConfigError

TASK_AXIS = "tasks"


def task_mesh(num_tasks: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over the most devices (of `devices`, default all) that divide num_tasks evenly, so every
    device trains the same number of workers. With several processes, every device of every process:
    a process without devices in the mesh would have no share of the step it must run."""
    devices = list(jax.devices() if devices is None else devices)
    if jax.process_count() > 1:
        if num_tasks % len(devices):
            raise ConfigError(f"num_tasks={num_tasks} does not split evenly over the {len(devices)} devices of "
                             f"{jax.process_count()} processes: use a multiple of {len(devices)}")
        return Mesh(np.asarray(devices), (TASK_AXIS,))
    count = max(n for n in range(1, len(devices) + 1) if num_tasks % n == 0)
    return Mesh(np.asarray(devices[:count]), (TASK_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def split_over_tasks(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(TASK_AXIS))

