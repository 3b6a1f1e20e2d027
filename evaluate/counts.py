"""Each learned optimizer against each baseline family on its own (Adam, AdamW with warmup-cosine, Muon):
wins, ties and losses over a suite's tasks, on final training loss and on final validation loss, with the
spread over evaluation seeds deciding what counts as a difference (RULE, which summary.md quotes).

Counting a family alone, rather than the best of all baselines per task (the summary's oracle), keeps one
family's lucky draws on a task from standing in for every family's.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from evaluate.summary import Table, format_cell
from lopt.baselines import PRACTITIONER_BASELINES

FAMILIES = PRACTITIONER_BASELINES  # baseline name -> as tables say it
METRICS = {"train": "train_loss", "valid": "valid_loss"}
OUTCOMES = {"win": "wins", "tie": "ties", "loss": "losses"}  # outcome -> its count's name
RULE = ("on a task, each side is the mean over the evaluation seeds of its final loss, with its standard error "
        "(the per-seed values' sample standard deviation over the square root of their count; 0 with one seed). "
        "A difference of means at most the sum of the two standard errors is a tie; otherwise the lower mean "
        "wins. A side that diverged on any seed has an infinite mean: it loses to a finite one and ties another "
        "that diverged.")


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of per-seed values; the mean is inf where any value is not finite."""
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        return math.inf, 0.0
    error = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), error


def outcome(mine: tuple[float, float], theirs: tuple[float, float]) -> str:
    """"win", "tie" or "loss" of (mean, standard error) `mine` against `theirs`, as RULE says."""
    (mean, error), (other, other_error) = mine, theirs
    if not (math.isfinite(mean) and math.isfinite(other)):
        return "tie" if math.isfinite(mean) == math.isfinite(other) else ("win" if math.isfinite(mean) else "loss")
    if abs(mean - other) <= error + other_error:
        return "tie"
    return "win" if mean < other else "loss"


def _entry(name: str, family: str, against: str, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """One (optimizer, family) row: the counts per metric, and every task's comparison."""
    comparisons = []
    for mine, theirs in pairs:
        for metric, field in METRICS.items():
            ours, other = spread(mine.finals(field)), spread(theirs.finals(field))
            comparisons.append({"task": mine.task.label, "metric": metric, "mean": ours[0], "standard_error": ours[1],
                                "family_mean": other[0], "family_standard_error": other[1],
                                "outcome": outcome(ours, other)})
    entry = {"optimizer": name, "family": family, "against": against, "tasks": len(pairs)}
    for metric in METRICS:
        for result, counted in OUTCOMES.items():
            entry[f"{metric}_{counted}"] = sum(c["metric"] == metric and c["outcome"] == result for c in comparisons)
    entry["comparisons"] = comparisons
    return entry


def family_counts(units, suite, reference: str) -> Table:
    """One row per (learned or user optimizer, baseline family in the sweep); `reference` ("tuned" or
    "default") names how the families were set."""
    by_task: dict[str, dict[str, Any]] = {}
    for unit in units:
        by_task.setdefault(unit.task.label, {})[unit.optimizer.name] = unit
    names = list(dict.fromkeys(unit.optimizer.name for unit in units
                               if not unit.optimizer.baseline or unit.optimizer.user))
    present = [family for family in FAMILIES if all(family in group for group in by_task.values())]
    rows = [_entry(name, family, f"{reference} {FAMILIES[family]}",
                   [(by_task[task.label][name], by_task[task.label][family]) for task in suite.tasks])
            for name in names for family in present]
    return Table(rows, counts_view, empty=f"(nothing to count: no learned optimizer beside a baseline of "
                                          f"{', '.join(FAMILIES)} on every task)")


def _counts(entry: dict[str, Any], metric: str) -> str:
    return f"{entry[f'{metric}_wins']} / {entry[f'{metric}_ties']} / {entry[f'{metric}_losses']}"


def counts_view(entry: dict[str, Any]) -> dict[str, str]:
    return {"optimizer": entry["optimizer"], "against": entry["against"],
            "train: wins / ties / losses": _counts(entry, "train"),
            "valid: wins / ties / losses": _counts(entry, "valid"), "tasks": str(entry["tasks"])}


def _side(mean: float, error: float) -> str:
    return f"{format_cell(mean)} ± {format_cell(error, 2)}"


def comparisons_table(counts: Table) -> Table:
    """Every task's comparison behind the counts: both sides' mean ± standard error, and the outcome."""
    rows = []
    for entry in counts:
        for task in dict.fromkeys(c["task"] for c in entry["comparisons"]):
            cells = {"task": task, "optimizer": entry["optimizer"], "against": entry["against"]}
            for c in (c for c in entry["comparisons"] if c["task"] == task):
                cells[f"{c['metric']}: mine vs theirs"] = (f"{_side(c['mean'], c['standard_error'])} vs "
                                                          f"{_side(c['family_mean'], c['family_standard_error'])}: "
                                                          f"{c['outcome']}")
            rows.append(cells)
    return Table(rows, dict)
