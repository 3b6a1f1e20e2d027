"""A sweep's summary: per (task, optimizer) rows and per optimizer rows over the suite, on final training
loss and on final validation loss, against Adam and against the oracle baseline.

A tuned baseline is reported at the setting chosen on the metric in question (evaluate.protocol says on
which seeds): on training loss for the training figures, on validation loss for the validation figures
(as a practitioner tunes). The oracle baseline of a task is, per metric, the baseline with the lowest
final value there (for a baseline's own row, the best of the others): a best of all families per task,
after the fact, which no practitioner could pick in advance; evaluate.counts weighs each family on its
own. A ratio is this optimizer's final loss over the reference's (below 1 is better); a win here is a
strictly lower final loss. Beside them, the early-stopping view: the lowest validation loss over the run,
each baseline at the setting chosen on it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Sequence

from evaluate import metrics
from evaluate.optimizers import REFERENCE_BASELINE

METRICS = ("train", "valid")  # final training loss, final validation loss
# The early-stopping view beside them: the lowest validation loss at any record point, every baseline at
# the learning rate that minimizes it (a practitioner who keeps the best checkpoint). It tells a rule that
# finds good solutions and then overfits them from one that never finds them.
COMPARED_METRICS = METRICS + ("best_valid",)
LOSS_FIELDS = {"train": "final_train_loss", "valid": "final_valid_loss", "best_valid": "best_valid_loss"}


class Table(list):
    """Rows of dicts (every field, as summary.json holds them) that print as the markdown table of
    summary.md, so that `print(result.summary)` in a notebook shows what the CLI writes. `view` maps a
    row to its cells, header -> text."""

    def __init__(self, rows: Sequence[dict[str, Any]], view: Callable[[dict[str, Any]], dict[str, str]],
                 empty: str = "(no rows)"):
        super().__init__(rows)
        self.view = view
        self.empty = empty  # what prints in place of a table without rows

    def __str__(self) -> str:
        if not self:
            return self.empty
        cells = [self.view(row) for row in self]
        headers = list(cells[0]) if cells else []
        lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
        lines += ["| " + " | ".join(row[header] for header in headers) + " |" for row in cells]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return str(self)


def format_cell(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def ratio(loss: float, reference: float) -> float:
    """loss / reference; 1 where both are infinite (both diverged) or both zero."""
    if (math.isinf(loss) and math.isinf(reference)) or (loss == 0 and reference == 0):
        return 1.0
    if reference == 0:
        return math.inf
    return loss / reference


def _row(task, unit, finals: dict[str, dict[str, float]], ranks: dict[str, dict[str, float]]) -> dict[str, Any]:
    name = unit.optimizer.name
    train = unit.curve("train_loss")
    return {"task": task.label, "optimizer": name, "baseline": unit.optimizer.baseline, "steps": task.num_steps,
            "axis": task.axis, "x": task.x, "parameterization": getattr(unit.config, "parameterization", None),
            "chosen": unit.chosen, "chosen_at_grid_edge": unit.chosen_at_grid_edge,
            "chosen_on_valid": unit.chosen_on_valid, "chosen_on_valid_at_grid_edge": unit.chosen_on_valid_at_grid_edge,
            "chosen_on_best_valid": unit.chosen_on_best_valid, "tuning_seeds": list(unit.tuning_seeds),
            "final_train_loss": finals["train"][name], "best_train_loss": metrics.best_loss(train),
            "final_valid_loss": finals["valid"][name], "best_valid_loss": finals["best_valid"][name],
            "final_train_losses": unit.finals("train_loss"), "final_valid_losses": unit.finals("valid_loss"),
            "final_valid_accuracy": float(unit.curve("valid_accuracy")[-1]) if unit.has_accuracy else None,
            "diverged": metrics.diverged(train), "rank": ranks["train"][name], "valid_rank": ranks["valid"][name],
            "runs": unit.run_count, "seconds": unit.compute_seconds, "runs_per_group": unit.runs_per_group}


def _against(row: dict[str, Any], finals: dict[str, dict[str, float]], tuned_baselines: list[str]) -> None:
    """Adds the ratios to Adam and to the oracle (the best other baseline of the task), on both metrics;
    the oracle's fields keep their first name, "strongest"."""
    name = row["optimizer"]
    for metric in COMPARED_METRICS:
        mine = finals[metric][name]
        reference = finals[metric].get(REFERENCE_BASELINE)
        row[f"{metric}_vs_adam"] = None if reference is None or name == REFERENCE_BASELINE else ratio(mine, reference)
        others = [baseline for baseline in tuned_baselines if baseline != name]
        strongest = min(others, key=lambda baseline: finals[metric][baseline], default=None)
        row[f"strongest_{metric}_baseline"] = strongest
        row[f"{metric}_vs_strongest"] = None if strongest is None else ratio(mine, finals[metric][strongest])


