"""PNG plots of a sweep: loss curves per task with every optimizer, final loss against the suite's
axis (width, depth, horizon) per optimizer on log axes, and the speedup over tuned Adam per task.

matplotlib's object interface (Figure, no pyplot): no global state, no display needed."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from checkpoints.optional import require
from evaluate.optimizers import REFERENCE_BASELINE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS_DIR = "plots"
_LOSS_FLOOR = 1e-8  # losses are drawn on log axes


def _figure(**options) -> Figure:
    """A new matplotlib Figure; matplotlib (`lopt[eval]`) is imported at the first plot."""
    return require("matplotlib.figure", "plotting a sweep", "eval").Figure(**options)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    os.replace(temporary, path)
    return path


def _finite(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), np.maximum(values, _LOSS_FLOOR), np.nan)


def loss_curves(unit_group, title: str, path: Path) -> Path:
    """Training and validation loss of every optimizer (mean over seeds, with the seeds' range shaded); a
    tuned baseline at its best setting on the panel's metric."""
    figure = _figure(figsize=(10, 4))
    figure.subplots_adjust(wspace=0.3)  # room for the right panel's axis label
    for axes, metric, name in zip(figure.subplots(1, 2), ("train_loss", "valid_loss"), ("training", "validation")):
        for unit in unit_group:
            chosen = unit.choice(metric)
            runs = np.asarray([getattr(curves, metric) for curves in unit.runs[chosen]], np.float64)
            steps = unit.steps
            label = unit.optimizer.name + ("" if chosen == "theta" else f" ({chosen})")
            line, = axes.plot(steps, _finite(unit.curve(metric)), label=label)
            if len(runs) > 1:
                axes.fill_between(steps, _finite(runs.min(axis=0)), _finite(runs.max(axis=0)),
                                  color=line.get_color(), alpha=0.15, linewidth=0)
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel(f"{name} loss")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def final_against_axis(rows, axis: str, kind: str, path: Path) -> Path:
    """Final training and validation loss against the swept value, one line per optimizer, log-log; a
    diverged run is drawn as a cross at the top of its panel."""
    figure = _figure(figsize=(11, 4.5))
    figure.subplots_adjust(wspace=0.3)
    for axes, field, name in zip(figure.subplots(1, 2), ("final_train_loss", "final_valid_loss"),
                                 ("training", "validation")):
        finite = [row[field] for row in rows if math.isfinite(row[field])]
        top = max(finite) * 2 if finite else 1.0
        for optimizer in dict.fromkeys(row["optimizer"] for row in rows):
            mine = sorted((row for row in rows if row["optimizer"] == optimizer), key=lambda row: row["x"])
            xs = [row["x"] for row in mine]
            losses = [row[field] for row in mine]
            line, = axes.plot(xs, _finite(losses), marker="o", label=optimizer)
            crossed = [x for x, loss in zip(xs, losses) if not math.isfinite(loss)]
            if crossed:
                axes.plot(crossed, [top] * len(crossed), "x", color=line.get_color(), markersize=10)
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel(axis)
        axes.set_ylabel(f"final {name} loss")
        axes.set_title(f"final {name} loss against {axis} ({kind})")
        axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def slug(text: str) -> str:
    """A file-name-safe form of a task or optimizer label."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def speedups(rows, path: Path) -> Path:
    """Speedup over tuned Adam per task and optimizer (log scale; 1 is parity)."""
    optimizers = [name for name in dict.fromkeys(row["optimizer"] for row in rows) if name != REFERENCE_BASELINE]
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    figure = _figure(figsize=(8, 0.5 + 0.35 * len(tasks) * max(len(optimizers), 1)))
    axes = figure.subplots()
    height = 0.8 / max(len(optimizers), 1)
    for k, optimizer in enumerate(optimizers):
        values = []
        for task in tasks:
            row = next(r for r in rows if r["task"] == task and r["optimizer"] == optimizer)
            value = row["speedup"] if row["speedup"] is not None else math.nan
            values.append(min(max(value, 1e-2), 1e2))  # 0 (never) and inf drawn at the plot's ends
        # Bars start at 1e-2 (the log axis has no 0), so their length reads as the speedup.
        axes.barh(np.arange(len(tasks)) + k * height, np.asarray(values) - 1e-2, height=height, label=optimizer,
                  left=1e-2)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_yticks(np.arange(len(tasks)) + 0.4 - height / 2, tasks, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("speedup over tuned Adam (its steps / these steps, to a loss both reach)")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
    return _save(figure, path)


def write_all(directory: Path, units, rows) -> list[Path]:
    files = []
    for label in dict.fromkeys(unit.task.label for unit in units):
        group = [unit for unit in units if unit.task.label == label]
        files.append(loss_curves(group, f"{label}, {group[0].task.num_steps} steps",
                                 directory / f"curves_{slug(label)}.png"))
    config_kinds = {unit.task.label: unit.task.config.kind for unit in units}
    for axis in sorted({row["axis"] for row in rows if row["axis"] and row["x"] is not None}):
        for kind in sorted({config_kinds[row["task"]] for row in rows if row["axis"] == axis}):
            chosen = [row for row in rows if row["axis"] == axis and config_kinds[row["task"]] == kind]
            if len({row["x"] for row in chosen}) > 1:
                files.append(final_against_axis(chosen, axis, kind, directory / f"final_vs_{axis}_{kind}.png"))
    if any(row["speedup"] is not None for row in rows):
        files.append(speedups(rows, directory / "speedup.png"))
    return files
