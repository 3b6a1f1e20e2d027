"""Does a text task's held-out sample rank optimizers as its whole validation split does?

    python -m benchmarks.text_valid_sample [--task lstm_shakespeare] [--optimizer orthogonal_mlp]
        [--schedule linear] [--baseline muon_linear@0.03] [--steps 1000] [--seeds 3] [--out FILE]

Evaluation's validation loss on a text task is the mean over tasks.datasets.arrays.HELD_OUT_WINDOWS evenly
spaced windows of the validation split, a few thousand characters. A gap of 1% between two optimizers on
it could be the sample's. This trains the learned optimizer and one baseline at a fixed
rate on the task, in standard parameterization, and scores each final model on that sample and on every
non-overlapping window of the split.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lopt
import tasks
from evaluate.optimizers import OptimizerError, baseline
from tasks.datasets import arrays
from tasks.train import train

from benchmarks.update_cost import write_report

CHUNK = 100  # steps a jitted scan, and the training loss's interval
SCORE_BATCH = 1024  # windows scored at once
TEXT_KINDS = ("language_model", "recurrent_lm")


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.text_valid_sample",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lstm_shakespeare", help="a registered text task")
    parser.add_argument("--optimizer", default=lopt.DEFAULT, help="a shipped learned optimizer or a checkpoint")
    parser.add_argument("--schedule", default=None, help="its learning rate's decay (default: its own)")
    parser.add_argument("--baseline", default="muon_linear@0.03", help="BASELINE@RATE")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the table here too (markdown)")
    args = parser.parse_args(argv)
    try:  # evaluate's own reading of BASELINE@RATE; a name alone would be a tuned grid
        args.baseline = baseline(args.baseline)
    except OptimizerError as error:
        parser.error(f"--baseline: {error}")
    if args.baseline.tuned:
        parser.error(f"--baseline {args.baseline.name!r}: give BASELINE@RATE, a fixed learning rate")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: must be at least 1")
    if args.task not in tasks.TASKS or tasks.TASKS[args.task].kind not in TEXT_KINDS:
        parser.error(f"--task {args.task!r}: give a registered text task "
                     f"({', '.join(n for n, c in tasks.TASKS.items() if c.kind in TEXT_KINDS)})")
    try:
        args.learned = lopt.load_optimizer(args.optimizer)
    except ValueError as error:  # not a shipped name nor a checkpoint
        parser.error(f"--optimizer {args.optimizer!r}: {error}")
    if args.schedule is not None:
        try:
            args.learned = lopt.load_optimizer(args.optimizer, schedule=args.schedule)
        except (TypeError, ValueError) as error:  # a schedule it does not know, or an optimizer without one
            parser.error(f"--schedule {args.schedule!r}: {error}")
        args.optimizer += f" ({args.schedule})"
    if args.steps <= 0 or args.steps % CHUNK:
        parser.error(f"--steps {args.steps}: must be a positive multiple of {CHUNK}")
    return args


def whole_split_scorer(task):
    """params -> mean loss over every non-overlapping window of the validation split, and their count.
    Scored in SCORE_BATCH windows at a time, the last batch padded by repeating windows and those left out
    of the mean, so it compiles once."""
    length = task.config.sequence_length + 1
    tokens = np.asarray(task.data["valid"]["tokens"])
    windows = tokens[:tokens.shape[0] // length * length].reshape(-1, length)
    count = windows.shape[0]
    padded = jnp.asarray(np.resize(windows, (-(-count // SCORE_BATCH) * SCORE_BATCH, length)))
    weights = jnp.asarray(np.arange(padded.shape[0]) < count, jnp.float32).reshape(-1, SCORE_BATCH)

    @jax.jit
    def batch_loss(params, batch):  # per window: the task's loss on a batch of one
        return jax.vmap(lambda window: task.loss_and_aux(params, {"tokens": window[None]},
                                                         jax.random.key(0))[0])(batch)

    def score(params):
        total = sum(float(jnp.sum(batch_loss(params, padded[i * SCORE_BATCH:(i + 1) * SCORE_BATCH]) * weights[i]))
                    for i in range(weights.shape[0]))
        return total / count

    return score, count


def main(argv=None):
    args = arguments(argv)
    task = tasks.get_task(args.task, parameterization="sp")
    roles = task.roles(jax.eval_shape(task.init, jax.random.key(0)))
    fixed = args.baseline
    learned, theta, _ = args.learned
    optimizers = {args.optimizer: learned.transform(theta, args.steps, roles),
                  fixed.name: fixed.make(fixed.candidates[0].hyper, args.steps, roles)}
    whole_split, count = whole_split_scorer(task)
    lines = [f"{args.task} (sp), {args.steps} steps, seeds 0-{args.seeds - 1}: final training loss (last "
             f"{CHUNK} steps), validation loss on evaluation's {arrays.HELD_OUT_WINDOWS} windows and on the "
             "whole split", "", "| optimizer | seed | train | valid, sample | valid, whole split |",
             "| --- | --- | --- | --- | --- |"]
    means = {}
    for label, optimizer in optimizers.items():
        scores = []
        for seed in range(args.seeds):
            result = train(task, optimizer, args.steps, seed=seed, log_every=CHUNK, log=lambda line: None)
            scores.append((result.train_loss, result.valid_loss, whole_split(result.params)))
            lines.append(f"| {label} | {seed} | {scores[-1][0]:.4f} | {scores[-1][1]:.4f} | {scores[-1][2]:.4f} |")
            print(lines[-1], flush=True)
        means[label] = [statistics.mean(column) for column in zip(*scores)]
    for label, (train_loss, sampled, whole) in means.items():
        lines.append(f"| {label} | mean | {train_loss:.4f} | {sampled:.4f} | {whole:.4f} |")
    lines += ["", f"The whole split: {count} windows of {task.config.sequence_length + 1} tokens."]
    if args.out:
        write_report(args.out, lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
