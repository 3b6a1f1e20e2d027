"""Every optimizer of a sweep at one setting for every task, scored as an untuned learned optimizer is:
what per-task tuning is worth, read off the runs a sweep already holds (nothing is trained).

    python -m benchmarks.one_setting SWEEP_DIR [--out FILE]

A tuned baseline is reported per task at its best learning rate for each metric; a learned optimizer
runs every task at its one theta. Here each baseline's every rate is scored against tuned Adam the way
the learned optimizer is: wins on final validation and training loss, on the lowest validation loss over
the run (the early-stopping view, against tuned Adam's own), and the ratio per task. Then, per task, the
settings that beat tuned Adam on final training and final validation loss at once: where there are none,
no optimizer run at one setting can win both metrics there.

Only runs on the evaluation seeds are scored, the seeds tuned Adam is reported on. A sweep run with
`--tuning same-seeds` holds every rate there; under the default ruleset a grid's other rates ran on the
tuning seeds only, so the tables hold the learned optimizers and any rate chosen on every task.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from evaluate.optimizers import REFERENCE_BASELINE
from evaluate.summary import LOSS_FIELDS, format_cell


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.one_setting", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a finished `python -m evaluate` workdir")
    parser.add_argument("--out", type=Path, default=None, help="write the tables here too (markdown)")
    args = parser.parse_args(argv)
    for name in ("runs.json", "summary.json"):
        if not (args.sweep / name).is_file():
            parser.error(f"{args.sweep} holds no {name}: give the workdir of a finished sweep")
    return args


def _floats(values) -> np.ndarray:
    return np.asarray([float(value) for value in values], np.float64)  # "inf" / "nan" strings included


def settings(sweep: Path) -> tuple[list[str], dict[tuple[str, str], dict[str, dict[str, float]]], dict[str, dict]]:
    """(tasks, {(optimizer, candidate): {task: {metric: mean over seeds}}}, tuned Adam's row per task)."""
    curves = defaultdict(list)
    for record in json.loads((sweep / "runs.json").read_text()):
        if record.get("split", "evaluation") != "evaluation":  # a tuning seed's run: not comparable
            continue
        curves[(record["optimizer"], record["candidate"], record["task"])].append(
            (_floats(record["train_loss"]), _floats(record["valid_loss"])))
    rows = json.loads((sweep / "summary.json").read_text())["rows"]
    task_names = list(dict.fromkeys(row["task"] for row in rows))
    adam = {row["task"]: row for row in rows if row["optimizer"] == REFERENCE_BASELINE}
    if len(adam) != len(task_names):
        raise SystemExit(f"{sweep}: the sweep has no tuned {REFERENCE_BASELINE} on every task to compare with")
    scored: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for (optimizer, candidate, task), runs in curves.items():
        train = np.mean([run[0] for run in runs], axis=0)
        valid = np.mean([run[1] for run in runs], axis=0)
        scored[(optimizer, candidate)][task] = {"train": float(train[-1]), "valid": float(valid[-1]),
                                                "best_valid": float(np.nanmin(valid))}
    # A setting scored as one for every task must have run on every task's evaluation seeds.
    return task_names, {key: by_task for key, by_task in scored.items() if len(by_task) == len(task_names)}, adam


def _ratio(mine: float, reference: float) -> float:
    return mine / reference if math.isfinite(mine) else math.inf


def setting_table(task_names, scored, adam) -> str:
    header = (["setting", "valid wins vs tuned Adam", "train wins vs tuned Adam", "best valid wins vs tuned Adam"]
              + [f"{task}: valid / tuned Adam's" for task in task_names])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (optimizer, candidate), by_task in scored.items():
        cells = [f"{optimizer} {candidate}"]
        for metric in ("valid", "train", "best_valid"):
            ratios = [_ratio(by_task[task][metric], adam[task][LOSS_FIELDS[metric]]) for task in task_names]
            cells.append(f"{sum(r < 1 for r in ratios)}/{len(ratios)} ({format_cell(statistics.median(ratios), 3)})")
        cells += [format_cell(_ratio(by_task[task]["valid"], adam[task]["final_valid_loss"]), 3) for task in task_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def both_metrics_table(task_names, scored, adam) -> str:
    lines = ["| task | tuned Adam: best final train / best final valid | settings below both | the best of them (train / valid) |",
             "| --- | --- | --- | --- |"]
    for task in task_names:
        train, valid = adam[task]["final_train_loss"], adam[task]["final_valid_loss"]
        both = sorted(((by_task[task]["valid"], by_task[task]["train"], f"{optimizer} {candidate}")
                       for (optimizer, candidate), by_task in scored.items()
                       if by_task[task]["train"] < train and by_task[task]["valid"] < valid))
        best = f"{both[0][2]} ({format_cell(both[0][1])} / {format_cell(both[0][0])})" if both else "none"
        lines.append(f"| {task} | {format_cell(train)} / {format_cell(valid)} | {len(both)} of {len(scored)} | {best} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = arguments(argv)
    task_names, scored, adam = settings(args.sweep)
    text = (f"# One setting for every task: {args.sweep}\n\nEach setting against tuned {REFERENCE_BASELINE} "
            "(at its best rate per task and metric); ratios below 1 are better.\n\n"
            + setting_table(task_names, scored, adam) + "\n\nSettings below tuned Adam on final training and "
            "final validation loss of a task at once:\n\n" + both_metrics_table(task_names, scored, adam) + "\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
