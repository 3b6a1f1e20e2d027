"""python -m evaluate --optimizer NAME_OR_PATH --suite NAME --workdir DIR [--steps N] [--seeds K] [--first-seed S]
                   [--tuning external|same-seeds|none] [--tuning-seeds K] [--tuning-first-seed S] [--shard I/N]
                   [--clear-cache NAME] [--prune-cache DAYS]
python -m evaluate --prune-cache DAYS | --clear-cache NAME [--workdir DIR]   (the cache's upkeep alone)

Runs learned optimizers and tuned baselines on a suite of held-out tasks and writes tables, plots and
TensorBoard scalars to the workdir. Running the same command again resumes an interrupted sweep. With
--shard, N such commands (on one machine or several sharing the workdir) split the suite's tasks.
--optimizer and --suite also take the user's own objects as `module.path:attribute`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from checkpoints.files import enable_compilation_cache
from checkpoints.imports import ImportPathError, looks_like_import_path, resolve_import_path
from tasks.memory import TooLargeError
from evaluate.optimizers import EvalOptimizer, OptimizerError
from evaluate.protocol import (DEFAULT_TUNING, DEFAULT_TUNING_FIRST_SEED, DEFAULT_TUNING_SEEDS, TUNINGS, TuningError,
                               protocol)
from evaluate.store import clear_cache, prune_cache
from evaluate.suites import SUITES, Suite, SuiteError
from evaluate.sweep import DEFAULT_BASELINES, SELF_TUNING_BASELINES, SweepError, run_suite
from evaluate.task_objects import is_task_list
from lopt.baselines import BASELINE_DESCRIPTIONS
from tasks import ConfigError

SUITE_OBJECT = "an evaluate.Suite, a tasks.Task or a list of them"
OPTIMIZER_OBJECT = "an evaluate.optimizer(...) or a list of them"


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days, 0 or more")
    return days


def _parser() -> argparse.ArgumentParser:
    suites = "\n".join(f"  {name:18s} {description}" for name, (description, _) in SUITES.items())
    baselines = "\n".join(f"  {name:13s} {description}" for name, description in BASELINE_DESCRIPTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate learned optimizers against tuned baselines on a suite of held-out tasks.",
        epilog=f"suites (relative to what the first learned optimizer was meta-trained on):\n{suites}\n"
               "  FILE.json          a custom suite: {\"name\": ..., \"tasks\": [{\"task\": NAME, \"set\": "
               "{FIELD: VALUE}, \"steps\": N}]}\n\n"
               "baselines (each tuned per task over its grid: at its best rate on final training loss for the "
               "training figures, on final validation loss for the validation figures; NAME@LR fixes the rate):\n"
               f"{baselines}\n\n"
               "--tuning external (the default) chooses each grid's rate on --tuning-seeds seeds from "
               "--tuning-first-seed and reports it on the evaluation seeds; same-seeds chooses on the evaluation "
               f"seeds themselves; none tunes nothing: {', '.join(SELF_TUNING_BASELINES)} at the settings their "
               "users start from.\n\n"
               "The summary gives, per optimizer, the wins and median loss ratio on training and on validation "
               "loss against Adam and against the oracle baseline (the best baseline of each task), the same "
               "on the lowest validation loss over the run (early stopping, baselines tuned on it), and each "
               "learned optimizer's wins / ties / losses against Adam, AdamW-cosine and Muon alone. The workdir "
               "receives runs.csv/json, summary.csv/json/md, plots/*.png and tensorboard/. Every run is cached "
               "in ~/.cache/lopt/baselines ($LOPT_BASELINE_CACHE, or --cache): a baseline's under its settings, a "
               "learned optimizer's under its theta and its rule's code, an evaluate.optimizer(...)'s under its "
               "name, rates and version (shown in the log and summary.md).")
    parser.add_argument("--optimizer", action="append", default=[], metavar="NAME_OR_PATH",
                        help="a shipped learned optimizer or a checkpoint directory (LABEL=PATH names it; "
                             "@0.1 scales its whole step, @tuned tunes that multiplier per task), a baseline "
                             "(adam, or adam@0.001 at one rate), or module.path:attribute naming "
                             f"{OPTIMIZER_OBJECT} (or a function returning one) (repeatable)")
    parser.add_argument("--suite",
                        help=f"a suite name, a JSON suite file, or module.path:attribute naming {SUITE_OBJECT} "
                             "(or a function returning one; task objects run --steps steps, default the first "
                             "learned optimizer's meta-training horizon, else 1000; an evaluate.Suite keeps its own)")
    parser.add_argument("--clear-cache", action="append", default=[], metavar="NAME",
                        help="first remove the stored runs of the optimizer or task object NAME (an "
                             "evaluate.optimizer's or a baseline's name, a task object's name) from the cache and "
                             "--workdir, so they are trained anew: they are stored under their names, rates and "
                             "versions, not their code (repeatable; without --suite, only this is done)")
    parser.add_argument("--prune-cache", type=_days, metavar="DAYS",
                        help="first remove from the cache the runs no sweep has written or read in DAYS days (0: "
                             "all), and those an older version of evaluate wrote (without --suite, only this is done)")
    parser.add_argument("--workdir", help="output directory")
    parser.add_argument("--steps", type=int, help="for a named suite, the meta-training horizon it is built around "
                        "(default: the learned optimizer's, else 1000); for a file suite or task objects, every "
                        "task's budget (default: the file's, 1000 where it gives none; for task objects, that "
                        "horizon); an evaluate.Suite keeps its own")
    parser.add_argument("--seeds", type=int, default=3,
                        help="evaluation seeds per optimizer, setting and task (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first evaluation seed, the seeds every figure reports (default: %(default)s)")
    parser.add_argument("--tuning", default=DEFAULT_TUNING.replace("_", "-"), metavar="RULESET",
                        help="how baselines are set: external (rate chosen on tuning seeds, reported on the "
                             "evaluation seeds), same-seeds (chosen on the evaluation seeds), or none (every "
                             "baseline at its starting point) (default: %(default)s)")
    parser.add_argument("--tuning-seeds", type=int, default=DEFAULT_TUNING_SEEDS,
                        help="seeds a rate is chosen on, under --tuning external (default: %(default)s)")
    parser.add_argument("--tuning-first-seed", type=int, default=DEFAULT_TUNING_FIRST_SEED,
                        help="the first of them, apart from the evaluation seeds (default: %(default)s)")
    parser.add_argument("--baselines", default=None,
                        help=f"comma-separated baselines to add, or 'none' (default: {','.join(DEFAULT_BASELINES)}; "
                             f"with --tuning none, {','.join(SELF_TUNING_BASELINES)})")
    parser.add_argument("--cache", help="the run cache's directory")
    parser.add_argument("--force", action="store_true", help="replace another sweep held in --workdir")
    parser.add_argument("--shard", metavar="I/N",
                        help="run only the tasks of shard I of N (0-based; task index modulo N) into a --workdir the "
                             "shards share; the last shard to finish writes the summary from all of them")
    return parser


def _is_suite(value: Any) -> bool:
    return isinstance(value, Suite) or is_task_list(value)


def _is_optimizer_list(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return bool(items) and all(isinstance(item, EvalOptimizer) for item in items)


def _suite(text: str) -> Any:
    """A suite name or file as given, or the object an import path names."""
    if text in SUITES or text.endswith(".json") or not looks_like_import_path(text):
        return text
    return resolve_import_path(text, SUITE_OBJECT, _is_suite)


def _optimizers(texts: list[str]) -> list[Any]:
    """Names and paths as given (LABEL=PATH among them), and the objects import paths name, a list of them
    spread out."""
    chosen = []
    for text in texts:
        if "=" in text.partition(":")[0] or not looks_like_import_path(text):
            chosen.append(text)
        else:
            found = resolve_import_path(text, OPTIMIZER_OBJECT, _is_optimizer_list)
            chosen.extend(found if isinstance(found, (list, tuple)) else [found])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    maintenance_only = args.suite is None and (args.clear_cache or args.prune_cache is not None)
    missing = [flag for flag, value in (("--suite", args.suite), ("--workdir", args.workdir)) if value is None]
    if missing and not maintenance_only:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    enable_compilation_cache()
    baselines = (None if args.baselines is None else [] if args.baselines == "none"
                 else [name.strip() for name in args.baselines.split(",") if name.strip()])
    try:
        tuning = args.tuning.replace("-", "_")
        if tuning not in TUNINGS:
            raise TuningError(f"--tuning {args.tuning}: one of external, same-seeds, none")
        protocol(tuning, args.seeds, args.first_seed, args.tuning_seeds, args.tuning_first_seed)  # before any clearing
        optimizers, suite = _optimizers(args.optimizer), None if args.suite is None else _suite(args.suite)
        if args.prune_cache is not None:
            print(f"--prune-cache {args.prune_cache:g}: removed {prune_cache(args.prune_cache, args.cache)} stored runs",
                  flush=True)
        for name in args.clear_cache:
            removed = (clear_cache(args.workdir, optimizer=name, cache_dir=args.cache)
                       + clear_cache(args.workdir, task=name, cache_dir=args.cache))
            print(f"--clear-cache {name}: removed {removed} stored runs", flush=True)
        if maintenance_only:
            return 0
        result = run_suite(optimizers, suite, args.workdir, steps=args.steps, seeds=args.seeds,
                           baselines=baselines, tuning=tuning, tuning_seeds=args.tuning_seeds,
                           tuning_first_seed=args.tuning_first_seed, cache_dir=args.cache, force=args.force,
                           shard=args.shard, first_seed=args.first_seed, log=lambda line: print(line, flush=True))
        if result.complete:  # one row per optimizer; the per-task tables are in summary.md
            print(f"\n{result.overall}")
    # ConfigError: a user's task (tasks.from_functions ...) built at import that cannot work, named in one line.
    except (ConfigError, ImportPathError, OptimizerError, SuiteError, SweepError, TooLargeError, TuningError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the same command resumes the sweep", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
