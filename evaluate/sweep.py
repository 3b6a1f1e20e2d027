"""A generalization sweep: every optimizer on every task of a suite, several seeds vmapped together,
baselines tuned per task on seeds apart from those reported (or not tuned at all: evaluate.protocol), then
metrics, tables and plots in the workdir.

    result = evaluate.run_suite(["mulo"], "ood", "runs/ood", seeds=3)
    print(result.summary)  # one row per (task, optimizer): both losses, ratios to the baselines, speedup
    print(result.counts)  # each learned optimizer's wins / ties / losses against each baseline family

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
from evaluate import metrics, report, task_objects
from evaluate.counts import family_counts
from evaluate.optimizers import STARTING_RATES, EvalOptimizer, OptimizerError, baseline, resolve, starting_point
from evaluate.protocol import (DEFAULT_TUNING, DEFAULT_TUNING_FIRST_SEED, DEFAULT_TUNING_SEEDS, Protocol,
                               TuningError, protocol)
from evaluate.store import DEFAULT_CACHE, RUNS_DIR, CacheAndWorkdir, RunStore
from evaluate.suites import SUITES, MetaTrainingScope, Suite, SuiteError, build
from evaluate.summary import Table, summarize
from evaluate.units import Unit, UnitResult

tqdm = require("tqdm", "the evaluation sweep's progress bar", "eval").tqdm

DEFAULT_BASELINES = ("adam", "adamw", "adamw_cosine", "adamw_linear", "muon", "muon_linear", "muadam", "sgdm")
SELF_TUNING_BASELINES = tuple(STARTING_RATES)  # the self-tuning ruleset's: each at its starting point
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
class SweepResult:
    suite: Suite
    units: list[UnitResult]
    summary: Table  # one row per (task, optimizer); prints as the markdown table of summary.md
    overall: Table  # one row per optimizer: win rates and median ratios on both metrics, speedup, rank
    workdir: Path
    files: list[Path]
    complete: bool = True  # False for a shard that left the summary to the last one
    # One row per (learned optimizer, baseline family): wins / ties / losses on both metrics (evaluate.counts).
    counts: Table = dataclasses.field(default_factory=lambda: Table([], dict))
    protocol: Protocol | None = None  # the ruleset, the evaluation seeds and the tuning seeds

    def __str__(self) -> str:
        return (self.workdir / report.SUMMARY_MD).read_text(encoding="utf-8")


def _sweep_record(suite: Suite, optimizers: Sequence[EvalOptimizer], rules: Protocol,
                  scope: MetaTrainingScope) -> dict[str, Any]:
    return {"suite": suite.name, "tasks": [task.to_dict() for task in suite.tasks],
            "optimizers": {optimizer.name: optimizer.identity for optimizer in optimizers},
            "seeds": list(rules.seeds), "tuning": rules.tuning, "tuning_seeds": list(rules.tuning_seeds),
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
              steps: int | None = None, seeds: int = 3, baselines: Sequence[str] | None = None,
              tuning: str = DEFAULT_TUNING, tuning_seeds: int = DEFAULT_TUNING_SEEDS,
              tuning_first_seed: int = DEFAULT_TUNING_FIRST_SEED, cache_dir: str | os.PathLike | None = None,
              stride: int | None = None, parallel: int | None = None, force: bool = False,
              shard: tuple[int, int] | str | None = None, first_seed: int = 0,
              log: Callable[[str], None] = print) -> SweepResult:
    """Runs a suite and writes its outputs to workdir; returns the results.

    optimizers: learned optimizers (shipped names or checkpoint directories), baselines by name ("adam",
        "sgdm@0.1") and/or any Optax optimizer as `evaluate.optimizer(name, make, rates=...)`; the
        `baselines` are added after them.
    suite: a name from evaluate.SUITES, a JSON suite file, a Suite, or a list of tasks.Task objects (the
        user's own models, trained as they are; see evaluate.task_objects).
    steps: for a named suite, the meta-training horizon it is built around (default: what the first
        learned optimizer was meta-trained with, else 1000); for a file suite or task objects, every task's
        budget (default: a file's own, 1000 where it gives none; for task objects, that horizon); a Suite
        keeps its own budgets.
    seeds: the evaluation seeds, first_seed..first_seed+seeds-1, that every figure reports: runs per
        optimizer, setting and task, vmapped together.
    baselines: the baselines added (default: DEFAULT_BASELINES, tuned; with tuning="none",
        SELF_TUNING_BASELINES at their starting points).
    tuning: the ruleset (evaluate.protocol): "external" (default) chooses a tuned optimizer's setting on
        `tuning_seeds` seeds from `tuning_first_seed` and reports it on the evaluation seeds;
        "same_seeds" chooses and reports on the evaluation seeds; "none" tunes nothing (every baseline at
        its starting point, evaluate.optimizers.starting_point).
    cache_dir: where runs are cached across sweeps (default ~/.cache/lopt/baselines, or
        $LOPT_BASELINE_CACHE): a baseline's under its settings, a learned optimizer's under its theta and
        its update rule's code (evaluate.optimizers.learned), a user optimizer's under what it was given.
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
    rules = protocol(tuning, seeds, first_seed, tuning_seeds, tuning_first_seed)
    chosen = _competitors(optimizers, baselines, rules)
    suite, scope, scope_source, basis = _suite_and_scope(chosen, suite, steps)
    log(f"suite {suite.name}: {len(suite.tasks)} tasks x {len(chosen)} optimizers, {basis}; {rules.label}")
    if rules.caveat:
        log(rules.caveat)
    for optimizer in chosen:
        if optimizer.user:
            log(f"{optimizer.name}: runs cached under {optimizer.identity!r}; a changed make with the same name, "
                f"rates and version reuses them (clear: evaluate.clear_cache or --clear-cache {optimizer.name})")
    workdir = Path(workdir)
    if shard is not None:  # checked whichever form it came in
        shard = parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard)))
    store = CacheAndWorkdir(RunStore(cache_dir or DEFAULT_CACHE), RunStore(workdir / RUNS_DIR),
                            mirror=shard is not None)
    units = [Unit(task, optimizer, rules, store, stride, parallel) for task in suite.tasks for optimizer in chosen]
    mine = units if shard is None else [unit for index, unit in enumerate(units)
                                        if (index // len(chosen)) % shard[1] == shard[0]]
    # Every task is built and its memory checked before anything is written or compiled, so bad input
    # fails in seconds and leaves the workdir as it was.
    for unit in mine:
        if unit.missing:
            unit.fit()
    record = _sweep_record(suite, chosen, rules, scope)
    _check_workdir(workdir, record, force, sharded=shard is not None)
    if shard is not None:
        log(f"shard {shard[0]}/{shard[1]}: {len(mine)} of the {len(units)} optimizer-task pairs")

    start = time.perf_counter()
    done = _run_units(mine, log)
    if shard is not None:
        if not _all_shards_done(workdir, record, shard, len(mine)):
            log(f"shard {shard[0]}/{shard[1]} done; the last shard to finish writes the summary "
                f"(or the same command without --shard, once every shard is done)")
            return SweepResult(suite, done, Table([], dict), Table([], dict), workdir, [], complete=False,
                               protocol=rules)
        done = _read_back(units, mine, done)
    rows, overall = summarize(done, suite, rules)
    counts = family_counts(done, suite, rules.reference)
    elapsed = time.perf_counter() - start
    files = report.write_all(workdir, suite, done, (rows, overall, counts), elapsed, scope, scope_source, basis, rules)
    log(f"{suite.name}: {len(done)} optimizer-task pairs in {elapsed:.0f} s; summary in {workdir / report.SUMMARY_MD}")
    return SweepResult(suite, done, rows, overall, workdir, files, counts=counts, protocol=rules)


def _competitors(optimizers: Sequence[str | os.PathLike | EvalOptimizer], baselines: Sequence[str] | None,
                 rules: Protocol) -> list[EvalOptimizer]:
    """The optimizers given, then the baselines; under the self-tuning ruleset a built-in baseline with a
    starting point runs there, and anything else that would be tuned is refused."""
    chosen = [item if isinstance(item, EvalOptimizer) else resolve(item) for item in optimizers]
    if baselines is None:
        baselines = SELF_TUNING_BASELINES if rules.tuning == "none" else DEFAULT_BASELINES
    chosen += [baseline(name) for name in baselines if name not in {o.name for o in chosen}]
    if not chosen:
        raise OptimizerError("nothing to evaluate: give an optimizer or keep the baselines")
    names = [optimizer.name for optimizer in chosen]
    if len(set(names)) != len(names):
        raise OptimizerError(f"optimizer names must be unique: {names}")
    if rules.tuning != "none":
        return chosen
    chosen = [starting_point(o.name) if o.tuned and o.baseline and not o.user and o.name in STARTING_RATES else o
              for o in chosen]
    for optimizer in chosen:
        if optimizer.tuned:
            raise TuningError(f"{optimizer.name} would be tuned over {len(optimizer.candidates)} settings, and the "
                              f"self-tuning ruleset (tuning='none') tunes nothing: give a baseline with a starting "
                              f"point ({', '.join(STARTING_RATES)}), one at a rate (NAME@RATE), or one setting")
    return chosen


def _run_units(units: list[Unit], log: Callable[[str], None]) -> list[UnitResult]:
    results = []
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(units), unit="pair", disable=not interactive, dynamic_ncols=True)
    for unit in units:
        bar.set_postfix_str(f"{unit.task.label} / {unit.optimizer.name}")
        result = unit.execute()
        results.append(result)
        bar.update()
        if not interactive:
            log(f"[{len(results)}/{len(units)}] {unit.task.label} / {unit.optimizer.name}: {result.run_count} runs, "
                f"{result.reused} reused, {result.seconds:.1f} s, final train loss "
                f"{metrics.final_loss(result.curve()):.4g} ({result.chosen})")
    bar.close()
    return results


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


def _read_back(units: list[Unit], mine: list[Unit], done: list[UnitResult]) -> list[UnitResult]:
    """Every pair of the sweep, in the unsharded order: this shard's as run, the others' from the runs
    the other shards stored."""
    ran = {id(unit): result for unit, result in zip(mine, done)}
    results = []
    for unit in units:
        if id(unit) not in ran:
            unit.look_up()
            if unit.missing or unit.evaluation is None:
                raise SweepError(f"every shard has finished, but runs of {unit.task.label} / {unit.optimizer.name} "
                                 "are neither in the workdir nor in the cache: did a shard run with other settings, "
                                 "or with less memory (smaller groups of runs)?")
        results.append(ran.get(id(unit)) or unit.execute())
    return results


def _suite_and_scope(optimizers: Sequence[EvalOptimizer], suite: str | os.PathLike | Suite | Sequence[tasks.Task],
                     steps: int | None) -> tuple[Suite, MetaTrainingScope, str, str]:
    """The suite to run, the scope it is built around, where that came from, and what the log and the
    summary say the suite is built on: a named suite on the scope's family and horizon (`steps` replaces
    the horizon), task objects on the horizon alone, a suite file or object on the budgets it gives."""
    scope, scope_source = _scope(optimizers)
    if isinstance(suite, Suite):
        ignored = f" (steps={steps} not applied: a Suite keeps its own budgets)" if steps else ""
        return suite, scope, scope_source, f"each task trained for the steps the suite gives{ignored}"
    if isinstance(suite, (tasks.Task, list, tuple)):
        if not task_objects.is_task_list(suite):
            raise SuiteError("a suite given as a list must hold tasks.Task objects, at least one")
        why = f"steps={steps}" if steps else f"the meta-training horizon, {scope_source}"
        return (task_objects.from_tasks(suite, steps or scope.horizon), scope, scope_source,
                f"each task trained for {steps or scope.horizon} steps ({why})")
    if str(suite) not in SUITES:  # a JSON suite file
        built = build(suite, scope, steps)
        budgets = {task.num_steps for task in built.tasks}
        return (built, scope, scope_source,
                f"each task trained for {steps} steps (steps={steps})" if steps else
                f"each task trained for {budgets.pop()} steps (its file's, 1000 where it gives none)" if len(budgets) == 1
                else "each task trained for the steps its file gives (1000 where it gives none)")
    if steps is not None:
        scope, scope_source = dataclasses.replace(scope, horizon=steps), f"{scope_source}; horizon from steps={steps}"
    return (build(suite, scope, steps), scope, scope_source,
            f"built around meta-training family {scope.family} and horizon {scope.horizon} ({scope_source})")


def _scope(optimizers: Sequence[EvalOptimizer]) -> tuple[MetaTrainingScope, str]:
    """What the suites are built around, and where that came from (said in the log and the summary)."""
    for optimizer in optimizers:
        if not optimizer.baseline and MetaTrainingScope.recorded_in(optimizer.spec):
            return MetaTrainingScope.from_spec(optimizer.spec), f"from {optimizer.name}'s meta-training config"
    return MetaTrainingScope(), "the default meta-training preset's: no optimizer records its own"
