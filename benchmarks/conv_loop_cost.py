"""What a training step of a conv net costs inside a compiled loop, against the same jitted step called
from a Python loop, on the default backend.

    python -m benchmarks.conv_loop_cost [--steps 20] [--repeats 3] [--out benchmarks/results/conv_loop_cost.md]

Meta-training runs its inner steps in `jax.lax.scan`, and so do train_each and evaluate except where
tasks.steps_from_python says a task's steps go one by one (this benchmark is why). On XLA's CPU backend a
convolution inside a loop body can keep dimension labels other than the canonical `b01f_01io->b01f` that
XLA gives it outside a loop, and such a convolution runs on a slow generic emitter (jax-ml/jax#12868). The
benchmark times Adam's step (tasks.train_step, the step every part of the library runs) both ways on the
conv nets of the built-in suites and on a conv net as a user writes it (flax.linen, max-pooling, global
average pooling, `tasks.from_flax` on the 8x8 digits), and counts each compiled program's convolutions
whose labels are not canonical. Both ways get the dataset as an argument, as the README's loops do.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax

import tasks
from checkpoints.files import write_atomically

CANONICAL = "dim_labels=b01f_01io->b01f"
GROUP = 4  # runs vmapped together in the group columns


class UserConvNet(nn.Module):
    """Three 3x3 convolutions, a max-pool after the second, global average pooling: as practitioners write one."""

    width: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width // 2, (3, 3))(x))
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def user_task() -> tasks.Task:
    import sklearn.datasets
    digits = sklearn.datasets.load_digits()
    images = (digits.data / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    labels = digits.target.astype(np.int32)
    return tasks.from_flax(UserConvNet(), (images[:1500], labels[:1500]), (images[1500:], labels[1500:]),
                           loss="cross_entropy", batch_size=64, name="user conv net")


# label: a thunk building the task (the built-in ones as their suites set them).
MODELS = {
    "conv mnist 8x8 (ood)": lambda: tasks.task_config("conv_mnist_14x14", image_size=8, batch_size=32).build(),
    "conv max-pool 3x32 mnist 14x14 (ood)": lambda: tasks.task_config(
        "conv_maxpool_mnist_14x14", width=32, batch_size=32).build(),
    "conv digits 8x8 (meta-training family)": lambda: tasks.task_config("conv_digits_8x8").build(),
    "user conv net, max-pool, digits 8x8": user_task,
}


def noncanonical_convolutions(compiled_text: str) -> int:
    return sum(1 for line in compiled_text.splitlines() if "convolution(" in line and CANONICAL not in line)


def measure(task: tasks.Task, steps: int, repeats: int) -> dict:
    """Milliseconds per step of one run, each way: "scan" and "python" for one run; "scan_group" and
    "python_group" for GROUP runs vmapped together (as train_each and evaluate run a grid), per run."""
    optimizer = optax.adam(1e-3)
    params = task.init(jax.random.key(0))
    state = optimizer.init(params)

    def step(carry, key, data):
        params, opt_state, loss = tasks.train_step(task, optimizer, *carry, data, key)
        return (params, opt_state), loss

    def scanned(carry, keys, data):
        return jax.lax.scan(lambda c, k: step(c, k, data), carry, keys)

    grouped = jax.vmap(step, in_axes=(0, None, None))
    programs = {"scan": jax.jit(scanned), "python": jax.jit(step),
                "scan_group": jax.jit(lambda carry, keys, data: jax.lax.scan(lambda c, k: grouped(c, k, data),
                                                                             carry, keys)),
                "python_group": jax.jit(grouped)}
    keys = jax.random.split(jax.random.key(1), steps)
    group = jax.tree.map(lambda leaf: jax.numpy.stack([leaf] * GROUP), (params, state))

    def runner(name):
        carry = group if name.endswith("group") else (params, state)
        if name.startswith("scan"):
            return lambda: programs[name](carry, keys, task.data)

        def from_python(carry=carry):
            for key in keys:
                carry, _ = programs[name](carry, key, task.data)
            return carry
        return from_python

    runs = {name: runner(name) for name in programs}
    times = {name: [] for name in programs}
    for run in runs.values():
        jax.block_until_ready(run())  # compiled and warmed up
    for _ in range(repeats):  # alternated, so all meet the same load on a shared machine
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            per_run = GROUP if name.endswith("group") else 1
            times[name].append((time.perf_counter() - start) / steps / per_run * 1000)
    scan_text = programs["scan"].lower((params, state), keys, task.data).compile().as_text()
    step_text = programs["python"].lower((params, state), keys[0], task.data).compile().as_text()
    return {**{f"{name}_ms": statistics.median(values) for name, values in times.items()},
            "noncanonical_scan": noncanonical_convolutions(scan_text),
            "noncanonical_step": noncanonical_convolutions(step_text)}


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls each way (the median is reported)")
    parser.add_argument("--out", default="benchmarks/results/conv_loop_cost.md")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    lines = ["# A conv net's training step inside a compiled loop and from a Python loop",
             "", f"`python -m benchmarks.conv_loop_cost --steps {args.steps} --repeats {args.repeats}` on "
             f"{device.platform} ({device.device_kind}, {platform.processor() or platform.machine()}), jax "
             f"{jax.__version__}. Adam's step (`tasks.train_step`), milliseconds a step, the median of "
             f"{args.repeats} calls of {args.steps} steps; the ways alternate. The group columns vmap {GROUP} "
             "runs together, as `tasks.train_each` and `evaluate` run a grid, and give milliseconds per run-step. "
             "\"non-canonical\": the compiled program's convolutions (one run) whose labels are not "
             f"`{CANONICAL.split('=')[1]}`.", "",
             "| model | in `lax.scan` | jitted step from Python | scan / Python | group in `lax.scan` | group step "
             "from Python | non-canonical convolutions: scan, step |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, build in MODELS.items():
        result = measure(build(), args.steps, args.repeats)
        print(label, result, flush=True)
        lines.append(f"| {label} | {result['scan_ms']:.1f} | {result['python_ms']:.1f} | "
                     f"{result['scan_ms'] / result['python_ms']:.2f} | {result['scan_group_ms']:.1f} | "
                     f"{result['python_group_ms']:.1f} | {result['noncanonical_scan']}, {result['noncanonical_step']} |")
    path = Path(args.out)
    write_atomically(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
