"""A sweep's outputs: every run as CSV and JSON, the summary as CSV, JSON and a markdown table, PNG
plots and TensorBoard scalars. All of them are derived from the runs and rewritten whole at the end of
a sweep (each file atomically), so a resumed sweep leaves the same files as an uninterrupted one."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

from checkpoints.files import ScalarWriter, write_atomically
from evaluate import plots
from evaluate.plots import slug
from evaluate.runner import EVAL_BATCHES

RUNS_JSON, RUNS_CSV = "runs.json", "runs.csv"
SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD = "summary.json", "summary.csv", "summary.md"
TENSORBOARD_DIR = "tensorboard"
DERIVED_FILES = (RUNS_JSON, RUNS_CSV, SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD)
RUN_COLUMNS = ("task", "optimizer", "candidate", "seed", "chosen", "step", "train_loss", "valid_loss",
               "valid_accuracy")


def _csv(rows: list[dict[str, Any]], columns) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _json_safe(value):
    """JSON has no inf or NaN: they are written as the strings "inf", "-inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def run_records(units) -> list[dict[str, Any]]:
    return [{"task": unit.task.label, "config": unit.config.to_dict(), "optimizer": unit.optimizer.name,
             "candidate": label, "seed": seed, "chosen": label == unit.chosen, **curves.to_dict()}
            for unit in units for label, runs in unit.runs.items() for seed, curves in enumerate(runs)]


def _number(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown(suite, rows, overall, elapsed: float, scope, scope_source: str) -> str:
    has_speedup = any(row["speedup"] is not None for row in rows)
    compute = sum(row["seconds"] for row in rows)
    lines = [f"# Suite `{suite.name}`: {suite.description}", "",
             f"{len(suite.tasks)} tasks, {len(overall)} optimizers. Training every run took {compute:.0f} s "
             f"(compilation included); this invocation took {elapsed:.0f} s (runs already in the baseline "
             "cache or left by an interrupted invocation are read back, not retrained). The suite is built around "
             f"meta-training family `{scope.family}` and horizon {scope.horizon} ({scope_source}).", "",
             "Final and best losses are the mean over seeds of the training loss (the mean minibatch loss of a "
             f"record interval); validation loss and accuracy are measured on {EVAL_BATCHES} batches of the "
             "task's batch size. Tuned baselines report their best learning rate on final training loss; "
             "speedup is tuned Adam's steps to reach a loss both reach over this optimizer's.", ""]
    header = ["task", "optimizer", "final train loss", "best train loss", "valid loss", "valid accuracy"]
    header += ["speedup vs tuned Adam"] if has_speedup else []
    header += ["diverged", "setting"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        setting = row["chosen"] + (" (grid edge)" if row["chosen_at_grid_edge"] else "")
        cells = [row["task"], row["optimizer"], _number(row["final_train_loss"]), _number(row["best_train_loss"]),
                 _number(row["final_valid_loss"]), _number(row["final_valid_accuracy"], 3)]
        cells += [_number(row["speedup"], 3)] if has_speedup else []
        cells += [_number(row["diverged"]), setting]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| optimizer | win rate vs tuned Adam | average rank | median speedup | diverged tasks |",
              "| --- | --- | --- | --- | --- |"]
    for entry in overall:
        win = "" if entry["win_rate"] is None else f"{entry['win_rate']:.0%}"
        lines.append(f"| {entry['optimizer']} | {win} | {entry['mean_rank']:.2f} | "
                     f"{_number(entry['median_speedup'], 3)} | {entry['diverged']}/{entry['tasks']} |")
    return "\n".join(lines) + "\n"


def write_tensorboard(directory: Path, units) -> None:
    """One run directory per optimizer; tags are "<task>/train_loss" etc., the chosen setting's
    mean over seeds at every record step."""
    shutil.rmtree(directory, ignore_errors=True)  # derived: rewritten whole rather than appended to
    writers = {}
    for unit in units:
        name = unit.optimizer.name
        if name not in writers:  # one writer (one event file, one thread) per optimizer
            writers[name] = ScalarWriter(directory / slug(name))
        writer = writers[name]
        curves = {metric: unit.curve(metric) for metric in ("train_loss", "valid_loss")}
        if unit.has_accuracy:
            curves["valid_accuracy"] = unit.curve("valid_accuracy")
        for index, step in enumerate(unit.steps):
            writer.write(step, {f"{unit.task.label}/{metric}": values[index] for metric, values in curves.items()})
    for writer in writers.values():
        writer.close()


def write_all(workdir: Path, suite, units, rows, overall, elapsed: float, scope, scope_source: str) -> list[Path]:
    records = run_records(units)
    flat = [{**{key: record[key] for key in ("task", "optimizer", "candidate", "seed", "chosen")}, "step": step,
             "train_loss": record["train_loss"][i], "valid_loss": record["valid_loss"][i],
             "valid_accuracy": "" if record["valid_accuracy"] is None else record["valid_accuracy"][i]}
            for record in records for i, step in enumerate(record["steps"])]
    files = {RUNS_JSON: json.dumps(_json_safe(records)), RUNS_CSV: _csv(flat, RUN_COLUMNS),
             SUMMARY_CSV: _csv(rows, rows[0].keys()),
             SUMMARY_JSON: json.dumps(_json_safe({"suite": suite.name, "description": suite.description,
                                                  "scope": dataclasses.asdict(scope), "scope_source": scope_source,
                                                  "seconds": elapsed, "rows": rows, "overall": overall}), indent=2),
             SUMMARY_MD: markdown(suite, rows, overall, elapsed, scope, scope_source)}
    for name, text in files.items():
        write_atomically(workdir / name, text)
    write_tensorboard(workdir / TENSORBOARD_DIR, units)
    return [workdir / name for name in files] + plots.write_all(workdir / plots.PLOTS_DIR, units, rows)