def summarize(units, suite, rules=None) -> tuple[Table, Table]:
    """Per (task, optimizer) rows, and per optimizer rows over the suite. The oracle is the best of the
    tuned baselines, or of every baseline under the self-tuning ruleset (`rules`, evaluate.protocol),
    where none is tuned."""
    by_task: dict[str, dict[str, Any]] = {}
    for unit in units:
        by_task.setdefault(unit.task.label, {})[unit.optimizer.name] = unit
    names = list(dict.fromkeys(unit.optimizer.name for unit in units))
    untuned = rules is not None and rules.tuning == "none"
    tuned_baselines = [unit.optimizer.name for unit in units if unit.optimizer.baseline
                       and (unit.optimizer.tuned or untuned)]
    tuned_baselines = list(dict.fromkeys(tuned_baselines))
    rows = []
    for task in suite.tasks:
        group = by_task[task.label]
        finals = {metric: {name: metrics.final_loss(group[name].curve(f"{metric}_loss")) for name in names}
                  for metric in METRICS}
        finals["best_valid"] = {name: group[name].best_valid_loss() for name in names}
        ranks = {metric: dict(zip(names, metrics.ranks([finals[metric][name] for name in names])))
                 for metric in METRICS}
        reference = group.get(REFERENCE_BASELINE)
        for name in names:
            row = _row(task, group[name], finals, ranks)
            _against(row, finals, tuned_baselines)
            row["speedup"] = None
            if reference is not None and name != REFERENCE_BASELINE:
                row["speedup"] = metrics.speedup(group[name].steps, group[name].curve(), reference.curve())
            rows.append(row)
    overall = [_overall(name, [row for row in rows if row["optimizer"] == name]) for name in names]
    adam = f"{rules.reference if rules is not None else 'tuned'} Adam"
    return (Table(rows, lambda row: task_view(row, adam)), Table(overall, lambda entry: overall_view(entry, adam)))


def _setting(row: dict[str, Any]) -> str:
    """The learning rate chosen on each metric ("theta" for a learned optimizer), edges flagged."""
    train = row["chosen"] + (" (edge)" if row["chosen_at_grid_edge"] else "")
    valid = row["chosen_on_valid"] + (" (edge)" if row["chosen_on_valid_at_grid_edge"] else "")
    return train if train == valid else f"{train}; on valid {valid}"


def _versus(row: dict[str, Any], metric: str) -> str:
    value = row[f"{metric}_vs_strongest"]
    return "" if value is None else f"{format_cell(value, 3)} ({row[f'strongest_{metric}_baseline']})"


def task_view(row: dict[str, Any], adam: str = "tuned Adam") -> dict[str, str]:
    return {"task": row["task"], "optimizer": row["optimizer"],
            "train loss": format_cell(row["final_train_loss"]), "valid loss": format_cell(row["final_valid_loss"]),
            "valid accuracy": format_cell(row["final_valid_accuracy"], 3),
            f"train / {adam}": format_cell(row["train_vs_adam"], 3),
            f"valid / {adam}": format_cell(row["valid_vs_adam"], 3),
            "train / oracle baseline": _versus(row, "train"), "valid / oracle baseline": _versus(row, "valid"),
            f"speedup vs {adam}": format_cell(row["speedup"], 3), "diverged": format_cell(row["diverged"]),
            "setting": _setting(row), "runs": str(row["runs"])}


def _wins(entry: dict[str, Any], metric: str, reference: str) -> str:
    wins = entry[f"{metric}_wins_vs_{reference}"]
    if wins is None:
        return ""
    return f"{wins}/{entry['tasks']} ({format_cell(entry[f'median_{metric}_ratio_vs_{reference}'], 3)})"


def overall_view(entry: dict[str, Any], adam: str = "tuned Adam") -> dict[str, str]:
    return {"optimizer": entry["optimizer"],
            f"train: wins vs {adam} (median ratio)": _wins(entry, "train", "adam"),
            f"valid: wins vs {adam} (median ratio)": _wins(entry, "valid", "adam"),
            "train: wins vs oracle baseline": _wins(entry, "train", "strongest"),
            "valid: wins vs oracle baseline": _wins(entry, "valid", "strongest"),
            f"best valid (early stopping): wins vs {adam} / oracle":
                f"{_wins(entry, 'best_valid', 'adam') or '-'} / {_wins(entry, 'best_valid', 'strongest')}",
            f"median speedup vs {adam}": format_cell(entry["median_speedup"], 3),
            "mean rank (train / valid)": f"{entry['mean_rank']:.2f} / {entry['mean_valid_rank']:.2f}",
            "diverged": f"{entry['diverged']}/{entry['tasks']}"}


def _overall(name: str, mine: list[dict[str, Any]]) -> dict[str, Any]:
    """Win rates and median ratios on both metrics against both references, mean ranks, median speedup."""
    entry = {"optimizer": name, "tasks": len(mine)}
    for metric in COMPARED_METRICS:
        for reference in ("adam", "strongest"):
            ratios = [row[f"{metric}_vs_{reference}"] for row in mine if row[f"{metric}_vs_{reference}"] is not None]
            entry[f"{metric}_wins_vs_{reference}"] = sum(value < 1 for value in ratios) if ratios else None
            entry[f"{metric}_win_rate_vs_{reference}"] = (sum(value < 1 for value in ratios) / len(ratios)
                                                          if ratios else None)
            entry[f"median_{metric}_ratio_vs_{reference}"] = float(statistics.median(ratios)) if ratios else None
    speedups = [row["speedup"] for row in mine if row["speedup"] is not None]
    entry.update({"mean_rank": sum(row["rank"] for row in mine) / len(mine),
                  "mean_valid_rank": sum(row["valid_rank"] for row in mine) / len(mine),
                  "median_speedup": float(statistics.median(speedups)) if speedups else None,
                  "diverged": sum(row["diverged"] for row in mine)})
    return entry
