"""A generalization sweep: every optimizer on every task of a suite, several seeds vmapped together,
baselines tuned per task, then metrics, tables and plots in the workdir.

    result = evaluate.run_suite(["my_optimizer"], "width", "runs/width", steps=500, seeds=3)
    result.summary  # one row per (task, optimizer): final loss, speedup over tuned Adam, ...

Each optimizer trains a task in its own parameterization where the task has one (muP learned
optimizers and muAdam train the muP model, Adam, AdamW, SGD and standard-parameterization learned
optimizers the standard one), as the muLO paper compares them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

import tasks
from checkpoints.files import write_atomically
from evaluate import memory, metrics, report, runner
from evaluate.optimizers import REFERENCE_BASELINE, EvalOptimizer, OptimizerError, baseline, resolve
from evaluate.store import DEFAULT_CACHE, RunStore, run_key
from evaluate.suites import MetaTrainingScope, Suite, SuiteError, SuiteTask, build

DEFAULT_BASELINES = ("adam", "adamw", "muadam", "sgdm")
SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"


class SweepError(ValueError):
    """A workdir that holds another sweep, or a sweep asked with no optimizer."""


@dataclasses.dataclass
class UnitResult:
    """One optimizer on one task of the suite: every candidate's runs, and the one chosen."""

    task: SuiteTask
    config: tasks.TaskConfig  # the task as this optimizer trained it (its parameterization)
    optimizer: EvalOptimizer
    runs: dict[str, list[runner.Curves]]  # candidate label -> one Curves per seed
    chosen: str  # the candidate with the lowest final training loss (mean over seeds)
    chosen_at_grid_edge: bool  # a tuned baseline whose best learning rate is the grid's first or last
    seconds: float  # wall time of the runs done now (0 when all came from the cache or the workdir)
    reused: int  # runs read back instead of trained

    @property
    def compute_seconds(self) -> float:
        """What all its runs cost when they were trained, now or before."""
        return sum(curves.seconds for runs in self.runs.values() for curves in runs)

    def curve(self, metric: str = "train_loss"):
        return metrics.mean_curve([getattr(curves, metric) for curves in self.runs[self.chosen]])

    @property
    def steps(self) -> tuple[int, ...]:
        return self.runs[self.chosen][0].steps

    @property
    def has_accuracy(self) -> bool:
        return self.runs[self.chosen][0].valid_accuracy is not None


@dataclasses.dataclass
class SweepResult:
    suite: Suite
    units: list[UnitResult]
    summary: list[dict[str, Any]]  # one row per (task, optimizer)
    overall: list[dict[str, Any]]  # one row per optimizer: win rate, average rank, median speedup
    workdir: Path
    files: list[Path]


@dataclasses.dataclass
class _Plan:
    """One optimizer on one task, before it runs: its runs' store keys, and those already done."""

    task: SuiteTask
    config: tasks.TaskConfig
    optimizer: EvalOptimizer
    store: RunStore
    stride: int
    keys: dict[tuple[int, int], dict[str, Any]]  # (candidate index, seed) -> store key
    found: dict[tuple[int, int], runner.Curves | None]
    parallel: int = 1  # runs vmapped together, set by the memory check
    built: tasks.Task | None = None  # the task, built by the memory check when runs are missing

    @property
    def missing(self) -> list[tuple[int, int]]:
        return [job for job, curves in self.found.items() if curves is None]


def _config_for(task: SuiteTask, optimizer: EvalOptimizer) -> tasks.TaskConfig:
    """The task in the optimizer's own parameterization, unless the suite fixes it."""
    if optimizer.parameterization and hasattr(task.config, "parameterization") and not task.keep_parameterization:
        return task.config.replace(parameterization=optimizer.parameterization)
    return task.config


def _plan(task: SuiteTask, optimizer: EvalOptimizer, seeds: Sequence[int], store: RunStore,
          stride: int | None) -> _Plan:
    config = _config_for(task, optimizer)
    stride = stride or runner.default_stride(task.num_steps)
    runner.check_stride(task.num_steps, stride)
    keys = {(i, seed): run_key(config, optimizer, candidate, seed, task.num_steps, stride)
            for i, candidate in enumerate(optimizer.candidates) for seed in seeds}
    return _Plan(task, config, optimizer, store, stride, keys, {job: store.get(key) for job, key in keys.items()})


def _fit(plan: _Plan, parallel: int | None) -> None:
    """Builds the task and checks its memory (before anything is written or compiled), choosing how many
    runs to vmap together; a task that cannot be built is reported by its label."""
    try:
        plan.built = plan.config.build()
    except (OSError, ValueError) as error:
        raise SuiteError(f"task {plan.task.label!r} cannot be built: {error}") from None
    wanted = min(parallel or len(plan.missing), len(plan.missing))
    plan.parallel = memory.runs_that_fit(plan.built, plan.optimizer, plan.task.num_steps, wanted, plan.task.label)


