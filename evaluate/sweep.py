"""A generalization sweep: every optimizer on every task of a suite, several seeds vmapped together,
baselines tuned per task, then metrics, tables and plots in the workdir.

    result = evaluate.run_suite(["mulo"], "ood", "runs/ood", seeds=3)
    print(result.summary)  # one row per (task, optimizer): both losses, ratios to the baselines, speedup

Each optimizer trains a task in its own parameterization where the task has one (muP learned
optimizers and muAdam train the muP model, Adam, AdamW, Muon, SGD and standard-parameterization learned
optimizers the standard one), as the muLO paper compares them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import tasks
from checkpoints.files import write_atomically
from checkpoints.optional import require
from evaluate import memory, metrics, report, runner, task_objects
from evaluate.optimizers import EvalOptimizer, OptimizerError, baseline, resolve
from evaluate.store import DEFAULT_CACHE, RUNS_DIR, CacheAndWorkdir, RunStore, run_key
from evaluate.suites import SUITES, MetaTrainingScope, Suite, SuiteError, SuiteTask, build
from evaluate.summary import Table, summarize

tqdm = require("tqdm", "the evaluation sweep's progress bar", "eval").tqdm

DEFAULT_BASELINES = ("adam", "adamw", "adamw_cosine", "adamw_linear", "muon", "muon_linear", "muadam", "sgdm")
SWEEP_FILE = "sweep.json"
SHARDS_DIR = "shards"  # one file per finished shard of a sharded sweep


class SweepError(ValueError):
    """A workdir that holds another sweep, or a sweep asked with no optimizer."""


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" (the I-th of N shards, 0-based) as (I, N)."""
    index, _, count = str(text).partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise SweepError(f"shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2 and 1/2 for two shards")
    return int(index), int(count)


@dataclasses.dataclass
class UnitResult:
    """One optimizer on one task of the suite: every candidate's runs, and the one chosen."""

    task: SuiteTask
    config: tasks.TaskConfig  # the task as this optimizer trained it (its parameterization)
    optimizer: EvalOptimizer
    runs: dict[str, list[runner.Curves]]  # candidate label -> one Curves per seed
    seeds: tuple[int, ...]  # the seed of each entry of every runs list
    chosen: str  # the candidate with the lowest final training loss (mean over seeds)
    chosen_at_grid_edge: bool  # a tuned baseline whose best learning rate is the grid's first or last
    chosen_on_valid: str  # the candidate with the lowest final validation loss, as a practitioner tunes
    chosen_on_valid_at_grid_edge: bool
    seconds: float  # wall time of the runs done now (0 when all came from the cache or the workdir)
    reused: int  # runs read back instead of trained
    runs_per_group: int  # runs vmapped together in one compiled program (part of every run's key)

    @property
    def compute_seconds(self) -> float:
        """What all its runs cost when they were trained, now or before."""
        return sum(curves.seconds for runs in self.runs.values() for curves in runs)

    def choice(self, metric: str) -> str:
        """The candidate a metric is reported at: training loss at the one chosen on training loss,
        validation loss and accuracy at the one chosen on validation loss."""
        return self.chosen if metric == "train_loss" else self.chosen_on_valid

    def curve(self, metric: str = "train_loss", candidate: str | None = None):
        """The mean over seeds of a metric, at `candidate` or else at the choice for that metric."""
        label = candidate or self.choice(metric)
        return metrics.mean_curve([getattr(curves, metric) for curves in self.runs[label]])

    def best_valid_loss(self) -> float:
        """The lowest validation loss at any record point of any candidate (mean over seeds): what keeping
        the best checkpoint gives, with the learning rate tuned on that too."""
        return min(metrics.best_loss(self.curve("valid_loss", label)) for label in self.runs)

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
    summary: Table  # one row per (task, optimizer); prints as the markdown table of summary.md
    overall: Table  # one row per optimizer: win rates and median ratios on both metrics, speedup, rank
    workdir: Path
    files: list[Path]
    complete: bool = True  # False for a shard that left the summary to the last one

    def __str__(self) -> str:
        return (self.workdir / report.SUMMARY_MD).read_text(encoding="utf-8")


