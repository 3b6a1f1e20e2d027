"""What a training step of a conv net costs inside a compiled loop, against the same jitted step called
from a Python loop, on the default backend.

    python -m benchmarks.conv_loop_cost [--steps 20] [--repeats 3] [--out benchmarks/results/conv_loop_cost.md]

train_each, evaluate and meta-training run their inner steps in `jax.lax.scan`. On XLA's CPU backend a
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
    optimizer = optax.adam(1e-3)
    params = task.init(jax.random.key(0))
    state = optimizer.init(params)

    def step(carry, key, data):
        params, opt_state, loss = tasks.train_step(task, optimizer, *carry, data, key)
        return (params, opt_state), loss

    in_loop = jax.jit(lambda carry, keys, data: jax.lax.scan(lambda c, k: step(c, k, data), carry, keys))
    one_step = jax.jit(step)
    keys = jax.random.split(jax.random.key(1), steps)

    def looped():
        return in_loop((params, state), keys, task.data)

    def from_python():
        carry = (params, state)
        for key in keys:
            carry, _ = one_step(carry, key, task.data)
        return carry

    times = {"scan": [], "python": []}
    for name, run in (("scan", looped), ("python", from_python)):
        jax.block_until_ready(run())  # compiled and warmed up
    for _ in range(repeats):  # alternated, so both meet the same load on a shared machine
        for name, run in (("scan", looped), ("python", from_python)):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append((time.perf_counter() - start) / steps * 1000)
    scan_text = in_loop.lower((params, state), keys, task.data).compile().as_text()
    step_text = one_step.lower((params, state), keys[0], task.data).compile().as_text()
    return {"scan_ms": statistics.median(times["scan"]), "python_ms": statistics.median(times["python"]),
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
             f"{args.repeats} calls of {args.steps} steps; the two ways alternate. \"non-canonical\": the "
             f"compiled program's convolutions whose labels are not `{CANONICAL.split('=')[1]}`.", "",
             "| model | in `lax.scan` (ms/step) | jitted step from Python (ms/step) | scan / Python | non-canonical convolutions: scan, step |",
             "| --- | --- | --- | --- | --- |"]
    for label, build in MODELS.items():
        result = measure(build(), args.steps, args.repeats)
        print(label, result, flush=True)
        lines.append(f"| {label} | {result['scan_ms']:.1f} | {result['python_ms']:.1f} | "
                     f"{result['scan_ms'] / result['python_ms']:.2f} | {result['noncanonical_scan']}, "
                     f"{result['noncanonical_step']} |")
    path = Path(args.out)
    write_atomically(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
