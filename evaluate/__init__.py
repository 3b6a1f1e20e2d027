"""Generalization sweeps: learned optimizers against tuned hand-designed baselines (Adam, AdamW with and
without a warmup-cosine schedule, Muon, muAdam, SGD with momentum) on held-out tasks, on training and on
validation loss. A baseline's learning rate is chosen on tuning seeds and reported on evaluation seeds it
was not chosen on (tuning="external"); tuning="none" runs every baseline at its starting point, and
tuning="same_seeds" chooses on the seeds it reports (evaluate.protocol).

    result = evaluate.run_suite(["mulo"], "ood", "runs/ood", seeds=3)
    print(result.summary)  # the per-task table of summary.md; result.overall: one row per optimizer
    print(result.counts)  # wins / ties / losses against tuned Adam, AdamW-cosine and Muon, each alone

or `python -m evaluate --optimizer NAME_OR_PATH --suite NAME --workdir DIR`. Outputs in the workdir:
runs.csv / runs.json (every run), summary.csv / summary.json / summary.md, plots/*.png, tensorboard/.

The user's own optimizer and tasks compete as ours do (on the command line: --optimizer and --suite
take `module.path:attribute`):

    lion = evaluate.optimizer("lion", lambda lr, T: optax.lion(optax.cosine_decay_schedule(lr, T)),
                              rates=(1e-4, 3e-4, 1e-3))
    evaluate.run_suite([lion], [my_task, tasks.get_task("mlp_digits_8x8")], "runs/mine", baselines=["adam"])
"""

from evaluate.counts import FAMILIES
from tasks.memory import TooLargeError
from evaluate.metrics import best_loss, diverged, final_loss, ranks, speedup, steps_to_reach, win_rate
from evaluate.optimizers import (BASELINES, STARTING_RATES, EvalOptimizer, OptimizerError, baseline, learned, optimizer,
                                 resolve, starting_point)
from evaluate.protocol import TUNINGS, Protocol, TuningError
from evaluate.runner import Curves
from evaluate.runner import run as run_optimizer
from evaluate.store import clear_cache, prune_cache
from evaluate.suites import SUITES, MetaTrainingScope, Suite, SuiteError, SuiteTask
from evaluate.suites import build as build_suite
from evaluate.summary import Table
from evaluate.sweep import DEFAULT_BASELINES, SELF_TUNING_BASELINES, SweepError, SweepResult, run_suite
from evaluate.task_objects import from_tasks as suite_from_tasks
