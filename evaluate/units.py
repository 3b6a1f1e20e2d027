"""One optimizer on one task of a sweep (a unit): its runs planned (store keys, grouping, memory), trained
where the stores lack them, and its setting chosen as the sweep's ruleset says (evaluate.protocol).

Under the external ruleset a tuned optimizer's unit has two stages: its grid on the tuning seeds, then the
settings chosen there on the evaluation seeds, each setting in a group of its own. A run's key names its
group, so the evaluation runs of a rate are the same whichever rate another metric chose, and the same as
that baseline's at that one rate ("adam@0.001"): they share cache entries.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax

import tasks
from tasks import memory
from evaluate import metrics, runner
from evaluate.optimizers import EvalOptimizer
from evaluate.protocol import Protocol
from evaluate.store import CacheAndWorkdir, RunStore, run_key
from evaluate.suites import SuiteError, SuiteTask

Runs = dict[str, list[runner.Curves]]  # candidate label -> one Curves per seed
# What a setting is chosen on: final training loss, final validation loss, and the lowest validation loss
# at any record point (the early-stopping view).
CHOICES = ("train_loss", "valid_loss", "best_valid")


@dataclasses.dataclass
class UnitResult:
    """One optimizer on one task of the suite: the runs it is reported on, the choice, and what that cost."""

    task: SuiteTask
    config: tasks.TaskConfig  # the task as this optimizer trained it (its parameterization)
    optimizer: EvalOptimizer
    runs: Runs  # the reported candidates on the evaluation seeds (every candidate, unless chosen apart)
    seeds: tuple[int, ...]  # the evaluation seed of each entry of every runs list
    chosen: str  # the candidate with the lowest final training loss (mean over the seeds it is chosen on)
    chosen_at_grid_edge: bool  # a tuned optimizer whose best setting is its grid's first or last
    chosen_on_valid: str  # the candidate with the lowest final validation loss, as a practitioner tunes
    chosen_on_valid_at_grid_edge: bool
    seconds: float  # wall time of the runs done now (0 when all came from the cache or the workdir)
    reused: int  # runs read back instead of trained
    runs_per_group: int  # the most runs vmapped together (runner.program; part of every run's key)
    chosen_on_best_valid: str = ""  # the candidate with the lowest validation loss at any record point
    # Every candidate on the tuning seeds, where the choice was made apart from the evaluation seeds (the
    # external ruleset); None where it was made on `runs` itself.
    tuning_runs: Runs | None = None
    tuning_seeds: tuple[int, ...] = ()

    @property
    def run_count(self) -> int:
        """The training runs this unit cost: its grid on the tuning seeds and its evaluation runs."""
        return sum(len(runs) for stage in self._stages() for runs in stage.values())

    @property
    def compute_seconds(self) -> float:
        """What all its runs cost when they were trained, now or before."""
        return sum(curves.seconds for stage in self._stages() for runs in stage.values() for curves in runs)

    def _stages(self) -> list[Runs]:
        return [self.runs] + ([self.tuning_runs] if self.tuning_runs is not None else [])

    def choice(self, metric: str) -> str:
        """The candidate a metric is reported at: training loss at the one chosen on training loss, the
        lowest validation loss over the run ("best_valid") at the one chosen on that, validation loss and
        accuracy at the one chosen on final validation loss."""
        return {"train_loss": self.chosen, "best_valid": self.chosen_on_best_valid}.get(metric, self.chosen_on_valid)

    def curve(self, metric: str = "train_loss", candidate: str | None = None):
        """The mean over seeds of a metric, at `candidate` or else at the choice for that metric."""
        label = candidate or self.choice(metric)
        return metrics.mean_curve([getattr(curves, metric) for curves in self.runs[label]])

    def finals(self, metric: str) -> list[float]:
        """The final value of a loss on each evaluation seed, at the choice for that metric."""
        return [float(getattr(curves, metric)[-1]) for curves in self.runs[self.choice(metric)]]

    def best_valid_loss(self) -> float:
        """The lowest validation loss at any record point (mean over seeds) at the candidate chosen on it:
        what keeping the best checkpoint gives, with the setting tuned on that too."""
        return metrics.best_loss(self.curve("valid_loss", self.chosen_on_best_valid))

    @property
    def steps(self) -> tuple[int, ...]:
        return self.runs[self.chosen][0].steps

    @property
    def has_accuracy(self) -> bool:
        return self.runs[self.chosen][0].valid_accuracy is not None


@dataclasses.dataclass
class Plan:
    """Runs of one optimizer on one task, before they run: jobs in a fixed order, how many run together,
    their store keys, and those already done."""

    task: SuiteTask
    config: tasks.TaskConfig
    optimizer: EvalOptimizer
    store: RunStore | CacheAndWorkdir
    stride: int
    jobs: list[tuple[int, int]]  # (candidate index, seed), candidate-major
    parallel: int  # runs vmapped together, unless the device's memory holds fewer
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

    def build(self, built: tasks.Task | None = None) -> None:
        """The task: `built` where another stage built it, the object itself where the suite was given one;
        a task that cannot be built is reported by its label."""
        if built is not None or self.task.task is not None:  # a task passed as an object: run as it is
            self.built = built or self.task.task
            return
        try:
            self.built = self.config.build()
        except (OSError, ValueError) as error:
            raise SuiteError(f"task {self.task.label!r} cannot be built: {error}") from None

    def fit(self, built: tasks.Task | None = None) -> None:
        """Builds the task and checks its memory, before anything is written or compiled: a device that
        cannot hold the planned group runs smaller groups, under keys that say so."""
        self.build(built)
        roles = self.built.roles(jax.eval_shape(self.built.init, jax.random.key(0)))
        one_run = self.optimizer.make(self.optimizer.candidates[0].hyper, self.task.num_steps, roles)
        fitting = memory.runs_that_fit(self.built, one_run, self.parallel, f"{self.task.label} with {self.optimizer.name}")
        if fitting != self.parallel:
            self.parallel = fitting
            self.look_up()

    def train(self) -> int:
        """Trains the groups with missing runs, each group stored as soon as it finishes; how many runs
        were trained."""
        trained = 0

        def store(job, curves):
            self.store.put(self.keys[job], curves)
            self.found[job] = curves

        for group in runner.groups(self.jobs, self.parallel):
            # Looked up again: another sweep sharing the cache may have stored the group since this one planned.
            for job in dict.fromkeys(group):
                if self.found[job] is None:
                    self.found[job] = self.store.get(self.keys[job])
            missing = sum(1 for job in dict.fromkeys(group) if self.found[job] is None)
            if missing:
                if self.built is None:  # found missing only now: another process removed it
                    self.build()
                runner.run_groups(self.built, self.optimizer, [group], self.task.num_steps, self.stride,
                                  on_result=store)
                trained += missing
        return trained

    def runs(self) -> Runs:
        indices = list(dict.fromkeys(index for index, _ in self.jobs))
        seeds = list(dict.fromkeys(seed for _, seed in self.jobs))
        return {self.optimizer.candidates[i].label: [self.found[(i, seed)] for seed in seeds] for i in indices}


def config_for(task: SuiteTask, optimizer: EvalOptimizer) -> tasks.TaskConfig:
    """The task in the optimizer's own parameterization, unless the suite fixes it."""
    if optimizer.parameterization and hasattr(task.config, "parameterization") and not task.keep_parameterization:
        return task.config.replace(parameterization=optimizer.parameterization)
    return task.config


