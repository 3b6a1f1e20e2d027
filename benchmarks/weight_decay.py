"""The default learned optimizer at other strengths of its decoupled weight decay, on `ood` against every
tuned baseline: what the one regularization knob of its harness does out of family, and how far a
per-task choice of it would go.

    python -m benchmarks.weight_decay [--optimizer orthogonal_mixed] [--decays 0.1,0.3,1,3]
        [--out benchmarks/results/weight_decay] [--sweeps weight_decay_sweeps] [--cache DIR]

Saves the optimizer's theta with each decay in place of the learned one (SWEEPS/optimizers/wd_D, with the
original's provenance, so that the suite is built around the same meta-training scope), runs `evaluate`
on ood with the optimizer and those variants (SWEEPS/ood/), and writes OUT/results.md: the sweep's
summary, then per task each decay's final training and validation loss beside tuned Adam's and the
strongest tuned baseline's, and the decay that is best on validation loss per task, scored as if it were
one optimizer (an oracle: no untuned optimizer can choose it, which is what the table measures).
Baselines come from evaluate's cache.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax.numpy as jnp

import evaluate
import lopt
from benchmarks.pretrained_results import write_section
from checkpoints.files import write_atomically
from evaluate.optimizers import REFERENCE_BASELINE
from evaluate.summary import format_cell


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.weight_decay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="orthogonal_mixed", help="a shipped name or checkpoint")
    parser.add_argument("--decays", default="0.1,0.3,1,3", help="comma-separated weight decays (x the learning rate)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/weight_decay"))
    parser.add_argument("--sweeps", type=Path, default=Path("weight_decay_sweeps"))
    parser.add_argument("--cache", default=None, help="baseline cache (default: evaluate's)")
    args = parser.parse_args(argv)
    try:
        args.decays = [float(value) for value in args.decays.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--decays: {args.decays!r} is not a comma-separated list of numbers")
    if not args.decays or not all(0 < value < math.inf for value in args.decays):
        parser.error(f"--decays: every decay must be a positive number, got {args.decays}")
    try:
        args.loaded = lopt.load_optimizer(args.optimizer)
    except ValueError as error:  # CheckpointError: not a shipped name nor a checkpoint
        parser.error(f"--optimizer: {error}")
    if "log_weight_decay" not in args.loaded[1]:
        parser.error(f"--optimizer: {args.optimizer} learns no weight decay (its theta has no log_weight_decay)")
    return args


def save_variants(name: str, loaded, decays: list[float], directory: Path) -> tuple[str, list[str]]:
    """The optimizer's label and one `LABEL=PATH` per decay, each saved under directory."""
    optimizer, theta, spec = loaded
    label = Path(name).name
    entries = []
    for decay in decays:
        variant = dict(theta, log_weight_decay=jnp.asarray(math.log(decay), jnp.float32))
        path = lopt.save(directory / f"wd_{decay:g}", optimizer, variant,
                         description=f"{label} with weight decay {decay:g} in place of its learned "
                                     f"{float(optimizer.weight_decay(theta)):.3g}",
                         **spec.get("provenance", {}))
        entries.append(f"{label}_wd{decay:g}={path}")
    return label, entries


def decay_table(rows: list[dict], learned: list[str]) -> list[str]:
    """Per task: each learned optimizer's final train / valid loss, tuned Adam's and the strongest
    baseline's; then the per-task best on validation loss among `learned`, with its wins."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    lines = ["| task | " + " | ".join(learned) + " | tuned Adam | strongest baseline |",
             "| --- |" + " --- |" * (len(learned) + 2)]
    oracle_wins = {"adam": 0, "strongest": 0}
    oracle = []
    for task in tasks:
        by_name = {row["optimizer"]: row for row in rows if row["task"] == task}
        adam = by_name[REFERENCE_BASELINE]
        strongest = by_name[by_name[learned[0]]["strongest_valid_baseline"]]  # as the summary picks it
        cells = [f"{format_cell(by_name[name]['final_train_loss'])} / {format_cell(by_name[name]['final_valid_loss'])}"
                 for name in learned]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {format_cell(adam['final_train_loss'])} / "
                     f"{format_cell(adam['final_valid_loss'])} | {format_cell(strongest['final_valid_loss'])} "
                     f"({strongest['optimizer']}) |")
        best = min(learned, key=lambda name: by_name[name]["final_valid_loss"])
        valid = by_name[best]["final_valid_loss"]
        oracle_wins["adam"] += valid < adam["final_valid_loss"]
        oracle_wins["strongest"] += valid < strongest["final_valid_loss"]
        oracle.append(f"{task}: {best} ({format_cell(valid)})")
    lines += ["", "Each cell: final training loss / final validation loss (tuned Adam's at its best rate for each; "
              "the strongest baseline's validation loss is the lowest of every tuned baseline).", "",
              f"Best decay per task on validation loss (an oracle): {'; '.join(oracle)}. "
              f"Validation wins: {oracle_wins['adam']}/{len(tasks)} against tuned Adam, "
              f"{oracle_wins['strongest']}/{len(tasks)} against the strongest tuned baseline."]
    return lines


def main(argv=None) -> Path:
    args = arguments(argv)
    label, variants = save_variants(args.optimizer, args.loaded, args.decays, args.sweeps / "optimizers")
    workdir = args.sweeps / "ood"
    shipped = args.optimizer if not Path(args.optimizer).exists() else f"{label}={args.optimizer}"
    evaluate.run_suite([shipped] + variants, "ood", workdir, seeds=3, cache_dir=args.cache, force=True)
    args.out.mkdir(parents=True, exist_ok=True)
    section = write_section(args.out / "sections", "ood", None, label, workdir)
    rows = json.loads((workdir / "summary.json").read_text())["rows"]
    learned = [label] + [entry.partition("=")[0] for entry in variants]
    lines = [f"# {label} at other weight decays", "", "Written by `python -m benchmarks.weight_decay`.", "",
             *decay_table(rows, learned), "", section.read_text().strip(), ""]
    path = args.out / "results.md"
    write_atomically(path, "\n".join(lines))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
