"""What a sweep measures: final and best loss, divergence, the steps an optimizer takes to reach tuned
Adam's final loss and the speedup that implies (the measure of the VeLO paper), win rate and average
rank over a suite. Curves here are one loss per record step (the mean over seeds)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_curve(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean over seeds at every record step; inf wherever a seed is not finite (a diverged seed
    makes the optimizer's result diverged, not a NaN that sorts anywhere)."""
    values = np.asarray(curves, np.float64)
    mean = values.mean(axis=0)
    return np.where(np.all(np.isfinite(values), axis=0), mean, np.inf)


def final_loss(curve: Sequence[float]) -> float:
    return float(curve[-1])


def best_loss(curve: Sequence[float]) -> float:
    return float(np.min(curve))


def diverged(curve: Sequence[float]) -> bool:
    """The loss left the finite numbers, or ended above where it started."""
    curve = np.asarray(curve, np.float64)
    return bool(not np.all(np.isfinite(curve)) or curve[-1] > curve[0])


def steps_to_reach(steps: Sequence[int], curve: Sequence[float], target: float) -> float | None:
    """The first step at which the curve is at or below target, interpolated linearly between record
    points; None if it never gets there."""
    curve = np.asarray(curve, np.float64)
    below = np.flatnonzero(curve <= target)
    if below.size == 0:
        return None
    index = int(below[0])
    if index == 0:
        return float(steps[0])
    before, after = curve[index - 1], curve[index]
    fraction = 1.0 if not np.isfinite(before) else (before - target) / (before - after)
    return float(steps[index - 1] + fraction * (steps[index] - steps[index - 1]))


def speedup(steps: Sequence[int], curve: Sequence[float], reference: Sequence[float]) -> float:
    """How many times fewer steps than the reference the optimizer needs to reach a loss both reach:
    the reference's final loss when the optimizer gets there (the VeLO paper's measure), else the
    optimizer's own final loss (a slowdown, below 1). Steps are those of the first crossing, so a curve
    that dips below its final value and rises again is credited with the dip, the reference included:
    the reference against itself is exactly 1. 0 for an optimizer that ends non-finite, inf when only
    the reference does, 1 when neither gets below its start."""
    reference_final, final = final_loss(reference), final_loss(curve)
    if not math.isfinite(final):
        return 0.0 if math.isfinite(reference_final) else 1.0
    if not math.isfinite(reference_final):
        return math.inf
    target = max(reference_final, final)
    reference_steps, steps_needed = steps_to_reach(steps, reference, target), steps_to_reach(steps, curve, target)
    if steps_needed == 0:
        return 1.0 if reference_steps == 0 else math.inf
    return reference_steps / steps_needed


def ranks(losses: Sequence[float]) -> list[float]:
    """1 for the lowest loss; ties share the mean of their ranks; non-finite losses rank last."""
    values = [loss if math.isfinite(loss) else math.inf for loss in losses]
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    position = 0
    while position < len(order):
        tied = [i for i in order[position:] if values[i] == values[order[position]]]
        for i in tied:
            result[i] = position + (len(tied) + 1) / 2
        position += len(tied)
    return result


def win_rate(losses: Sequence[float], reference_losses: Sequence[float]) -> float:
    """The share of tasks on which the optimizer's final loss is strictly below the reference's."""
    wins = [a < b or (math.isfinite(a) and not math.isfinite(b)) for a, b in zip(losses, reference_losses)]
    return sum(wins) / len(wins)
