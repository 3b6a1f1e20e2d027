"""Which configs meta-training shows the learned optimizer, and how often: uniform, or a regret-driven
curriculum after GROOVE (Jackson et al. 2023), which favours the configs where the learned rule is
furthest behind a tuned baseline.

The unit is a cell: one config of one shape bucket. Every bucket runs at every outer step (its shapes
are compiled into the step), so a cell's probability p acts in two ways: the bucket's share of the
meta-gradient is the sum of its cells' p, and a worker of the bucket starts each fresh run on one of
its cells with probability proportional to p. In expectation this is the meta-gradient of sampling
cells with probability p.

Regret of a step: the step's meta-loss (mean over the particles) minus that of tuned Adam at the same
step of a run on the same config, both normalized losses (about 1 at init). The estimate per cell is an
exponential average over outer steps (bias-corrected like Adam's moments) of its steps' mean regret.
With mode "regret", p = floor * q + (1 - floor) * max(regret, 0) / sum(max(regret, 0)), with q uniform
over buckets and then over a bucket's cells: no cell falls below floor * q.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import lopt
from checkpoints.files import write_atomically
from meta_train.truncation import ConstantLength
from meta_train.unroll import Unroller

# Constant rates of the tuned Adam whose curves regret is measured against (the best by mean meta-loss),
# by parameterization: muAdam divides hidden steps by their fan-in, so its rates sit higher.
BASELINE_LEARNING_RATES = {"mup": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
                           "sp": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)}
BASELINE_SEEDS = 2
BASELINES_FILE = "curriculum_baselines.json"


class CurriculumState(NamedTuple):
    regret_average: jax.Array  # (cells,) exponential average of each cell's mean regret per step
    average_weight: jax.Array  # (cells,) the same average of 1 over the outer steps that saw the cell
    runs_started: jax.Array  # (cells,) inner runs begun on each cell since the start


@dataclasses.dataclass(frozen=True)
class Curriculum:
    bucket_sizes: tuple[int, ...]  # cells per bucket
    mode: str = "uniform"  # "uniform" or "regret"
    floor: float = 0.2  # the share of the sampling that stays uniform
    decay: float = 0.9  # per outer step, of the regret averages

    @property
    def num_cells(self) -> int:
        return sum(self.bucket_sizes)

    def init(self) -> CurriculumState:
        zeros = jnp.zeros(self.num_cells, jnp.float32)
        return CurriculumState(zeros, zeros, zeros)

    def uniform(self) -> jax.Array:
        """q: uniform over buckets, then over a bucket's cells."""
        return jnp.concatenate([jnp.full(size, 1.0 / (size * len(self.bucket_sizes))) for size in self.bucket_sizes])

    @staticmethod
    def regret(state: CurriculumState) -> jax.Array:
        return jnp.where(state.average_weight > 0, state.regret_average / jnp.maximum(state.average_weight, 1e-12),
                         0.0)

    def probabilities(self, state: CurriculumState) -> jax.Array:
        uniform = self.uniform()
        if self.mode == "uniform":
            return uniform
        behind = jnp.maximum(self.regret(state), 0.0)
        total = jnp.sum(behind)
        by_regret = jnp.where(total > 0, behind / jnp.maximum(total, 1e-12), uniform)
        return self.floor * uniform + (1.0 - self.floor) * by_regret

    def split(self, probabilities: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Per bucket: (its share of the meta-gradient, the probabilities of its cells for a fresh run)."""
        parts, start = [], 0
        for size in self.bucket_sizes:
            cells = probabilities[start:start + size]
            share = jnp.sum(cells)
            parts.append((share, cells / share))
            start += size
        return parts

    def update(self, state: CurriculumState, steps: jax.Array, regret_sums: jax.Array,
               runs_started: jax.Array) -> CurriculumState:
        """After an outer step: per cell, the steps taken on it, the sum of their regret, the runs begun."""
        seen = steps > 0
        mean_regret = regret_sums / jnp.maximum(steps, 1.0)
        average = jnp.where(seen, self.decay * state.regret_average + (1 - self.decay) * mean_regret,
                            state.regret_average)
        weight = jnp.where(seen, self.decay * state.average_weight + (1 - self.decay), state.average_weight)
        return CurriculumState(average, weight, state.runs_started + runs_started)

    def scalars(self, state: CurriculumState, names: Sequence[str]) -> dict[str, float]:
        """TensorBoard scalars: each cell's probability, regret estimate and runs begun, and each model
        family's share (the families sampled)."""
        state = jax.device_get(state)
        probabilities = np.asarray(self.probabilities(state))
        regret = np.asarray(self.regret(state))
        scalars, families = {}, {}
        for name, p, r, runs in zip(names, probabilities, regret, np.asarray(state.runs_started)):
            scalars[f"curriculum/probability/{name}"] = float(p)
            scalars[f"curriculum/regret/{name}"] = float(r)
            scalars[f"curriculum/runs_started/{name}"] = float(runs)
            family = name.split("/")[0]
            families[family] = families.get(family, 0.0) + float(p)
        scalars.update({f"curriculum/family/{family}": share for family, share in families.items()})
        return scalars


def baseline_curve(task, like: Unroller, parameterization: str, length: int, seed: int) -> tuple[np.ndarray, float]:
    """The meta-loss per step of tuned Adam on one config's task, a run of `length` steps: (curve, learning
    rate), the rate of BASELINE_LEARNING_RATES with the lowest mean over the run, averaged over
    BASELINE_SEEDS runs. Meta-loss as the unroller `like` measures it (split, normalizer, cap)."""
    adam = lopt.Adam(parameterization=parameterization)
    grid = BASELINE_LEARNING_RATES[parameterization]
    # One worker per (rate, seed), not particles of one worker: particles restart together when one
    # diverges, and the largest rates do.
    runs = Unroller(task, adam, ConstantLength(length), num_particles=1, max_meta_loss=like.max_meta_loss,
                    meta_loss_split=like.meta_loss_split, valid_weight=like.valid_weight, time_power=like.time_power)
    rates = jnp.repeat(jnp.asarray(grid, jnp.float32), BASELINE_SEEDS)
    thetas = jax.vmap(lambda rate: jax.tree.map(lambda leaf: leaf[None], {  # (workers, 1 particle, ...)
        **adam.init(None), "log_learning_rate": jnp.log(rate)}))(rates)

    @jax.jit
    def curves(data):
        keys = jnp.tile(jax.random.split(jax.random.key(seed), BASELINE_SEEDS), len(grid))
        workers = jax.vmap(lambda theta, key: runs.init(theta, key, stagger=False))(thetas, keys)
        meta_losses = runs.unroll_workers(thetas, workers, data, length)[1].meta_losses  # (rates * seeds, 1, K)
        return meta_losses.reshape(len(grid), BASELINE_SEEDS, length).mean(axis=1)

    by_rate = np.asarray(curves(runs.data))
    best = int(np.argmin(by_rate.mean(axis=1)))
    return by_rate[best], grid[best]


def baseline_curves(unrollers: Sequence[Unroller], names: Sequence[str], configs: Sequence, parameterization: str,
                    length: int, seed: int, workdir: Path, log: Callable[[str], None] = print) -> list[np.ndarray]:
    """Per bucket, (its cells, length) curves of tuned Adam: read from WORKDIR/curriculum_baselines.json
    when it holds these cells at this length and meta-loss, else run and written there (atomically)."""
    key = {"cells": [config.to_dict() for config in configs], "length": length, "seed": seed,
           "rates": list(BASELINE_LEARNING_RATES[parameterization]), "seeds": BASELINE_SEEDS,
           "parameterization": parameterization,
           "meta_loss": [(u.meta_loss_split, u.valid_weight, u.max_meta_loss) for u in unrollers]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(workdir) / BASELINES_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") == digest:
            return _by_bucket(unrollers, [np.asarray(cell["curve"], np.float32) for cell in record["cells"]])
    except (OSError, ValueError, KeyError):
        pass
    cells = []
    for unroller in unrollers:
        for variant in unroller.variants:
            name = names[len(cells)]
            curve, rate = baseline_curve(variant, unroller, parameterization, length, seed)
            log(f"curriculum baseline {name}: tuned Adam (learning rate {rate:g}) mean meta-loss {curve.mean():.3f}")
            cells.append({"name": name, "learning_rate": rate, "curve": curve.round(5).tolist()})
    write_atomically(path, json.dumps({"key": digest, "about": key, "cells": cells}))
    return _by_bucket(unrollers, [np.asarray(cell["curve"], np.float32) for cell in cells])


def _by_bucket(unrollers: Sequence[Unroller], curves: list[np.ndarray]) -> list[np.ndarray]:
    grouped, start = [], 0
    for unroller in unrollers:
        grouped.append(np.stack(curves[start:start + len(unroller.variants)]))
        start += len(unroller.variants)
    return grouped
