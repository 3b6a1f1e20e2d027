"""The meta-trained optimizer against the tuned baselines a practitioner would use, on a held-out task:
what `python -m meta_train` shows at the end of a run. Each optimizer trains the same task from the same
init with the same batches; each baseline is tuned over its grid (lopt.baselines, the grids evaluate
tunes over) per metric, as evaluate reports it: its best training loss and its best validation loss.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

import lopt
import tasks
from lopt.baselines import BASELINES, PRACTITIONER_BASELINES
from meta_train.config import resolve_eval_task
from tasks.train import train_each

COMPARED_BASELINES = PRACTITIONER_BASELINES


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    optimizer: str
    train_loss: float  # mean minibatch loss of the last logging interval (a tenth of the run)
    valid_loss: float
    valid_accuracy: float | None
    setting: str = ""  # a tuned baseline's learning rates: the best on training and on validation loss
    runs_per_group: int | None = None  # runs vmapped together (train_each): what the rounding depends on


def held_out_task(task_name: str | tasks.Task, parameterization: str | None) -> tasks.Task:
    """The named task, in the meta-training family's parameterization where the task has one; the
    user's own as it is, for an import path."""
    own = task_name if isinstance(task_name, tasks.Task) else resolve_eval_task(task_name)
    if own is not None:
        return own
    config = tasks.task_config(task_name)
    if parameterization is not None and hasattr(config, "parameterization"):
        config = config.replace(parameterization=parameterization)
    return config.build()


def comparison_size() -> int:
    """How many training runs `compare_with_baselines` makes."""
    return 2 + sum(len(BASELINES[name][1]) for name in COMPARED_BASELINES)


def compare_with_baselines(task: tasks.Task, optimizer: lopt.LearnedOptimizer, theta: Any, initial_theta: Any,
                           num_steps: int, *, seed: int = 1, log: Callable[[str], None] = lambda line: None
                           ) -> list[ComparisonRow]:
    """The learned optimizer, its initialization, and each of COMPARED_BASELINES tuned over its grid, each
    trained for num_steps (an optimizer's runs vmapped together); `log` gets a line per run."""
    log_every = math.gcd(num_steps, max(num_steps // 10, 1))
    roles = task.roles(jax.eval_shape(task.init, jax.random.key(0)))
    total, done = comparison_size(), []

    def runs(names: list[str], make: Callable[[Any], Any], settings: Any) -> list[ComparisonRow]:
        """One run per setting, vmapped together as far as memory allows (train_each)."""
        results = train_each(task, make, settings, num_steps, seed=seed, log_every=log_every, log=lambda line: None,
                             label=f"the held-out task with {names[0].partition(',')[0]}")
        for name, result in zip(names, results):
            done.append(name)
            log(f"  [{len(done)}/{total}] {name}: train loss {result.train_loss:.4g}, valid loss {result.valid_loss:.4g}")
        return [ComparisonRow(name, result.train_loss, result.valid_loss, result.valid_accuracy,
                              runs_per_group=result.runs_per_group) for name, result in zip(names, results)]

    rows = runs(["learned optimizer", "learned optimizer at its initialization"],
                lambda theta: optimizer.transform(theta, num_steps, roles),
                jax.tree.map(lambda *leaves: jnp.stack(leaves), theta, initial_theta))
    for name, label in COMPARED_BASELINES.items():
        make, grid = BASELINES[name][:2]
        by_rate = dict(zip(grid, runs([f"{label}, learning rate {rate:g}" for rate in grid],
                                      lambda rate: make(rate, num_steps, roles), jnp.asarray(grid, jnp.float32))))
        best_train = min(by_rate, key=lambda rate: _finite(by_rate[rate].train_loss))
        best_valid = min(by_rate, key=lambda rate: _finite(by_rate[rate].valid_loss))
        rows.append(ComparisonRow(f"{label} (tuned over {len(grid)} rates)", by_rate[best_train].train_loss,
                                  by_rate[best_valid].valid_loss, by_rate[best_valid].valid_accuracy,
                                  f"lr {best_train:g} on train, {best_valid:g} on valid",
                                  by_rate[best_valid].runs_per_group))
    return rows


def _finite(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf


def markdown_table(rows: list[ComparisonRow]) -> str:
    lines = ["| optimizer | train loss | valid loss | valid accuracy | setting |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        accuracy = "" if row.valid_accuracy is None else f"{row.valid_accuracy:.3f}"
        # Four significant digits: a learned optimizer's training loss can be 1e-5 where Adam's is 1e-2.
        lines.append(f"| {row.optimizer} | {row.train_loss:.4g} | {row.valid_loss:.4g} | {accuracy} | {row.setting} |")
    return "\n".join(lines)