@dataclasses.dataclass
class _Plan:
    """One optimizer on one task, before it runs: its jobs in a fixed order, how many run together, their
    store keys, and those already done."""

    task: SuiteTask
    config: tasks.TaskConfig
    optimizer: EvalOptimizer
    store: RunStore | CacheAndWorkdir
    stride: int
    jobs: list[tuple[int, int]]  # (candidate index, seed), candidate-major
    parallel: int  # runs vmapped together: all the jobs, unless the device's memory holds fewer
    keys: dict[tuple[int, int], dict[str, Any]] = dataclasses.field(default_factory=dict)  # job -> store key
    found: dict[tuple[int, int], runner.Curves | None] = dataclasses.field(default_factory=dict)
    built: tasks.Task | None = None  # the task, built by the memory check when runs are missing

    def look_up(self) -> None:
        """Each job's key (which names the group it runs in) and its stored curves, if any."""
        labels = [candidate.label for candidate in self.optimizer.candidates]
        self.keys, self.found = {}, {}
        for group in runner.groups(self.jobs, self.parallel):
            members = [[labels[index], seed] for index, seed in group]
            for index, seed in dict.fromkeys(group):
                self.keys[(index, seed)] = run_key(self.config, self.optimizer, self.optimizer.candidates[index],
                                                   seed, self.task.num_steps, self.stride, members)
                self.found[(index, seed)] = self.store.get(self.keys[(index, seed)])

    @property
    def missing(self) -> list[tuple[int, int]]:
        return [job for job, curves in self.found.items() if curves is None]

    @property
    def to_run(self) -> list[list[tuple[int, int]]]:
        """Every group with a missing run: a group runs whole, so each run is computed in the group its
        key names."""
        return [group for group in runner.groups(self.jobs, self.parallel)
                if any(self.found[job] is None for job in group)]


def _config_for(task: SuiteTask, optimizer: EvalOptimizer) -> tasks.TaskConfig:
    """The task in the optimizer's own parameterization, unless the suite fixes it."""
    if optimizer.parameterization and hasattr(task.config, "parameterization") and not task.keep_parameterization:
        return task.config.replace(parameterization=optimizer.parameterization)
    return task.config


def _plan(task: SuiteTask, optimizer: EvalOptimizer, seeds: Sequence[int], store: RunStore,
          stride: int | None, parallel: int | None) -> _Plan:
    """The unit's jobs, first looked up as one group (or `parallel` at a time): the grouping a device with
    the memory for it uses, so a sweep whose runs are all stored never builds a task."""
    config = _config_for(task, optimizer)
    stride = stride or runner.default_stride(task.num_steps)
    runner.check_stride(task.num_steps, stride)
    jobs = [(i, seed) for i in range(len(optimizer.candidates)) for seed in seeds]
    plan = _Plan(task, config, optimizer, store, stride, jobs, min(parallel or len(jobs), len(jobs)))
    plan.look_up()
    return plan


def _fit(plan: _Plan) -> None:
    """Builds the task and checks its memory (before anything is written or compiled): a device that
    cannot hold the planned group runs smaller groups, under keys that say so. A task that cannot be
    built is reported by its label."""
    if plan.task.task is not None:  # a task passed as an object: run as it is
        plan.built = plan.task.task
    else:
        try:
            plan.built = plan.config.build()
        except (OSError, ValueError) as error:
            raise SuiteError(f"task {plan.task.label!r} cannot be built: {error}") from None
    fitting = memory.runs_that_fit(plan.built, plan.optimizer, plan.task.num_steps, plan.parallel, plan.task.label)
    if fitting != plan.parallel:
        plan.parallel = fitting
        plan.look_up()


def _choose(optimizer: EvalOptimizer, runs: dict[str, list[runner.Curves]], metric: str) -> tuple[str, bool]:
    """The candidate with the lowest final value of a loss (mean over seeds), and whether a tuned
    baseline's choice lies at its grid's edge."""
    def score(label):  # mean_curve makes a diverged seed inf, so diverged candidates sort last
        return float(metrics.mean_curve([getattr(c, metric) for c in runs[label]])[-1])
    labels = [candidate.label for candidate in optimizer.candidates]
    chosen = min(labels, key=score)
    return chosen, optimizer.tuned and chosen in (labels[0], labels[-1])


