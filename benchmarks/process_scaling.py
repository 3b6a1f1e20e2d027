"""Meta-training in one process or in a group of processes on the same cores: outer steps per second.

    python -m benchmarks.process_scaling [--repeats 5] [--out benchmarks/results/process_scaling.md]

Each layout runs in fresh processes (one per member of the group, on 127.0.0.1, gloo collectives), as
`python -m meta_train` runs them: 1 process x 2 devices dispatching steps ahead (which can deadlock on
CPU devices that share collectives: the meta_train loop no longer does it), the same waiting for each
step (what the loop does on any CPU mesh of more than one device, MetaTrainer.one_step_at_a_time), and
2 processes x 1 device, which must wait for each step too. On one machine the group shares the cores
the single process has, so this measures the overhead of the group, not a speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from benchmarks import meta_train_throughput as throughput
from benchmarks.update_cost import write_report
from meta_train.distributed import cpu_device_flags

CASES = {
    "quadratic 10-d, 8 tasks x 10 steps, MLP hidden 32": throughput.CASES[throughput.QUADRATIC],
    "default preset (normalized rule, 6 shape buckets)": ("default", [], 5),
}
# (label, processes, devices per process, wait for each step)
LAYOUTS = [("1 process x 2 devices", 1, 2, False), ("1 process x 2 devices, each step waited for", 1, 2, True),
           ("2 processes x 1 device", 2, 1, True)]


def worker(config_name: str, overrides: list[str], steps_per_window: int, repeats: int, wait: bool) -> None:
    """One member of the group: joins it (from the environment), times windows of outer steps."""
    from meta_train import distributed
    distributed.join(distributed.ProcessLayout.from_flags(None, None, None))
    import jax
    from meta_train.config import preset, with_overrides
    from meta_train.trainer import MetaTrainer

    trainer = MetaTrainer(with_overrides(preset(config_name), overrides))
    state, data = trainer.init(), trainer.data()
    for _ in range(2):  # compilation and warm-up
        state, metrics = trainer.step(state, data)
        jax.block_until_ready(state)
    seconds = []
    for _ in range(repeats):
        distributed.barrier("window")
        start = time.perf_counter()
        for _ in range(steps_per_window):
            state, metrics = trainer.step(state, data)
            if wait:
                jax.block_until_ready(state)
        jax.block_until_ready((state, metrics))
        seconds.append((time.perf_counter() - start) / steps_per_window)
    if distributed.is_main():
        print(json.dumps({"steps_per_s": [1 / s for s in seconds]}), flush=True)


def launch(case: tuple, processes: int, devices: int, wait: bool, repeats: int) -> list[float]:
    config_name, overrides, steps_per_window = case
    port = _free_port()
    members = []
    for index in range(processes):
        environment = dict(os.environ, XLA_FLAGS=cpu_device_flags(devices),
                           LOPT_COMPILATION_CACHE="")
        if processes > 1:
            environment.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                               JAX_PROCESS_ID=str(index))
        members.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.process_scaling", "--worker",
             json.dumps([config_name, overrides, steps_per_window, repeats, wait])],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    outputs = [member.communicate()[0] for member in members]
    if any(member.returncode for member in members):
        raise RuntimeError(f"a member of the group failed: {[m.returncode for m in members]}")
    line = next(line for line in outputs[0].splitlines() if line.startswith("{"))
    return json.loads(line)["steps_per_s"]


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/process_scaling.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*json.loads(args.worker))
        return
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores; outer steps per second, median (min-max) of "
             f"{args.repeats} windows, each layout in fresh processes on the same cores", "",
             "| case | " + " | ".join(label for label, *_ in LAYOUTS) + " | group / single |",
             "| --- |" + " --- |" * (len(LAYOUTS) + 1)]
    for name, case in CASES.items():
        medians, cells = [], []
        for _, processes, devices, wait in LAYOUTS:
            rates = launch(case, processes, devices, wait, args.repeats)
            medians.append(statistics.median(rates))
            cells.append(f"{medians[-1]:.1f} ({min(rates):.1f}-{max(rates):.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {medians[-1] / medians[0]:.2f} |")
        print(lines[-1], flush=True)
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
