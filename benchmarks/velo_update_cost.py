"""Cost of one update of VeLO at its released size (LSTM 512, a bank of 256 per-parameter MLPs) against
optax.adam on the same parameters.

    python -m benchmarks.velo_update_cost [--sizes 1e6 1e7] [--repeats 7] [--out benchmarks/results/velo_update_cost.md]

Each update is jitted with donated state and warmed up (benchmarks.update_cost.timed_update); then VeLO's
and Adam's updates alternate, so that both meet the same load on a shared machine, and the table reports
each one's median and their ratio. The meta-parameters come from `VeLO().init`: the cost does not depend on
their values.
"""

from __future__ import annotations

import statistics

import jax
import optax

import lopt
from benchmarks.update_cost import arguments, machine, model_params, timed_update, write_report


def main(argv=None) -> str:
    args = arguments(argv, __doc__, "benchmarks/results/velo_update_cost.md")

    velo = lopt.VeLO()
    optimizers = {"optax.adam": lambda: optax.adam(1e-3),
                  "VeLO (LSTM 512, 256 MLPs of hidden 4)": lambda: velo.transform(velo.init(jax.random.key(0)), 1000)}
    meta_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(velo.init, jax.random.key(0))))
    lines = [f"# VeLO update cost against optax.adam ({machine()})", "",
             f"VeLO at its released size: {meta_params:,} meta-parameters; median of {args.repeats} jitted updates "
             "after 2 warm-up updates, VeLO's and Adam's alternating.", "",
             "| parameters | optimizer | median ms | x optax.adam | state bytes / param |",
             "| --- | --- | --- | --- | --- |"]
    for size in args.sizes:
        params = model_params(size)
        count = sum(x.size for x in jax.tree.leaves(params))
        timed = {name: timed_update(make(), params) for name, make in optimizers.items()}
        seconds = {name: [] for name in optimizers}
        for _ in range(args.repeats):
            for name, (update_once, _) in timed.items():
                seconds[name].append(update_once())
        adam_time = statistics.median(seconds["optax.adam"])
        for name, (_, state_bytes) in timed.items():
            median = statistics.median(seconds[name])
            lines.append(f"| {count / 1e6:.2f}M | {name} | {median * 1e3:.2f} | {median / adam_time:.1f} | "
                         f"{state_bytes / count:.1f} |")
            print(lines[-1], flush=True)
    return write_report(args.out, lines)


if __name__ == "__main__":
    main()