def _choose(optimizer: EvalOptimizer, runs: dict[str, list[runner.Curves]]) -> tuple[str, bool]:
    def score(label):  # mean_curve makes a diverged seed inf, so diverged candidates sort last
        return float(metrics.mean_curve([c.train_loss for c in runs[label]])[-1])
    labels = [candidate.label for candidate in optimizer.candidates]
    chosen = min(labels, key=score)
    return chosen, optimizer.tuned and chosen in (labels[0], labels[-1])


def _execute(plan: _Plan, seeds: Sequence[int]) -> UnitResult:
    """Trains the missing runs, each group stored as soon as it finishes, and picks the best candidate."""
    missing = plan.missing
    start = time.perf_counter()
    if missing:
        def store(job, curves):
            plan.store.put(plan.keys[job], curves)
            plan.found[job] = curves
        runner.run(plan.built, plan.optimizer, missing, plan.task.num_steps, plan.stride, plan.parallel,
                   on_result=store)
    runs = {candidate.label: [plan.found[(i, seed)] for seed in seeds]
            for i, candidate in enumerate(plan.optimizer.candidates)}
    chosen, at_edge = _choose(plan.optimizer, runs)
    return UnitResult(plan.task, plan.config, plan.optimizer, runs, chosen, at_edge,
                      time.perf_counter() - start if missing else 0.0, len(plan.keys) - len(missing))


def _sweep_record(suite: Suite, optimizers: Sequence[EvalOptimizer], seeds: Sequence[int],
                  scope: MetaTrainingScope) -> dict[str, Any]:
    return {"suite": suite.name, "tasks": [task.to_dict() for task in suite.tasks],
            "optimizers": {optimizer.name: optimizer.identity for optimizer in optimizers}, "seeds": list(seeds),
            "scope": dataclasses.asdict(scope)}


def _check_workdir(workdir: Path, record: dict[str, Any], force: bool) -> None:
    """A workdir holds one sweep: the same one is resumed, another is refused unless forced. Forcing
    removes the other sweep's tables, plots and TensorBoard files; its runs stay (each is stored under
    a hash of its inputs, so it can only ever be reused by the run it is). A non-empty directory that
    holds no sweep is never written into."""
    path = workdir / SWEEP_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != record and not force:
            differing = [key for key in record if previous.get(key) != record[key]]
            raise SweepError(f"{workdir} holds another sweep (it differs in: {', '.join(differing)}); "
                             "use another workdir, or force=True (--force) to replace it")
        if previous != record:
            for derived in report.DERIVED_FILES:
                (workdir / derived).unlink(missing_ok=True)
            for derived in (report.plots.PLOTS_DIR, report.TENSORBOARD_DIR):
                shutil.rmtree(workdir / derived, ignore_errors=True)
    elif workdir.exists() and any(workdir.iterdir()):
        raise SweepError(f"{workdir} is not empty and holds no sweep; refusing to write into it "
                         "(use an empty or new directory)")
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True))