def choose(optimizer: EvalOptimizer, runs: Runs, metric: str) -> tuple[str, bool]:
    """The candidate with the lowest mean over seeds of a metric (one of CHOICES), and whether a tuned
    optimizer's choice lies at its grid's edge."""
    field = "valid_loss" if metric == "best_valid" else metric

    def score(label):  # mean_curve makes a diverged seed inf, so diverged candidates sort last
        curve = metrics.mean_curve([getattr(curves, field) for curves in runs[label]])
        return metrics.best_loss(curve) if metric == "best_valid" else float(curve[-1])
    labels = [candidate.label for candidate in optimizer.candidates]
    chosen = min(labels, key=score)
    return chosen, optimizer.tuned and chosen in (labels[0], labels[-1])


class Unit:
    """One optimizer on one task under a ruleset: a grid stage on the tuning seeds where the choice is made
    apart from the evaluation, then the evaluation stage, planned once the choice is known."""

    def __init__(self, task: SuiteTask, optimizer: EvalOptimizer, protocol: Protocol, store, stride: int | None,
                 parallel: int | None):
        self.task, self.optimizer, self.protocol, self.store, self.parallel = task, optimizer, protocol, store, parallel
        self.config = config_for(task, optimizer)
        self.stride = stride or runner.default_stride(task.num_steps)
        runner.check_stride(task.num_steps, self.stride)
        every = range(len(optimizer.candidates))
        staged = protocol.tuning == "external" and optimizer.tuned
        self.grid = self._plan(every, protocol.tuning_seeds) if staged else None
        self.evaluation = None if staged else self._plan(every, protocol.seeds)
        self.choices: dict[str, tuple[str, bool]] = {}
        if self.grid is not None and not self.grid.missing:
            self._choose_and_plan_evaluation()

    def _plan(self, candidates: Sequence[int], seeds: Sequence[int], group: int | None = None) -> Plan:
        """The jobs, looked up as one group (or `parallel`, or `group`, at a time): the grouping a device
        with the memory for it uses, so a sweep whose runs are all stored never builds a task."""
        jobs = [(index, seed) for index in candidates for seed in seeds]
        wanted = min(self.parallel or len(jobs), group or len(jobs), len(jobs))
        plan = Plan(self.task, self.config, self.optimizer, self.store, self.stride, jobs, wanted)
        plan.look_up()
        return plan

    def _choose_and_plan_evaluation(self) -> None:
        runs = self.grid.runs()
        self.choices = {metric: choose(self.optimizer, runs, metric) for metric in CHOICES}
        labels = [candidate.label for candidate in self.optimizer.candidates]
        chosen = sorted({labels.index(label) for label, _ in self.choices.values()})
        # Each chosen setting in a group of its own seeds (see the module's docstring).
        self.evaluation = self._plan(chosen, self.protocol.seeds, group=len(self.protocol.seeds))

    @property
    def missing(self) -> int:
        """Runs known to be missing now (the evaluation of a grid still to run is not yet known)."""
        return sum(len(plan.missing) for plan in (self.grid, self.evaluation) if plan is not None)

    def fit(self) -> None:
        """Builds the task and checks its memory for whatever is missing, before anything is written."""
        built = None
        for plan in (self.grid, self.evaluation):
            if plan is not None and plan.missing:
                plan.fit(built)
                built = plan.built

    def look_up(self) -> None:
        """Looks every run up again (another shard may have stored them); plans the evaluation anew."""
        if self.grid is not None:
            self.grid.look_up()
            self.evaluation = None
            if not self.grid.missing:
                self._choose_and_plan_evaluation()
        else:
            self.evaluation.look_up()

    def execute(self) -> UnitResult:
        """Trains what the stores lack, stage by stage, and picks the candidate reported on each metric."""
        start = time.perf_counter()
        trained = 0
        if self.grid is not None:
            trained += self.grid.train()
            if self.evaluation is None:
                self._choose_and_plan_evaluation()
                if self.evaluation.missing:
                    self.evaluation.fit(self.grid.built)
        trained += self.evaluation.train()
        runs = self.evaluation.runs()
        if self.grid is None:
            self.choices = {metric: choose(self.optimizer, runs, metric) for metric in CHOICES}
        plans = [plan for plan in (self.grid, self.evaluation) if plan is not None]
        (chosen, at_edge), (on_valid, valid_at_edge), (on_best, _) = (self.choices[m] for m in CHOICES)
        return UnitResult(self.task, self.config, self.optimizer, runs, tuple(self.protocol.seeds), chosen, at_edge,
                          on_valid, valid_at_edge, time.perf_counter() - start if trained else 0.0,
                          sum(len(plan.keys) for plan in plans) - trained, max(plan.parallel for plan in plans),
                          chosen_on_best_valid=on_best, tuning_runs=self.grid.runs() if self.grid else None,
                          tuning_seeds=tuple(self.protocol.tuning_seeds) if self.grid else ())
