"""Throughput of PES meta-training: outer (meta-)steps per second, inner optimizer steps per second,
and the time to trace and compile the outer step.

    python -m benchmarks.meta_train_throughput [--repeats 7] [--out benchmarks/results/meta_train_throughput.md]

Cases: (a) 8 tasks x 10-step truncations on a 10-d quadratic with a hidden-32 per-parameter MLP
optimizer, the setting whose learned_optimization figure (180-220 meta-steps/s, about 6 s to compile on
a 2-core CPU) is the one to beat; (b) the default preset of `python -m meta_train`, six shape buckets
(MLPs, a conv net, a transformer and an LSTM LM) in one step; (c) the same with the regret curriculum (its tuned-Adam curves replaced by zeros here: the step's cost is the same). Each case
builds a fresh MetaTrainer (a cold compile), then times `repeats` windows of steps and reports the median.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np

from benchmarks.update_cost import write_report
from meta_train.config import preset, with_overrides
from meta_train.trainer import MetaTrainer

QUADRATIC = "(a) quadratic 10-d, 8 tasks x 10 steps, MLP hidden 32"  # small_fc_lopt's MLP, as learned_optimization's
CASES = {
    QUADRATIC: (
        "quadratic", ["optimizer=mlp_lopt", "optimizer.hidden_size=32", "workers_per_config=8",
                      "truncation_length=10"], 100),
    "(b) default preset: 6 shape buckets (MLPs, conv, transformer, LSTM)": ("default", [], 10),
    "(c) default preset, regret curriculum": ("default", ["curriculum=regret"], 10),
}


def measure(config_name: str, overrides: list[str], steps_per_window: int, repeats: int) -> dict[str, float]:
    trainer = MetaTrainer(with_overrides(preset(config_name), overrides))
    if trainer.config.curriculum == "regret":
        trainer.set_baselines([np.zeros((len(e.unroller.variants), trainer.config.max_inner_length), np.float32)
                               for e in trainer.estimators])
    state, data = trainer.init(), trainer.data()
    jax.block_until_ready(state)
    start = time.perf_counter()
    lowered = trainer.step.lower(state, data)
    traced = time.perf_counter()
    step = lowered.compile()
    compiled = time.perf_counter()
    state, metrics = step(state, data)  # warm-up
    jax.block_until_ready(metrics)
    seconds = []
    for _ in range(repeats):
        window = time.perf_counter()
        for _ in range(steps_per_window):
            state, metrics = step(state, data)
        jax.block_until_ready((state, metrics))
        seconds.append((time.perf_counter() - window) / steps_per_window)
    per_step = statistics.median(seconds)
    return {"trace_s": traced - start, "compile_s": compiled - traced, "meta_steps_per_s": 1.0 / per_step,
            "inner_steps_per_s": trainer.inner_steps_per_outer_step() / per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/meta_train_throughput.md")
    args = parser.parse_args()
    device = jax.devices()[0]
    lines = [f"Machine: {platform.processor() or platform.machine()}, {len(jax.devices())} x {device.device_kind} "
             f"({device.platform}), jax {jax.__version__}; medians of {args.repeats} windows", "",
             "| case | meta-steps/s | inner steps/s | trace s | compile s |", "| --- | --- | --- | --- | --- |"]
    for name, (config_name, overrides, steps_per_window) in CASES.items():
        result = measure(config_name, overrides, steps_per_window, args.repeats)
        lines.append(f"| {name} | {result['meta_steps_per_s']:.1f} | {result['inner_steps_per_s']:,.0f} | "
                     f"{result['trace_s']:.1f} | {result['compile_s']:.1f} |")
        print(lines[-1], flush=True)
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
