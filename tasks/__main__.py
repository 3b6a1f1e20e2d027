"""Command line: list the registered tasks, or train one with a hand-designed optimizer.

    python -m tasks list
    python -m tasks train mlp_mnist_14x14 --optimizer adam --learning-rate 1e-3 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import optax

import tasks
from tasks.train import OPTIMIZERS, train


def _parse_change(text: str) -> tuple[str, object]:
    field, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value  # a bare string such as parameterization=sp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="registered tasks and task families")
    trainer = commands.add_parser("train", help="train a registered task with an Optax optimizer")
    trainer.add_argument("task", help="a registered task name (see `list`)")
    trainer.add_argument("--set", dest="changes", type=_parse_change, action="append", default=[],
                         metavar="FIELD=VALUE", help="change a field of the task config, e.g. width=512")
    trainer.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    trainer.add_argument("--learning-rate", type=float, default=1e-3)
    trainer.add_argument("--steps", type=int, default=2000)
    trainer.add_argument("--log-every", type=int, default=200,
                         help="log the training loss every this many steps, and at the last")
    trainer.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, config in tasks.TASKS.items():
            print(f"{name:26s} {config}")
        for name, family in tasks.FAMILIES.items():
            print(f"family {name:19s} {family}")
        return 0
    for flag, value in (("--steps", args.steps), ("--log-every", args.log_every)):
        if value < 1:
            parser.exit(2, f"error: {flag} {value} must be a positive integer\n")
    try:
        task = tasks.get_task(args.task, **dict(args.changes))
        # Loaded now, so that a missing or unreadable data file, or a dataset's package that is not
        # installed, is reported here, in one line.
        task.data
    except (KeyError, ValueError, OSError, ModuleNotFoundError) as error:
        parser.exit(2, f"error: {error.args[0] if isinstance(error, KeyError) else error}\n")
    optimizer: optax.GradientTransformation = OPTIMIZERS[args.optimizer](args.learning_rate)
    print(f"training {task.config} with {args.optimizer} (learning rate {args.learning_rate})")
    result = train(task, optimizer, args.steps, seed=args.seed, log_every=args.log_every)
    accuracy = "" if result.valid_accuracy is None else f", validation accuracy {result.valid_accuracy:.3f}"
    # No throughput where every chunk compiled its program (a run of one or two logging intervals).
    rate = "" if math.isnan(result.steps_per_second) else \
        f" ({result.steps_per_second:.0f} steps/s after compiling)"
    print(f"after {result.steps} steps: training loss {result.train_loss:.4f}, validation loss "
          f"{result.valid_loss:.4f}{accuracy}{rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