def _execute(plan: _Plan, seeds: Sequence[int]) -> UnitResult:
    """Trains the groups with missing runs, each group stored as soon as it finishes, and picks the
    best candidate on each metric."""
    start = time.perf_counter()
    trained = 0  # runs that were in neither store

    def store(job, curves):
        plan.store.put(plan.keys[job], curves)
        plan.found[job] = curves

    for group in plan.to_run:
        # Looked up again: another sweep sharing the cache may have stored the group since this one planned.
        for job in dict.fromkeys(group):
            if plan.found[job] is None:
                plan.found[job] = plan.store.get(plan.keys[job])
        missing = sum(1 for job in dict.fromkeys(group) if plan.found[job] is None)
        if missing:
            runner.run_groups(plan.built, plan.optimizer, [group], plan.task.num_steps, plan.stride, on_result=store)
            trained += missing
    reused = len(plan.keys) - trained
    runs = {candidate.label: [plan.found[(i, seed)] for seed in seeds]
            for i, candidate in enumerate(plan.optimizer.candidates)}
    chosen, at_edge = _choose(plan.optimizer, runs, "train_loss")
    chosen_on_valid, valid_at_edge = _choose(plan.optimizer, runs, "valid_loss")
    return UnitResult(plan.task, plan.config, plan.optimizer, runs, tuple(seeds), chosen, at_edge,
                      chosen_on_valid, valid_at_edge, time.perf_counter() - start if trained else 0.0, reused,
                      plan.parallel)


def _sweep_record(suite: Suite, optimizers: Sequence[EvalOptimizer], seeds: Sequence[int],
                  scope: MetaTrainingScope) -> dict[str, Any]:
    return {"suite": suite.name, "tasks": [task.to_dict() for task in suite.tasks],
            "optimizers": {optimizer.name: optimizer.identity for optimizer in optimizers}, "seeds": list(seeds),
            "scope": dataclasses.asdict(scope)}


def _check_workdir(workdir: Path, record: dict[str, Any], force: bool, sharded: bool = False) -> None:
    """A workdir holds one sweep: the same one is resumed, another is refused unless forced. Forcing
    removes the other sweep's tables, plots, TensorBoard files and shard records; its runs stay (each is
    stored under a hash of its inputs, so it can only ever be reused by the run it is). A non-empty
    directory that holds no sweep is never written into, except, for a shard, one that holds only
    what the other shards of a sweep are starting to write."""
    path = workdir / SWEEP_FILE
    foreign = [] if path.is_file() or not workdir.exists() else [
        entry.name for entry in workdir.iterdir() if not (sharded and _written_by_a_shard(entry.name))]
    # Looked at again after the listing: another shard may have renamed its sweep file into place
    # between the two looks, and that file is judged as a sweep like any other.
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != record and not force:
            differing = [key for key in record if previous.get(key) != record[key]]
            raise SweepError(f"{workdir} holds another sweep (it differs in: {', '.join(differing)}); "
                             "use another workdir, or force=True (--force) to replace it")
        if previous != record:
            for derived in report.DERIVED_FILES:
                (workdir / derived).unlink(missing_ok=True)
            for derived in (report.plots.PLOTS_DIR, report.TENSORBOARD_DIR, SHARDS_DIR):
                shutil.rmtree(workdir / derived, ignore_errors=True)
    elif foreign:
        raise SweepError(f"{workdir} is not empty and holds no sweep; refusing to write into it "
                         "(use an empty or new directory)")
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True))


def _written_by_a_shard(name: str) -> bool:
    return name in (RUNS_DIR, SHARDS_DIR) or name.startswith(f".{SWEEP_FILE}.")  # the latter: write_atomically's