def summarize(units: list[UnitResult], suite: Suite) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (task, optimizer) rows, and per optimizer rows over the suite."""
    by_task: dict[str, dict[str, UnitResult]] = {}
    for unit in units:
        by_task.setdefault(unit.task.label, {})[unit.optimizer.name] = unit
    names = list(dict.fromkeys(unit.optimizer.name for unit in units))
    reference_name = REFERENCE_BASELINE if REFERENCE_BASELINE in names else None
    rows = []
    for task in suite.tasks:
        group = by_task[task.label]
        finals = [metrics.final_loss(group[name].curve()) for name in names]
        task_ranks = metrics.ranks(finals)
        reference = group[reference_name] if reference_name else None
        for name, rank in zip(names, task_ranks):
            unit = group[name]
            train = unit.curve()
            row = {"task": task.label, "optimizer": name, "steps": task.num_steps, "axis": task.axis, "x": task.x,
                   "parameterization": getattr(unit.config, "parameterization", None), "chosen": unit.chosen,
                   "chosen_at_grid_edge": unit.chosen_at_grid_edge,
                   "final_train_loss": metrics.final_loss(train), "best_train_loss": metrics.best_loss(train),
                   "final_valid_loss": metrics.final_loss(unit.curve("valid_loss")),
                   "final_valid_accuracy": float(unit.curve("valid_accuracy")[-1]) if unit.has_accuracy else None,
                   "diverged": metrics.diverged(train), "rank": rank, "seconds": unit.compute_seconds,
                   "steps_to_reference": None, "speedup": None}
            if reference is not None and name != reference_name:
                row["steps_to_reference"] = metrics.steps_to_reach(
                    unit.steps, train, metrics.final_loss(reference.curve()))
                row["speedup"] = metrics.speedup(unit.steps, train, reference.curve())
            rows.append(row)
    overall = []
    for name in names:
        mine = [row for row in rows if row["optimizer"] == name]
        entry = {"optimizer": name, "tasks": len(mine), "mean_rank": sum(r["rank"] for r in mine) / len(mine),
                 "diverged": sum(r["diverged"] for r in mine), "win_rate": None, "median_speedup": None}
        if reference_name and name != reference_name:
            reference_rows = [row for row in rows if row["optimizer"] == reference_name]
            entry["win_rate"] = metrics.win_rate([r["final_train_loss"] for r in mine],
                                                 [r["final_train_loss"] for r in reference_rows])
            entry["median_speedup"] = float(statistics.median(r["speedup"] for r in mine))
        overall.append(entry)
    return rows, overall


def run_suite(optimizers: Sequence[str | os.PathLike | EvalOptimizer], suite: str | os.PathLike | Suite,
              workdir: str | os.PathLike, *, steps: int | None = None, seeds: int = 3,
              baselines: Sequence[str] = DEFAULT_BASELINES, cache_dir: str | os.PathLike | None = None,
              stride: int | None = None, parallel: int | None = None, force: bool = False,
              log: Callable[[str], None] = print) -> SweepResult:
    """Runs a suite and writes its outputs to workdir; returns the results.

    optimizers: learned optimizers (shipped names or checkpoint directories) and/or baselines by name
        ("adam", "sgdm@0.1"); the tuned `baselines` are added after them.
    suite: a name from evaluate.SUITES, a JSON suite file, or a Suite.
    steps: the meta-training horizon the suite is built around (default: what the first learned
        optimizer was meta-trained with, else 1000); for a custom suite, every task's budget.
    seeds: runs per optimizer and task (seeds 0..seeds-1), vmapped together.
    cache_dir: where baseline runs are cached across sweeps (default ~/.cache/lopt/baselines, or
        $LOPT_BASELINE_CACHE).
    """
    if not (isinstance(seeds, int) and seeds > 0):
        raise SweepError(f"seeds={seeds!r}: must be a positive integer")
    for name, value in (("steps", steps), ("stride", stride), ("parallel", parallel)):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise SweepError(f"{name}={value!r}: must be a positive integer")
    chosen = [item if isinstance(item, EvalOptimizer) else resolve(item) for item in optimizers]
    chosen += [baseline(name) for name in baselines if name not in {o.name for o in chosen}]
    if not chosen:
        raise OptimizerError("nothing to evaluate: give an optimizer or keep the baselines")
    names = [optimizer.name for optimizer in chosen]
    if len(set(names)) != len(names):
        raise OptimizerError(f"optimizer names must be unique: {names}")
    scope, scope_source = _scope(chosen)
    suite = suite if isinstance(suite, Suite) else build(suite, scope, steps)
    log(f"suite {suite.name}: {len(suite.tasks)} tasks x {len(chosen)} optimizers, built around family "
        f"{scope.family} and horizon {scope.horizon} ({scope_source})")
    workdir = Path(workdir)
    seed_list = list(range(seeds))
    baseline_store, own_store = RunStore(cache_dir or DEFAULT_CACHE), RunStore(workdir / RUNS_DIR)
    plans = [_plan(task, optimizer, seed_list, baseline_store if optimizer.baseline else own_store, stride)
             for task in suite.tasks for optimizer in chosen]
    # Every task is built and its memory checked before anything is written or compiled, so bad input
    # fails in seconds and leaves the workdir as it was.
    for plan in plans:
        if plan.missing:
            _fit(plan, parallel)
    _check_workdir(workdir, _sweep_record(suite, chosen, seed_list, scope), force)

    units = []
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(plans), unit="pair", disable=not interactive, dynamic_ncols=True)
    start = time.perf_counter()
    for plan in plans:
        bar.set_postfix_str(f"{plan.task.label} / {plan.optimizer.name}")
        unit = _execute(plan, seed_list)
        units.append(unit)
        bar.update()
        if not interactive:
            log(f"[{len(units)}/{len(plans)}] {plan.task.label} / {plan.optimizer.name}: "
                f"{len(plan.optimizer.candidates)} x {seeds} runs, {unit.reused} reused, {unit.seconds:.1f} s, "
                f"final train loss {metrics.final_loss(unit.curve()):.4g} ({unit.chosen})")
    bar.close()
    rows, overall = summarize(units, suite)
    elapsed = time.perf_counter() - start
    files = report.write_all(workdir, suite, units, rows, overall, elapsed, scope, scope_source)
    log(f"{suite.name}: {len(units)} optimizer-task pairs in {elapsed:.0f} s; summary in {workdir / report.SUMMARY_MD}")
    return SweepResult(suite, units, rows, overall, workdir, files)


def _scope(optimizers: Sequence[EvalOptimizer]) -> tuple[MetaTrainingScope, str]:
    """What the suites are built around, and where that came from (said in the log and the summary)."""
    for optimizer in optimizers:
        if not optimizer.baseline and MetaTrainingScope.recorded_in(optimizer.spec):
            return MetaTrainingScope.from_spec(optimizer.spec), f"from {optimizer.name}'s meta-training config"
    return MetaTrainingScope(), "the default meta-training preset's: no optimizer records its own"
