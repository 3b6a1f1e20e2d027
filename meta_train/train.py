"""The outer loop: step, log, checkpoint, and at the end save the learned optimizer for `lopt.load`
and compare it with tuned baselines on a held-out task.

A run killed at any moment and resumed with `resume=True` ends with the same theta as an uninterrupted
run: the state, the random keys included, is one pytree, checkpointed whole every `checkpoint_every`
steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax

import lopt
import tasks
from checkpoints.files import ScalarWriter, write_atomically
from meta_train import checkpointing, curriculum, distributed
from meta_train.compare import (COMPARED_BASELINES, ComparisonRow, compare_with_baselines, comparison_size,
                                held_out_task, markdown_table)
from checkpoints.imports import ImportPathError
from meta_train.config import ConfigError, MetaTrainConfig, object_label, resolve_eval_task
from meta_train.progress import Progress
from meta_train.trainer import MAX_CONSECUTIVE_SKIPS, MetaTrainer

OPTIMIZER_DIR = checkpointing.OPTIMIZER_DIR
COMPARISON_FILE = "comparison.json"
TENSORBOARD_DIR = "tensorboard"


# One line under the comparison saying what the learned optimizer was trained to do.
META_OBJECTIVES = {
    "train": "The meta-objective was training loss (meta_loss_split=train): the optimizer was trained to lower "
             "the training loss, not the validation loss; --set meta_loss_split=mix trains for both.",
    "valid": "The meta-objective was validation loss (meta_loss_split=valid).",
    "mix": "The meta-objective mixed training and validation loss (meta_loss_split=mix).",
}


class MetaTrainingError(RuntimeError):
    """Meta-training cannot go on (e.g. the meta-gradient stays non-finite)."""


@dataclasses.dataclass
class MetaTrainResult:
    optimizer: lopt.LearnedOptimizer
    theta: Any
    optimizer_path: Path  # lopt.load(optimizer_path, ...) gives it back
    comparison: str  # markdown table against Adam on the held-out task ("" if not run)
    seconds: float  # wall time of the outer loop of this invocation


def meta_train(config: MetaTrainConfig, workdir: str | Path, *, resume: bool = False, force: bool = False,
               compare: bool = True, log: Callable[[str], None] = print, mesh=None,
               preset: str | None = None, family: tasks.TaskFamily | None = None,
               eval_task: tasks.Task | None = None) -> MetaTrainResult:
    """Runs (or with resume, continues) meta-training in workdir.

    family, eval_task: your own objects (tasks.family(...), tasks.from_flax(...)) in place of the config's
    task_family and eval_task, which record them as "<name>"; resuming such a run takes them again. Named
    by import path in the config instead (task_family="my_module:FAMILY"), they are rebuilt from the
    record, by every process and on resume, and the command line can run them.

    Writes WORKDIR/config.json, checkpoints/ (orbax, the last `keep_checkpoints`), tensorboard/ (event
    files), optimizer/ (the final theta for `lopt.load`) and comparison.json. With force, a workdir that
    holds another run is started over; without it, such a workdir is refused and left as it is.
    `preset` (the preset the config came from, if any) is recorded in the saved optimizer's provenance.
    """
    workdir = Path(workdir).absolute()
    log = distributed.main_only(log)  # with several processes, process 0 speaks for all
    config = with_objects(config, family, eval_task)
    if not (resume or force):
        finished = finished_run(workdir, config, compare)
        if finished is not None:
            log(f"{workdir} already holds this run, finished ({config.outer_steps} outer steps): its optimizer is "
                f"{finished.optimizer_path}" + (f"\n\n{config.eval_task}, {config.eval_steps} steps, held-out "
                                                f"seed:\n{finished.comparison}" if finished.comparison else "")
                + "\n\n--force starts it over; another --workdir keeps this one")
            return finished
    checkpointing.check_workdir(workdir, config, resume=resume, force=force)
    trainer = MetaTrainer(config, mesh, family)
    if not force:  # nothing is written before the family's tasks are known to be the recorded ones
        checkpointing.check_recorded_tasks(workdir, trainer.cell_configs)
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    log(f"meta-training {trainer.optimizer.architecture} ({config.optimizer.parameterization}) "
        f"with {config.estimator} on {trainer.describe()}; {config.workers_per_config} workers per task over "
        f"{trainer.mesh.size} {jax.devices()[0].platform} device(s){processes}")
    # Every process has judged the workdir before any of them writes to it.
    distributed.barrier("meta_train: workdir checked")
    if distributed.is_main():
        workdir.mkdir(parents=True, exist_ok=True)
    distributed.barrier("meta_train: workdir made")
    if config.curriculum == "regret":
        rates = curriculum.BASELINE_LEARNING_RATES[config.optimizer.parameterization]
        log(f"measuring tuned Adam (for the regret curriculum) on its {len(trainer.cell_configs)} configs "
            f"({config.max_inner_length} steps, {len(rates)} rates; kept in {workdir / curriculum.BASELINES_FILE})")
        trainer.set_baselines(curriculum.baseline_curves(
            [estimator.unroller for estimator in trainer.estimators], trainer.cell_names(), trainer.cell_configs,
            config.optimizer.parameterization, config.max_inner_length, config.seed, workdir, log))
    started = time.perf_counter()
    state = trainer.init()
    initial_theta = jax.tree.map(lambda x: x.copy(), state.theta)
    manager = checkpointing.manager(workdir, config.keep_checkpoints)
    try:
        if force:  # starting over: the old run's checkpoints and curves go
            for step in manager.all_steps():
                manager.delete(step)
            if distributed.is_main():
                shutil.rmtree(workdir / TENSORBOARD_DIR, ignore_errors=True)
        if resume:
            restored = checkpointing.restore_newest_good(manager, state, log)
            if restored is None:
                log("--resume: no checkpoint yet, starting from the beginning")
            else:
                state = restored
        if distributed.is_main():
            checkpointing.write_config(workdir, config)
            checkpointing.write_tasks(workdir, trainer.cell_configs)
        state = _outer_loop(trainer, state, manager, workdir, log)
        manager.wait_until_finished()
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() > 1:
            # The manager is left open: closing it would wait for a pending save's barrier, which the
            # lost process never reaches. Committed checkpoints are complete on disk.
            raise distributed.lost_peer(error) from None
        manager.close()
        raise
    except BaseException:
        manager.close()
        raise
    manager.close()
    seconds = time.perf_counter() - started
    theta = jax.device_get(state.theta)
    table = ""
    optimizer_path = workdir / OPTIMIZER_DIR
    if distributed.is_main():
        save_optimizer(optimizer_path, config, theta, config.outer_steps, trainer.mesh.size, seconds, preset)
        log(f"saved the learned optimizer to {optimizer_path}; use it with "
            f"lopt.load({str(optimizer_path)!r}, num_steps=..., roles=...)")
        if compare:
            table = _compare(config, trainer, theta, jax.device_get(initial_theta), workdir, log, eval_task)
    # The others wait for process 0's files: a process that left now would wait at JAX's shutdown
    # barrier, which times out.
    distributed.barrier("meta_train: finished")
    return MetaTrainResult(trainer.optimizer, state.theta, optimizer_path, table, seconds)


def with_objects(config: MetaTrainConfig, family: tasks.TaskFamily | None, eval_task: tasks.Task | None
                 ) -> MetaTrainConfig:
    """The config recording the objects given to meta_train by name ("<name>")."""
    if family is not None:
        if not isinstance(family, tasks.TaskFamily):
            raise ConfigError(f"meta_train(family=...) takes a tasks.TaskFamily (e.g. tasks.family([...])), got "
                              f"{type(family).__name__}")
        config = dataclasses.replace(config, task_family=object_label(getattr(family, "name", type(family).__name__)))
    if eval_task is not None:
        if not isinstance(eval_task, tasks.Task):
            raise ConfigError(f"meta_train(eval_task=...) takes a tasks.Task, got {type(eval_task).__name__}")
        config = dataclasses.replace(config, eval_task=object_label(getattr(eval_task, "name", "eval_task")))
    elif family is not None:
        try:  # named by import path beside a family object: refused now, not after meta-training
            resolve_eval_task(config.eval_task)
        except ImportPathError as error:
            raise ConfigError(f"MetaTrainConfig.eval_task={config.eval_task!r}: {error}") from None
    return config


def _compare(config: MetaTrainConfig, trainer: MetaTrainer, theta, initial_theta, workdir: Path, log,
             eval_task: tasks.Task | None = None) -> str:
    """The learned optimizer against its initialization and the tuned baselines on the held-out task;
    writes comparison.json and returns the markdown table."""
    task = held_out_task(eval_task or config.eval_task, getattr(trainer.task_configs[0], "parameterization", None))
    log(f"comparing on the held-out task {config.eval_task} ({config.eval_steps} steps each): the learned "
        f"optimizer, its initialization and {', '.join(COMPARED_BASELINES.values())} over their learning-rate "
        f"grids ({comparison_size()} runs)")
    try:
        rows = compare_with_baselines(task, trainer.optimizer, theta, initial_theta, config.eval_steps, log=log)
    except tasks.TooLargeError as error:  # the learned optimizer is saved: say how to finish without it
        raise MetaTrainingError(f"the comparison on eval_task {config.eval_task!r} cannot run: {error}. The learned "
                                f"optimizer is saved at {workdir / OPTIMIZER_DIR}; rerun with --resume --no-compare "
                                "to finish without the comparison, or set eval_task to a smaller task") from None
    table = markdown_table(rows)
    write_atomically(workdir / COMPARISON_FILE, json.dumps(
        {"task": config.eval_task, "steps": config.eval_steps, "rows": [dataclasses.asdict(r) for r in rows]},
        indent=2))
    log(f"\n{config.eval_task}, {config.eval_steps} steps, held-out seed:\n{table}\n\n"
        f"{META_OBJECTIVES[config.meta_loss_split]}\nthe table: {workdir / COMPARISON_FILE}; the curves: "
        f"tensorboard --logdir {workdir / TENSORBOARD_DIR}")
    return table


def finished_run(workdir: Path, config: MetaTrainConfig, compare: bool) -> MetaTrainResult | None:
    """The result of a run of this config that workdir holds finished (its optimizer saved after every
    outer step, and its comparison if one is asked for), read back; None for anything else, which
    `checkpointing.check_workdir` then judges."""
    if not (workdir / checkpointing.CONFIG_FILE).is_file() or not (workdir / OPTIMIZER_DIR).is_dir():
        return None
    try:
        checkpointing.check_workdir(workdir, config, resume=True, force=False)
        optimizer, theta, spec = lopt.load_optimizer(workdir / OPTIMIZER_DIR)
        comparison = ""
        if compare:
            record = json.loads((workdir / COMPARISON_FILE).read_text(encoding="utf-8"))
            if (record.get("task"), record.get("steps")) != (config.eval_task, config.eval_steps):
                return None
            comparison = markdown_table([ComparisonRow(**row) for row in record["rows"]])
    except (checkpointing.WorkdirError, ValueError, OSError, KeyError, TypeError):
        return None
    if (spec.get("provenance") or {}).get("outer_steps") != config.outer_steps:
        return None
    return MetaTrainResult(optimizer, theta, workdir / OPTIMIZER_DIR, comparison, 0.0)


def save_optimizer(directory: Path, config: MetaTrainConfig, theta: Any, outer_steps: int, num_devices: int,
                   seconds: float | None, preset: str | None = None) -> Path:
    """theta in the format `lopt.load` reads, with what produced it as provenance (the config is what
    `python -m evaluate` builds its suites around)."""
    return lopt.save(directory, config.optimizer, theta, preset=preset, task_family=config.task_family,
                     estimator=config.estimator, outer_steps=outer_steps,
                     machine=_machine(num_devices),
                     wall_seconds_last_invocation=seconds, config=config.to_record())


def _machine(num_devices: int) -> str:
    """What ran it: the devices, and for CPUs the core count (what a CPU wall time depends on)."""
    device = jax.devices()[0]
    cores = f", {os.cpu_count()} cores" if device.platform == "cpu" else ""
    return f"{num_devices} x {device.device_kind}{cores}"


def export_checkpoint(workdir: str | Path, step: int | None = None, destination: str | Path | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """The theta of a run's checkpoint (the newest, or `step`) written for `lopt.load`, by default to
    WORKDIR/optimizer_step_N: a run in progress can be evaluated without stopping it."""
    workdir = Path(workdir).absolute()
    try:
        config = MetaTrainConfig.from_record(json.loads((workdir / checkpointing.CONFIG_FILE).read_text()))
    except FileNotFoundError:
        raise checkpointing.WorkdirError(f"{workdir} holds no meta-training run "
                                         f"({checkpointing.CONFIG_FILE} is missing)") from None
    step, theta = checkpointing.restore_theta(workdir, step)
    path = save_optimizer(Path(destination) if destination else workdir / f"{OPTIMIZER_DIR}_step_{step}", config,
                          theta, step, 1, None)
    log(f"wrote theta of outer step {step} to {path}")
    return path


def _outer_loop(trainer: MetaTrainer, state, manager, workdir: Path, log):
    config = trainer.config
    data = trainer.data()
    start = int(state.step)
    main = distributed.is_main()
    watchdog = distributed.StallWatchdog(distributed.timeout()) if jax.process_count() > 1 else None
    writer = ScalarWriter(workdir / TENSORBOARD_DIR) if main else None
    progress = Progress(config.outer_steps, start, config.log_every) if main else None
    inner_steps = trainer.inner_steps_per_outer_step()
    cell_names = trainer.cell_names()
    window_start, window_steps = time.perf_counter(), 0
    try:
        for step in range(start + 1, config.outer_steps + 1):
            state, metrics = trainer.step(state, data)
            if trainer.one_step_at_a_time:
                jax.block_until_ready(state)
            window_steps += 1
            if step % config.log_every == 0 or step == config.outer_steps:
                metrics = {name: float(value) for name, value in metrics.items()}
                elapsed = time.perf_counter() - window_start
                metrics["inner_steps_per_second"] = inner_steps * window_steps / elapsed
                if main:
                    writer.write(step, {**metrics, **trainer.curriculum.scalars(state.curriculum, cell_names)})
                    progress.update(step, metrics)
                window_start, window_steps = time.perf_counter(), 0
                if metrics["consecutive_skips"] >= MAX_CONSECUTIVE_SKIPS:
                    raise MetaTrainingError(
                        f"the meta-gradient was non-finite for {int(metrics['consecutive_skips'])} outer steps in a "
                        f"row (theta was left unchanged); the last good state is in {workdir / 'checkpoints'}. "
                        "Try a lower learning_rate, sigma or max_meta_loss")
            if step % config.checkpoint_every == 0 or step == config.outer_steps:
                checkpointing.save(manager, step, trainer.snapshot(state))
            if watchdog is not None:
                watchdog.beat()
    finally:
        if watchdog is not None:
            watchdog.stop()
        if main:
            progress.close()
            writer.close()
    return state
