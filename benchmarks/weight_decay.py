"""The default learned optimizer at other strengths of its decoupled weight decay, or with a decay that
grows as the training loss falls (lopt.fit_decay) at hand-set gains, on `ood` (or another suite) against
every tuned baseline: what the regularization of its harness does out of family, and how far a per-task
choice of it would go.

    python -m benchmarks.weight_decay [--optimizer NAME (default: lopt.DEFAULT)] [--decays 0.1,0.3,1,3]
        [--fit-gains 2,4] [--suite ood] [--out benchmarks/results/weight_decay_NAME]
        [--sweeps weight_decay_sweeps] [--cache DIR]

Saves the optimizer's theta with each decay in place of the learned one (SWEEPS/optimizers/wd_D), and
with fit_decay on at each gain (knee at its start, the learned decay as its base; SWEEPS/optimizers/
fit_G), each with the original's provenance, so that the suite is built around the same meta-training
scope; runs `evaluate` on the suite with the optimizer and those variants (SWEEPS/SUITE/), and writes
OUT/results.md: the sweep's summary, then per task each variant's final training and validation loss
beside tuned Adam's and the strongest tuned baseline's, and the variant that is best on validation loss
per task, scored as if it were one optimizer (an oracle: no untuned optimizer can choose it, which is
what the table measures). Baselines come from evaluate's cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import jax.numpy as jnp

import evaluate
import lopt
from lopt import fit_decay
from benchmarks.pretrained_results import results_folder, write_section
from checkpoints.files import write_atomically
from evaluate.optimizers import REFERENCE_BASELINE
from evaluate.summary import format_cell


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.weight_decay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default=lopt.DEFAULT, help="a shipped name or checkpoint")
    parser.add_argument("--decays", default="0.1,0.3,1,3",
                        help="comma-separated weight decays (x the learning rate), or 'none'")
    parser.add_argument("--fit-gains", default="none",
                        help="comma-separated gains of a decay that grows as the training loss falls, or 'none'")
    parser.add_argument("--suite", default="ood", help="a suite name or a JSON suite file (default: ood)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/weight_decay_NAME, NAME the optimizer's)")
    parser.add_argument("--sweeps", type=Path, default=Path("weight_decay_sweeps"))
    parser.add_argument("--cache", default=None, help="baseline cache (default: evaluate's)")
    args = parser.parse_args(argv)
    args.out = args.out or results_folder(args.optimizer, "weight_decay_")
    check_suite(parser, args.suite)
    args.decays = numbers(parser, "--decays", args.decays, positive=True)
    args.fit_gains = numbers(parser, "--fit-gains", args.fit_gains, positive=False)
    if not args.decays and not args.fit_gains:
        parser.error("--decays and --fit-gains are both 'none': nothing to compare the optimizer with")
    try:
        args.loaded = lopt.load_optimizer(args.optimizer)
    except ValueError as error:  # CheckpointError: not a shipped name nor a checkpoint
        parser.error(f"--optimizer: {error}")
    if "log_weight_decay" not in args.loaded[1]:
        parser.error(f"--optimizer: {args.optimizer} learns no weight decay (its theta has no log_weight_decay)")
    if args.fit_gains and not hasattr(args.loaded[0], "fit_decay"):
        parser.error(f"--fit-gains: {args.optimizer} is a {args.loaded[0].architecture} optimizer, which has no fit_decay")
    return args


def check_suite(parser, suite: str) -> None:
    """Refuses an unknown suite name or a bad suite file before any variant is saved."""
    try:
        evaluate.build_suite(suite, evaluate.MetaTrainingScope())
    except evaluate.SuiteError as error:
        parser.error(f"--suite: {error}")


def numbers(parser, flag: str, text: str, positive: bool) -> list[float]:
    """A comma-separated list of finite numbers (positive ones, if asked), or [] for 'none'."""
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        parser.error(f"{flag}: {text!r} is not a comma-separated list of numbers (or 'none')")
    if not values or not all(abs(value) < math.inf and (value > 0 or not positive) for value in values):
        parser.error(f"{flag}: every value must be a {'positive' if positive else 'finite'} number, got {text!r}")
    return values


def save_variants(name: str, loaded, decays: list[float], directory: Path,
                  fit_gains: tuple[float, ...] = ()) -> tuple[str, list[str]]:
    """The optimizer's label and one `LABEL=PATH` per decay and per fit_decay gain, each saved under
    directory."""
    optimizer, theta, spec = loaded
    label = Path(name).name
    learned = float(optimizer.decoupled_weight_decay(theta))
    entries = []
    for decay in decays:
        variant = dict(theta, log_weight_decay=jnp.asarray(math.log(decay), jnp.float32))
        path = lopt.save(directory / f"wd_{decay:g}", optimizer, variant,
                         description=f"{label} with weight decay {decay:g} in place of its learned {learned:.3g}",
                         **spec.get("provenance", {}))
        entries.append(f"{label}_wd{decay:g}={path}")
    for gain in fit_gains:
        with_fit = dataclasses.replace(optimizer, fit_decay=True)
        variant = dict(theta, fit_decay=jnp.asarray([gain, 0.0], jnp.float32))
        path = lopt.save(directory / f"fit_{gain:g}", with_fit, variant,
                         description=f"{label} with its weight decay ({learned:.3g}) growing as the training loss "
                                     f"falls (lopt.fit_decay), gain {gain:g}, knee {fit_decay.INITIAL_KNEE:g} e-folds",
                         **spec.get("provenance", {}))
        entries.append(f"{label}_fit{gain:g}={path}")
    return label, entries


def variant_table(rows: list[dict], learned: list[str]) -> list[str]:
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
              f"Best variant per task on validation loss (an oracle): {'; '.join(oracle)}. "
              f"Validation wins: {oracle_wins['adam']}/{len(tasks)} against tuned Adam, "
              f"{oracle_wins['strongest']}/{len(tasks)} against the strongest tuned baseline."]
    return lines


def compare_variants(args, label: str, variants: list[str], title: str, command: str,
                     baselines=evaluate.DEFAULT_BASELINES, first_seed: int = 0) -> Path:
    """Runs `evaluate` on args.suite with args.optimizer and its saved variants (`LABEL=PATH`) into
    args.sweeps/SUITE, 3 seeds from first_seed, and writes args.out/results.md: the variant table, then
    the sweep's summary."""
    suite_name = Path(args.suite).stem
    workdir = args.sweeps / suite_name
    shipped = args.optimizer if not Path(args.optimizer).exists() else f"{label}={args.optimizer}"
    try:
        evaluate.run_suite([shipped] + variants, args.suite, workdir, seeds=3, baselines=baselines,
                           cache_dir=args.cache, force=True, first_seed=first_seed)
    except (evaluate.SuiteError, evaluate.SweepError, evaluate.OptimizerError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    args.out.mkdir(parents=True, exist_ok=True)
    section = write_section(args.out / "sections", suite_name, None, label, workdir)
    rows = json.loads((workdir / "summary.json").read_text())["rows"]
    learned = [label] + [entry.partition("=")[0] for entry in variants]
    lines = [f"# {title}", "", f"Written by `{command}`.", "",
             *variant_table(rows, learned), "", section.read_text().strip(), ""]
    path = args.out / "results.md"
    write_atomically(path, "\n".join(lines))
    print(f"wrote {path}")
    return path


def main(argv=None) -> Path:
    args = arguments(argv)
    label, variants = save_variants(args.optimizer, args.loaded, args.decays, args.sweeps / "optimizers",
                                    args.fit_gains)
    command = f"python -m benchmarks.weight_decay {' '.join(argv if argv is not None else sys.argv[1:])}"
    return compare_variants(args, label, variants, f"{label} at other weight decays", command)


if __name__ == "__main__":
    main()