def run_suite(optimizers: Sequence[str | os.PathLike | EvalOptimizer],
              suite: str | os.PathLike | Suite | Sequence[tasks.Task], workdir: str | os.PathLike, *,
              steps: int | None = None, seeds: int = 3,
              baselines: Sequence[str] = DEFAULT_BASELINES, cache_dir: str | os.PathLike | None = None,
              stride: int | None = None, parallel: int | None = None, force: bool = False,
              shard: tuple[int, int] | str | None = None, first_seed: int = 0,
              log: Callable[[str], None] = print) -> SweepResult:
    """Runs a suite and writes its outputs to workdir; returns the results.

    optimizers: learned optimizers (shipped names or checkpoint directories), baselines by name ("adam",
        "sgdm@0.1") and/or any Optax optimizer as `evaluate.optimizer(name, make, rates=...)`; the tuned
        `baselines` are added after them.
    suite: a name from evaluate.SUITES, a JSON suite file, a Suite, or a list of tasks.Task objects (the
        user's own models, trained as they are; see evaluate.task_objects).
    steps: the meta-training horizon the suite is built around (default: what the first learned
        optimizer was meta-trained with, else 1000); for a file suite or task objects, every task's budget
        (default: a file's own, else that horizon).
    seeds: runs per optimizer and task (seeds first_seed..first_seed+seeds-1), vmapped together.
    first_seed: the first of them (another range keeps the seeds a sweep chose a setting on apart from
        the ones it is evaluated on).
    cache_dir: where baseline runs are cached across sweeps (default ~/.cache/lopt/baselines, or
        $LOPT_BASELINE_CACHE).
    shard: (I, N) or "I/N": run only the tasks whose index in the suite is I modulo N, into a workdir
        that the N shards share (on several machines: a shared file system). The last shard to finish
        builds the summary, tables and plots from every shard's runs, as the unsharded sweep would;
        the others return with `complete` False. The command without a shard builds them too.
    """
    if not (isinstance(seeds, int) and seeds > 0):
        raise SweepError(f"seeds={seeds!r}: must be a positive integer")
    if not (isinstance(first_seed, int) and not isinstance(first_seed, bool) and first_seed >= 0):
        raise SweepError(f"first_seed={first_seed!r}: must be a non-negative integer")
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
    suite, scope, scope_source = _suite_and_scope(chosen, suite, steps)
    log(f"suite {suite.name}: {len(suite.tasks)} tasks x {len(chosen)} optimizers, built around family "
        f"{scope.family} and horizon {scope.horizon} ({scope_source})")
    for optimizer in chosen:
        if optimizer.user:
            log(f"{optimizer.name}: runs cached under {optimizer.identity!r}; a changed make with the same name, "
                f"rates and version reuses them (clear: evaluate.clear_cache or --clear-cache {optimizer.name})")
    workdir = Path(workdir)
    if shard is not None:  # checked whichever form it came in
        shard = parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard)))
    seed_list = list(range(first_seed, first_seed + seeds))
    own_store = RunStore(workdir / RUNS_DIR)
    baseline_store = CacheAndWorkdir(RunStore(cache_dir or DEFAULT_CACHE), own_store, mirror=shard is not None)
    plans = [_plan(task, optimizer, seed_list, baseline_store if optimizer.baseline else own_store, stride,
                   parallel) for task in suite.tasks for optimizer in chosen]
    mine = plans if shard is None else [plan for index, plan in enumerate(plans)
                                        if (index // len(chosen)) % shard[1] == shard[0]]
    # Every task is built and its memory checked before anything is written or compiled, so bad input
    # fails in seconds and leaves the workdir as it was.
    for plan in mine:
        if plan.missing:
            _fit(plan)
    record = _sweep_record(suite, chosen, seed_list, scope)
    _check_workdir(workdir, record, force, sharded=shard is not None)
    if shard is not None:
        log(f"shard {shard[0]}/{shard[1]}: {len(mine)} of the {len(plans)} optimizer-task pairs")

    start = time.perf_counter()
    done = _run_plans(mine, seed_list, log)
    if shard is not None:
        if not _all_shards_done(workdir, record, shard, len(mine)):
            log(f"shard {shard[0]}/{shard[1]} done; the last shard to finish writes the summary "
                f"(or the same command without --shard, once every shard is done)")
            return SweepResult(suite, done, Table([], dict), Table([], dict), workdir, [], complete=False)
        done = _read_back(plans, mine, done, seed_list)
    rows, overall = summarize(done, suite)
    elapsed = time.perf_counter() - start
    files = report.write_all(workdir, suite, done, rows, overall, elapsed, scope, scope_source)
    log(f"{suite.name}: {len(done)} optimizer-task pairs in {elapsed:.0f} s; summary in {workdir / report.SUMMARY_MD}")
    return SweepResult(suite, done, rows, overall, workdir, files)


def _run_plans(plans: list[_Plan], seeds: list[int], log: Callable[[str], None]) -> list[UnitResult]:
    units = []
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(plans), unit="pair", disable=not interactive, dynamic_ncols=True)
    for plan in plans:
        bar.set_postfix_str(f"{plan.task.label} / {plan.optimizer.name}")
        unit = _execute(plan, seeds)
        units.append(unit)
        bar.update()
        if not interactive:
            log(f"[{len(units)}/{len(plans)}] {plan.task.label} / {plan.optimizer.name}: "
                f"{len(plan.optimizer.candidates)} x {len(seeds)} runs, {unit.reused} reused, {unit.seconds:.1f} s, "
                f"final train loss {metrics.final_loss(unit.curve()):.4g} ({unit.chosen})")
    bar.close()
    return units


def _all_shards_done(workdir: Path, record: dict[str, Any], shard: tuple[int, int], pairs: int) -> bool:
    """Records this shard as finished; True when every shard of this sweep has finished."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    (workdir / SHARDS_DIR).mkdir(exist_ok=True)
    index, count = shard
    write_atomically(workdir / SHARDS_DIR / f"{index}-of-{count}.json", json.dumps({"sweep": digest, "pairs": pairs}))
    for other in range(count):
        try:
            if json.loads((workdir / SHARDS_DIR / f"{other}-of-{count}.json").read_text())["sweep"] != digest:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def _read_back(plans: list[_Plan], mine: list[_Plan], done: list[UnitResult], seeds: list[int]) -> list[UnitResult]:
    """Every pair of the sweep, in the unsharded order: this shard's as run, the others' from the runs
    the other shards stored."""
    ran = {id(plan): unit for plan, unit in zip(mine, done)}
    units = []
    for plan in plans:
        if id(plan) not in ran:
            plan.look_up()
            if plan.missing:
                raise SweepError(f"every shard has finished, but {len(plan.missing)} runs of {plan.task.label} / "
                                 f"{plan.optimizer.name} are neither in the workdir nor in the cache: did a shard "
                                 "run with other settings, or with less memory (smaller groups of runs)?")
        units.append(ran.get(id(plan)) or _execute(plan, seeds))
    return units


def _suite_and_scope(optimizers: Sequence[EvalOptimizer], suite: str | os.PathLike | Suite | Sequence[tasks.Task],
                     steps: int | None) -> tuple[Suite, MetaTrainingScope, str]:
    """The suite to run, the scope it is built around, and where that came from. `steps` replaces the
    horizon of a named suite, so the log and the summary name the horizon the suite was built with."""
    scope, scope_source = _scope(optimizers)
    if isinstance(suite, Suite):
        return suite, scope, scope_source
    if isinstance(suite, (tasks.Task, list, tuple)):
        if not task_objects.is_task_list(suite):
            raise SuiteError("a suite given as a list must hold tasks.Task objects, at least one")
        return task_objects.from_tasks(suite, steps or scope.horizon), scope, scope_source
    if steps is not None and str(suite) in SUITES:
        scope, scope_source = dataclasses.replace(scope, horizon=steps), f"{scope_source}; horizon from steps={steps}"
    return build(suite, scope, steps), scope, scope_source


def _scope(optimizers: Sequence[EvalOptimizer]) -> tuple[MetaTrainingScope, str]:
    """What the suites are built around, and where that came from (said in the log and the summary)."""
    for optimizer in optimizers:
        if not optimizer.baseline and MetaTrainingScope.recorded_in(optimizer.spec):
            return MetaTrainingScope.from_spec(optimizer.spec), f"from {optimizer.name}'s meta-training config"
    return MetaTrainingScope(), "the default meta-training preset's: no optimizer records its own"
