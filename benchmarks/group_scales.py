"""A normalized learned optimizer with the learned step multipliers of some of its tensor groups (hidden,
input and output matrices, vectors) or kinds (convolution kernels, embedding tables) multiplied by
hand-set factors, on a suite against every tuned baseline: which kinds of tensor want larger or smaller
steps than meta-training gave them.

    python -m benchmarks.group_scales [--optimizer NAME (default: lopt.DEFAULT)] --scales hidden=2
        [--scales hidden=3 --scales input=2,output=2 --scales conv=5 ...] [--suite in_distribution]
        [--baselines adam,adamw,...] [--out benchmarks/results/group_scales_NAME]
        [--sweeps group_scale_sweeps] [--cache DIR] [--first-seed S]

Each --scales is one variant: GROUP=FACTOR pairs, comma-separated. Saves the optimizer's theta with
those groups' log_group_scales shifted by log(FACTOR), and its conv_step / embedding_step settings
times FACTOR for conv / embedding (SWEEPS/optimizers/NAME), with the original's
provenance, so the suite is built around the same meta-training scope; runs `evaluate` on the suite with
the optimizer and its variants (SWEEPS/SUITE/), and writes OUT/results.md: per task each variant's final
training and validation loss beside tuned Adam's and the strongest tuned baseline's, the per-task best
variant scored as one optimizer (an oracle), then the sweep's summary. Baselines come from evaluate's cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import jax.numpy as jnp

import evaluate
import lopt
from benchmarks.pretrained_results import results_folder
from benchmarks.weight_decay import check_suite, compare_variants
from evaluate.optimizers import REFERENCE_BASELINE
from evaluate.protocol import (DEFAULT_TUNING, DEFAULT_TUNING_FIRST_SEED, DEFAULT_TUNING_SEEDS, TuningError,
                               protocol)

# Kinds of tensor whose extra step factor is a setting of the rule, not a theta entry (see lopt.normalized_mlp).
KIND_SETTINGS = {"conv": "conv_step", "embedding": "embedding_step"}


def parse_scales(parser, text: str, groups: tuple[str, ...]) -> dict[str, float]:
    """'hidden=2,input=0.5' as {group: factor}; every group one of `groups`, every factor positive."""
    factors = {}
    for pair in text.split(","):
        group, sign, value = pair.strip().partition("=")
        try:
            factor = float(value) if sign else math.nan
        except ValueError:
            factor = math.nan
        if group not in groups or not 0 < factor < math.inf:
            parser.error(f"--scales: {pair.strip()!r} is not GROUP=FACTOR with GROUP one of "
                         f"{', '.join(groups)} and FACTOR a positive number")
        if group in factors:
            parser.error(f"--scales: {text!r} names {group} twice")
        factors[group] = factor
    return factors


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.group_scales", description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default=lopt.DEFAULT, help="a shipped name or checkpoint")
    parser.add_argument("--scales", action="append", required=True,
                        help="one variant's GROUP=FACTOR pairs, comma-separated (repeatable)")
    parser.add_argument("--suite", default="in_distribution", help="a suite name or a JSON suite file")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/group_scales_NAME, NAME the optimizer's)")
    parser.add_argument("--sweeps", type=Path, default=Path("group_scale_sweeps"))
    parser.add_argument("--baselines", default=",".join(evaluate.DEFAULT_BASELINES),
                        help="comma-separated tuned baselines (default: evaluate's)")
    parser.add_argument("--cache", default=None, help="baseline cache (default: evaluate's)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first of the 3 seeds (default 0, evaluate's): choose a factor on others")
    args = parser.parse_args(argv)
    args.out = args.out or results_folder(args.optimizer, "group_scales_")
    if args.first_seed < 0:
        parser.error(f"--first-seed: {args.first_seed} is negative")
    try:  # the sweep's default ruleset tunes the baselines on seeds of their own
        protocol(DEFAULT_TUNING, 3, args.first_seed, DEFAULT_TUNING_SEEDS, DEFAULT_TUNING_FIRST_SEED)
    except TuningError as error:
        parser.error(f"--first-seed: {error}")
    args.baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    unknown = sorted(set(args.baselines) - set(evaluate.BASELINES))
    if unknown or not args.baselines:
        parser.error(f"--baselines: {', '.join(unknown) or 'none given'}: not a tuned baseline "
                     f"(known: {', '.join(evaluate.BASELINES)})")
    if REFERENCE_BASELINE not in args.baselines:
        parser.error(f"--baselines: must include {REFERENCE_BASELINE}, the reference every table is scored against")
    check_suite(parser, args.suite)
    try:
        args.loaded = lopt.load_optimizer(args.optimizer)
    except ValueError as error:  # CheckpointError: not a shipped name nor a checkpoint
        parser.error(f"--optimizer: {error}")
    if not hasattr(args.loaded[0], "groups"):
        parser.error(f"--optimizer: {args.optimizer} is a {args.loaded[0].architecture} optimizer, "
                     "which has no learned group step multipliers")
    kinds = tuple(kind for kind, setting in KIND_SETTINGS.items() if hasattr(args.loaded[0], setting))
    args.scales = [parse_scales(parser, text, args.loaded[0].groups + kinds) for text in args.scales]
    names = [variant_name(Path(args.optimizer).name, factors) for factors in args.scales]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"--scales: two variants would both be saved as {', '.join(repeated)}")
    return args


def variant_name(label: str, factors: dict[str, float]) -> str:
    return label + "_" + "_".join(f"{group}{factor:g}" for group, factor in factors.items())


def save_variants(name: str, loaded, variants: list[dict[str, float]], directory: Path) -> tuple[str, list[str]]:
    """The optimizer's label and one `LABEL=PATH` per variant, each saved under directory."""
    optimizer, theta, spec = loaded
    label = Path(name).name
    entries = []
    for factors in variants:
        shift = jnp.asarray([math.log(factors.get(group, 1.0)) for group in optimizer.groups], jnp.float32)
        variant = dict(theta, log_group_scales=jnp.asarray(theta["log_group_scales"]) + shift)
        settings = {setting: getattr(optimizer, setting) * factors[kind]
                    for kind, setting in KIND_SETTINGS.items() if kind in factors}
        described = ", ".join(f"{group} x{factor:g}" for group, factor in factors.items())
        named = variant_name(label, factors)
        path = lopt.save(directory / named, dataclasses.replace(optimizer, **settings), variant,
                         description=f"{label} with its learned step multipliers scaled: {described}",
                         **spec.get("provenance", {}))
        entries.append(f"{named}={path}")
    return label, entries


def main(argv=None) -> Path:
    args = arguments(argv)
    label, variants = save_variants(args.optimizer, args.loaded, args.scales, args.sweeps / "optimizers")
    command = f"python -m benchmarks.group_scales {' '.join(argv if argv is not None else sys.argv[1:])}"
    title = f"{label} with scaled group step multipliers, {Path(args.suite).stem}"
    return compare_variants(args, label, variants, title, command, args.baselines, args.first_seed)


if __name__ == "__main__":
    main()
