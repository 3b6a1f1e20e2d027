"""The meta-trained optimizer against Adam on a held-out task: what `python -m meta_train` shows at the
end of a run. Each optimizer trains the same task from the same init with the same batches."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import optax

import lopt
import tasks
from tasks.train import train

ADAM_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)  # Adam is tuned over these, best final training loss


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    optimizer: str
    train_loss: float  # mean over the last tenth of the run
    valid_loss: float
    valid_accuracy: float | None


def held_out_task(task_name: str, parameterization: str | None) -> tasks.Task:
    """The named task, in the meta-training family's parameterization where the task has one."""
    config = tasks.task_config(task_name)
    if parameterization is not None and hasattr(config, "parameterization"):
        config = config.replace(parameterization=parameterization)
    return config.build()


def compare_with_adam(task: tasks.Task, optimizer: lopt.LearnedOptimizer, theta: Any, initial_theta: Any,
                      num_steps: int, *, seed: int = 1, log: Callable[[str], None] = lambda line: None
                      ) -> list[ComparisonRow]:
    """The learned optimizer, its initialization, and Adam at each of ADAM_LEARNING_RATES (the best
    one reported), each trained for num_steps; `log` gets a line as each run ends."""
    log_every = math.gcd(num_steps, max(num_steps // 10, 1))
    roles = task.roles(jax.eval_shape(task.init, jax.random.key(0)))
    total = 2 + len(ADAM_LEARNING_RATES)
    done = []

    def run(name: str, transform) -> ComparisonRow:
        result = train(task, transform, num_steps, seed=seed, log_every=log_every, log=lambda line: None)
        done.append(name)
        log(f"  [{len(done)}/{total}] {name}: train loss {result.train_loss:.4g}, valid loss {result.valid_loss:.4g}")
        return ComparisonRow(name, result.train_loss, result.valid_loss, result.valid_accuracy)

    rows = [run("learned optimizer", optimizer.transform(theta, num_steps, roles)),
            run("learned optimizer at its initialization", optimizer.transform(initial_theta, num_steps, roles))]
    adam = [run(f"Adam, learning rate {rate:g}", optax.adam(rate)) for rate in ADAM_LEARNING_RATES]
    best = min(adam, key=lambda row: row.train_loss if math.isfinite(row.train_loss) else math.inf)
    rows.append(dataclasses.replace(best, optimizer=f"{best.optimizer} (best of {len(adam)})"))
    return rows


def markdown_table(rows: list[ComparisonRow]) -> str:
    lines = ["| optimizer | train loss | valid loss | valid accuracy |", "| --- | --- | --- | --- |"]
    for row in rows:
        accuracy = "" if row.valid_accuracy is None else f"{row.valid_accuracy:.3f}"
        # Four significant digits: a learned optimizer's training loss can be 1e-5 where Adam's is 1e-2.
        lines.append(f"| {row.optimizer} | {row.train_loss:.4g} | {row.valid_loss:.4g} | {accuracy} |")
    return "\n".join(lines)
