"""Cost of one optimizer update against optax.adam on the same parameters.

    python -m benchmarks.update_cost [--sizes 1e6 1e7] [--repeats 7] [--out benchmarks/results/update_cost.md]

Each update is jitted with donated state, warmed up, then timed over repeats; the table reports the
median time, its ratio to optax.adam measured in the same run (these machines are noisy: compare
ratios, not times), the optimizer state in bytes per parameter, and for the MLP optimizers the
achieved flop rate against this machine's measured dense matmul rate.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import optax

import lopt
from checkpoints.files import write_atomically
from lopt.baselines import BASELINES


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


def time_update(transform: optax.GradientTransformation, params, repeats: int) -> tuple[float, int]:
    """(median seconds of one update after warm-up, optimizer state bytes)."""
    update_once, state_bytes = timed_update(transform, params)
    return statistics.median(update_once() for _ in range(repeats)), state_bytes


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


def matmul_flops_per_second(repeats: int) -> float:
    """This machine's float32 dense matmul rate on the shape an MLP optimizer's hidden layer has."""
    a = jax.random.normal(jax.random.key(0), (1 << 18, 32))
    b = jax.random.normal(jax.random.key(1), (32, 32))
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * a.shape[0] * 32 * 32 / statistics.median(times)


def mlp_flops_per_param(hidden: int) -> int:
    """The issue's count for a per-parameter MLP: 2 (39 h + h^2 + 2h)."""
    return 2 * (39 * hidden + hidden * hidden + 2 * hidden)


def arguments(argv, description: str, out: str) -> argparse.Namespace:
    """--sizes (parameter counts), --repeats (timed updates, median taken), --out (the markdown table)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=out)
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = arguments(argv, __doc__, "benchmarks/results/update_cost.md")

    optimizers = {
        "optax.adam": lambda params: optax.adam(1e-3),
        "optax.adamw": lambda params: optax.adamw(1e-3, weight_decay=0.01),
        "optax.contrib.muon (evaluate's)": lambda params: BASELINES["muon"][0](0.01, 1000, model_roles(params)),
        "lopt.Adam (interface)": lambda params: lopt.Adam().transform(lopt.Adam().init(None), 1000),
        "NormalizedMLPLOpt hidden 8, orthogonalized, fit decay, kind steps (orthogonal_mlp)": lambda params: _normalized(
            params, orthogonalize=True, fit_decay=True, conv_step=5.0, embedding_step=5.0),
        "NormalizedMLPLOpt hidden 8, orthogonalized": lambda params: _normalized(params, orthogonalize=True),
        "NormalizedMLPLOpt hidden 8, every entry's features (as meta-trained)": lambda params: _normalized(params),
        "NormalizedMLPLOpt hidden 8, sampled features (normalized_mixed)": lambda params: _normalized(
            params, feature_sample=16384),
        "NormalizedMLPLOpt hidden 4, sampled features": lambda params: _normalized(
            params, hidden_size=4, feature_sample=16384),
        "MLPLOpt hidden 4": lambda params: _mlp(4, params),
        "MLPLOpt hidden 32": lambda params: _mlp(32, params),
        "LSTMLOpt (LSTM 32, 8 MLPs of hidden 4)": lambda params: _lstm(),
    }
    matmul_rate = matmul_flops_per_second(args.repeats)
    lines = [f"# Update cost against optax.adam ({machine()})", "",
             f"Dense matmul rate measured here ((262144 x 32) @ (32 x 32), float32): {matmul_rate / 1e9:.1f} GFLOP/s", "",
             "| parameters | optimizer | median ms | x optax.adam | x optax.adamw | x muon | state bytes / param | "
             "GFLOP/s (share of matmul rate) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size in args.sizes:
        params = model_params(size)
        count = sum(x.size for x in jax.tree.leaves(params))
        times = {}
        for name, make in optimizers.items():
            seconds, state_bytes = time_update(make(params), params, args.repeats)
            times[name] = seconds
            adam_time, adamw_time = times["optax.adam"], times.get("optax.adamw", seconds)
            muon_time = times.get("optax.contrib.muon (evaluate's)", seconds)
            flops = ""
            if name.startswith("MLPLOpt hidden"):
                rate = mlp_flops_per_param(int(name.split()[-1])) * count / seconds
                flops = f"{rate / 1e9:.1f} ({rate / matmul_rate:.0%})"
            lines.append(f"| {count / 1e6:.2f}M | {name} | {seconds * 1e3:.2f} | {seconds / adam_time:.1f} | "
                         f"{seconds / adamw_time:.1f} | {seconds / muon_time:.2f} | {state_bytes / count:.1f} | {flops} |")
            print(lines[-1], flush=True)
    return write_report(args.out, lines)


def machine() -> str:
    return f"{platform.machine()}, {jax.devices()[0].device_kind}, {jax.device_count()} device, jax {jax.__version__}"


def write_report(path: str, lines: list[str]) -> str:
    report = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, report)  # a run stopped while writing leaves the previous report whole
    print(report)
    return report


def model_roles(params) -> dict:
    """The muP roles of model_params' tensors: its square layers are the hidden ones."""
    return {name: {"kernel": "hidden" if name.startswith("hidden") else name if name == "input" else "output",
                   "bias": "input"} for name in params}


def _normalized(params, **settings):
    """The normalized rule as shipped (width scaling, no Newton-Schulz) but for `settings`."""
    optimizer = lopt.NormalizedMLPLOpt(**{"orthogonalize": False, "width_scaling": True, **settings})
    return optimizer.transform(optimizer.init(jax.random.key(0)), 1000, model_roles(params))


def _mlp(hidden: int, params):
    optimizer = lopt.MLPLOpt(hidden_size=hidden, parameterization="sp")
    return optimizer.transform(optimizer.init(jax.random.key(0)), 1000)


def _lstm():
    optimizer = lopt.LSTMLOpt(parameterization="sp")
    return optimizer.transform(optimizer.init(jax.random.key(0)), 1000)


if __name__ == "__main__":
    main()
