"""Cost of one update of the default learned optimizer against optax.adamw and optax.contrib.muon, on the
models a user trains.

    python -m benchmarks.update_cost [--models mlp_1.5m mlp_10m conv transformer] [--repeats 5]
                                     [--out benchmarks/results/update_cost.md]

Muon and the default are each timed as a user may build them: without roles, where both orthogonalize
every matrix, input and output layers included (optax.contrib.muon with no dimension numbers), and with
the task's muP roles, where both orthogonalize the hidden matrices only (Muon as evaluate tunes it) and
the rest take Adam or the default's learned direction. Every update is jitted with donated state and
warmed up; then the optimizers' updates on one model alternate, round after round, so that all meet
the same load on a shared machine. A ratio is the median over the rounds of the two updates' times in
the same round (compare ratios, not times, across runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import optax

import lopt
import tasks
from checkpoints.files import write_atomically
from lopt.baselines import BASELINES

# name: (registered task, its changes): image MLPs of 784 inputs and three hidden layers, a conv net, and a
# transformer language model, all in standard parameterization.
MODELS: dict[str, tuple[str, dict]] = {
    "mlp_1.5m": ("mlp_mnist_28x28", {"width": 700, "depth": 3}),
    "mlp_10m": ("mlp_mnist_28x28", {"width": 2048, "depth": 3}),
    "conv": ("conv_mnist_14x14", {"width": 128, "depth": 3}),
    "transformer": ("transformer_shakespeare", {"width": 256, "depth": 4}),
}
MUON, DEFAULT, MULO = "optax.contrib.muon", f"lopt.load({lopt.DEFAULT!r})", "lopt.load('mulo')"
NUM_STEPS = 1000  # the run length the schedules are built for: the cost does not depend on it
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01


def optimizers(roles) -> dict[tuple[str, str], optax.GradientTransformation]:
    """{(optimizer, roles given): transform}: AdamW, Muon and the default with the model's muP roles and
    without any, and the shipped muP optimizer with the roles it needs."""
    no_roles_muon = optax.contrib.muon(LEARNING_RATE, consistent_rms=0.2, weight_decay=WEIGHT_DECAY,
                                       adam_weight_decay=WEIGHT_DECAY)
    return {("optax.adamw", "-"): optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
            (MUON, "muP"): BASELINES["muon"][0](LEARNING_RATE, NUM_STEPS, roles),
            (MUON, "none"): no_roles_muon,
            (DEFAULT, "muP"): lopt.load(lopt.DEFAULT, num_steps=NUM_STEPS, roles=roles),
            (DEFAULT, "none"): lopt.load(lopt.DEFAULT, num_steps=NUM_STEPS),
            (MULO, "muP"): lopt.load("mulo", num_steps=NUM_STEPS, roles=roles)}


def model(name: str):
    """(params, roles) of one of MODELS."""
    task_name, changes = MODELS[name]
    task = tasks.get_task(task_name, parameterization="sp", **changes)
    params = task.init(jax.random.key(0))
    return params, task.roles(params)


def interleaved_times(transforms: dict, params, repeats: int) -> tuple[dict, dict]:
    """({name: seconds of each round's update}, {name: optimizer state bytes}): the updates of all
    transforms alternate, `repeats` rounds, after each one's warm-up."""
    timed = {name: timed_update(transform, params) for name, transform in transforms.items()}
    seconds = {name: [] for name in transforms}
    for _ in range(repeats):
        for name, (update_once, _) in timed.items():
            seconds[name].append(update_once())
    return seconds, {name: state_bytes for name, (_, state_bytes) in timed.items()}


def paired_ratio(seconds: list[float], reference: list[float]) -> float:
    """The median over rounds of one update's time over the reference's in the same round."""
    return statistics.median(a / b for a, b in zip(seconds, reference))


def timed_update(transform: optax.GradientTransformation, params) -> tuple[Callable[[], float], int]:
    """(a function that runs one more jitted update and returns its seconds, optimizer state bytes), after
    compilation and two warm-up updates. Donating the state, as a training loop would."""
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape) * 1e-2, params)
    state = transform.init(params)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    update = jax.jit(lambda grads, state, params: transform.update(grads, state, params, loss=jnp.float32(1.0)),
                     donate_argnums=1)
    for _ in range(2):
        updates, state = update(grads, state, params)
    jax.block_until_ready(updates)

    def update_once() -> float:
        nonlocal state
        start = time.perf_counter()
        updates, state = update(grads, state, params)
        jax.block_until_ready((updates, state))
        return time.perf_counter() - start

    return update_once, state_bytes


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/update_cost.md")
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.update_cost", "--models", *args.models, "--repeats", str(args.repeats)])
    lines = [f"# Update cost of the default against AdamW and Muon ({machine()})", "",
             f"`{command}`", "",
             f"{args.repeats} rounds of one jitted update per optimizer; ratios are medians over rounds of "
             "time ratios within a round. Roles \"none\": Muon orthogonalizes every 2-D tensor, the default "
             "every tensor of 2 or more axes (conv kernels too, which Muon gives to Adam); \"muP\": both "
             "the hidden matrices only. The last column of a \"none\" row compares a user who passes no roles "
             "with Muon as tuned.", "",
             "| model | parameters | optimizer | roles | median ms | x optax.adamw | x muon (same roles) | "
             "x muon (muP roles) | state bytes / param |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.models:
        params, roles = model(name)
        count = sum(x.size for x in jax.tree.leaves(params))
        seconds, state_bytes = interleaved_times(optimizers(roles), params, args.repeats)
        for (optimizer, given), times in seconds.items():
            same_roles = seconds.get((MUON, given))
            lines.append(f"| {name} | {count / 1e6:.2f}M | {optimizer} | {given} | {statistics.median(times) * 1e3:.1f} | "
                         f"{paired_ratio(times, seconds[('optax.adamw', '-')]):.1f} | "
                         f"{f'{paired_ratio(times, same_roles):.2f}' if same_roles else ''} | "
                         f"{paired_ratio(times, seconds[(MUON, 'muP')]):.2f} | "
                         f"{state_bytes[(optimizer, given)] / count:.1f} |")
            print(lines[-1], flush=True)
    return write_report(args.out, lines)


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, {jax.device_count()} device, "
            f"jax {jax.__version__}")


def write_report(path: str, lines: list[str]) -> str:
    report = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, report)  # a run stopped while writing leaves the previous report whole
    print(report)
    return report


# What benchmarks.velo_update_cost times VeLO on: an MLP of about num_params, with --sizes and --repeats.
def model_params(num_params: float) -> dict:
    """An MLP-shaped pytree (784 inputs, square hidden layers, 10 outputs) of about num_params."""
    width = int((num_params / 3) ** 0.5)  # three width x width layers dominate
    shapes = {"input": (784, width), "hidden_1": (width, width), "hidden_2": (width, width),
              "hidden_3": (width, width), "readout": (width, 10)}
    params = {}
    for index, (name, shape) in enumerate(shapes.items()):
        params[name] = {"kernel": jax.random.normal(jax.random.key(index), shape) / shape[0] ** 0.5,
                        "bias": jnp.zeros(shape[-1:])}
    return params


def arguments(argv, description: str, out: str) -> argparse.Namespace:
    """--sizes (parameter counts), --repeats (timed updates, median taken), --out (the markdown table)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=out)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
