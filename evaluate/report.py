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
from evaluate.counts import RULE, comparisons_table
from evaluate.plots import slug
from tasks.datasets import HELD_OUT_EXAMPLES, HELD_OUT_WINDOWS

RUNS_JSON, RUNS_CSV = "runs.json", "runs.csv"
SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD = "summary.json", "summary.csv", "summary.md"
TENSORBOARD_DIR = "tensorboard"
DERIVED_FILES = (RUNS_JSON, RUNS_CSV, SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD)
# A run's split: "evaluation" where it is reported (an evaluation seed), "tuning" where a grid ran only to
# choose a setting (a tuning seed, under the external ruleset).
RUN_COLUMNS = ("task", "optimizer", "candidate", "seed", "split", "chosen", "chosen_on_valid", "step", "train_loss",
               "valid_loss", "valid_accuracy")


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
    def stages(unit):
        yield "evaluation", unit.runs, unit.seeds
        if unit.tuning_runs is not None:
            yield "tuning", unit.tuning_runs, unit.tuning_seeds
    return [{"task": unit.task.label, "config": unit.config.to_dict(), "optimizer": unit.optimizer.name,
             "candidate": label, "seed": seed, "split": split, "chosen": label == unit.chosen,
             "chosen_on_valid": label == unit.chosen_on_valid, "runs_per_group": unit.runs_per_group,
             **curves.to_dict()}
            for unit in units for split, stage, seeds in stages(unit)
            for label, runs in stage.items() for seed, curves in zip(seeds, runs)]


def cache_keys(units) -> list[str]:
    """What the runs of each baseline and user optimizer are cached under across sweeps, one line each: a
    user's optimizer is cached under what it was given, not its code, so the key is shown (a learned
    optimizer's key holds hashes of its theta and code, nothing a user sets)."""
    optimizers = {unit.optimizer.name: unit.optimizer for unit in units if unit.optimizer.baseline}
    return [f"- `{name}`: `{optimizer.identity}`" + (f" (clear: `--clear-cache {name}`)" if optimizer.user else "")
            for name, optimizer in optimizers.items()]


def markdown(suite, tables, elapsed: float, basis: str, rules, keys: list[str] = ()) -> str:
    rows, overall, counts = tables
    compute = sum(row["seconds"] for row in rows)
    adam = f"{rules.reference} Adam"
    lines = [f"# Suite `{suite.name}`: {suite.description}", "",
             f"{len(suite.tasks)} tasks, {len(overall)} optimizers, {sum(row['runs'] for row in rows)} training runs. "
             f"Training every run took {compute:.0f} s (compilation included); this invocation took {elapsed:.0f} s "
             "(runs already in the cache, from this sweep's interrupted invocations or any other sweep, "
             f"are read back, not retrained). The suite: {basis}.", "", rules.describe(), "",
             "Training loss is the mean over the evaluation seeds of the mean minibatch loss of the last record "
             "interval. Validation loss and accuracy are measured on a fixed held-out set, the same for every "
             f"optimizer (the whole validation split up to {HELD_OUT_EXAMPLES:,} examples, else a fixed sample of "
             f"that many; {HELD_OUT_WINDOWS} evenly spaced windows of a text split). A tuned baseline is reported at "
             "the setting chosen on the metric of the column: training loss for training figures, validation loss "
             "for validation figures. Ratios are this optimizer's final loss over the reference's (below 1 is "
             "better). The oracle baseline is, per task and metric, whichever baseline did best there (another "
             "one, for a baseline's own row): a best of all families after the fact, which no practitioner could "
             "pick in advance, so wins against it understate an optimizer and the family counts below weigh each "
             "family alone. The early-stopping column compares the lowest validation loss at any record point, "
             f"each baseline at the setting chosen on it. Speedup is {adam}'s steps to reach a training loss both "
             "reach over this optimizer's. `runs` is how many training runs a row cost: a tuned setting's grid on "
             "the tuning seeds and the chosen settings on the evaluation seeds.", "",
             str(rows), "", str(overall), "", "## Against each baseline family", ""]
    if counts:
        lines += ["Each learned optimizer (and each optimizer of your own) against each family on its own, over the "
                  f"tasks: {RULE}", "", str(counts), "", "Every task's comparison (mean ± standard error "
                  "over the evaluation seeds):", "", str(comparisons_table(counts))]
    else:
        lines += ["No learned optimizer, or no Adam, AdamW-cosine or Muon baseline on every task, to count."]
    if keys:
        lines += ["", "Runs of these optimizers are cached across sweeps under these keys (a changed `make` of an "
                  "`evaluate.optimizer` with the same key reuses them; a learned optimizer's are cached under "
                  "hashes of its theta and of its rule's code):", "", *keys]
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


def write_all(workdir: Path, suite, units, tables, elapsed: float, scope, scope_source: str, basis: str,
              rules) -> list[Path]:
    """Every output; tables: the summary's (rows, overall, counts)."""
    rows, overall, family_counts = tables
    records = run_records(units)
    flat = [{**{key: record[key] for key in ("task", "optimizer", "candidate", "seed", "split", "chosen",
                                             "chosen_on_valid")},
             "step": step,
             "train_loss": record["train_loss"][i], "valid_loss": record["valid_loss"][i],
             "valid_accuracy": "" if record["valid_accuracy"] is None else record["valid_accuracy"][i]}
            for record in records for i, step in enumerate(record["steps"])]
    files = {RUNS_JSON: json.dumps(_json_safe(records)), RUNS_CSV: _csv(flat, RUN_COLUMNS),
             SUMMARY_CSV: _csv(rows, rows[0].keys()),
             SUMMARY_JSON: json.dumps(_json_safe({"suite": suite.name, "description": suite.description,
                                                  "scope": dataclasses.asdict(scope), "scope_source": scope_source, "basis": basis,
                                                  "protocol": rules.to_dict(), "seconds": elapsed, "rows": rows,
                                                  "overall": overall, "counts": family_counts}), indent=2),
             SUMMARY_MD: markdown(suite, tables, elapsed, basis, rules, cache_keys(units))}
    for name, text in files.items():
        write_atomically(workdir / name, text)
    write_tensorboard(workdir / TENSORBOARD_DIR, units)
    return [workdir / name for name in files] + plots.write_all(workdir / plots.PLOTS_DIR, units, rows)
