"""The default learned optimizer against per-task tuned baselines, on training and validation loss: the
README's results for it, reproduced with one command.

    python -m benchmarks.default_results [--optimizer NAME (default: lopt.DEFAULT)] [--also NAME=PATH ...]
        [--suites ood,in_distribution,stability] [--out benchmarks/results/NAME] [--sweeps default_sweeps]

Runs `evaluate` sweeps (each in SWEEPS/<suite>/ with its runs, summary and plots): `ood` against every
tuned baseline and `in_distribution` (held-out configs of the meta-training family) against tuned Adam,
AdamW and Muon with warmup and cosine or linear decay, each with the --also optimizers beside it (the
ingredient measurements); and
`benchmarks/suites/stability.json` (32x the meta-training width, 10x its horizon) against tuned Adam and
warmup-cosine AdamW. Each sweep's summary goes to OUT/sections/, OUT/results.md gathers them, and the
plots go beside it: final validation loss on every ood task as a ratio to tuned Adam's, final losses
against width, and the loss curves at 10x the horizon; OUT/one_setting_ood.md scores every baseline's
every rate on ood as the untuned learned optimizer is scored (`benchmarks.one_setting`). Baselines come
from evaluate's cache.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from matplotlib.figure import Figure

import evaluate
import lopt
from benchmarks import one_setting
from benchmarks.pretrained_results import results_folder, write_results, write_section
from evaluate.plots import slug

STABILITY_SUITE = Path(__file__).parent / "suites" / "stability.json"
COMPARED = ("adam", "adamw_cosine", "adamw_linear", "muon", "muon_linear")
# (name, suite, seeds, baselines)
SUITES = (
    ("ood", "ood", 3, evaluate.DEFAULT_BASELINES),
    ("in_distribution", "in_distribution", 3, COMPARED),
    ("stability", str(STABILITY_SUITE), 2, ("adam", "adamw_cosine")),
)
HORIZON_TASK = "mlp width 128 depth 2, 10000 steps (10x)"


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default=lopt.DEFAULT, help="the optimizer (shipped name or checkpoint)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                        help="another learned optimizer to show beside it on ood and in distribution (repeatable)")
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/NAME, NAME the optimizer's)")
    parser.add_argument("--sweeps", default="default_sweeps")
    parser.add_argument("--cache", default=None, help="baseline cache (default: evaluate's)")
    parser.add_argument("--suites", default=",".join(name for name, *_ in SUITES))
    args = parser.parse_args(argv)
    args.out = args.out or results_folder(args.optimizer)
    args.suites = [name.strip() for name in args.suites.split(",") if name.strip()]
    unknown = sorted(set(args.suites) - {name for name, *_ in SUITES})
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; known: {', '.join(name for name, *_ in SUITES)}")
    return args


def ood_validation_plot(workdir: Path, optimizers: list[str], path: Path) -> Path:
    """Final validation loss on every ood task over tuned Adam's, one bar per optimizer (log scale; below
    1 is better than tuned Adam)."""
    rows = json.loads((workdir / "summary.json").read_text())["rows"]
    task_names = list(dict.fromkeys(row["task"] for row in rows))
    shown = [name for name in optimizers + ["adamw_cosine", "muon"] if any(row["optimizer"] == name for row in rows)]
    figure = Figure(figsize=(11, 4.5))
    axes = figure.subplots()
    width = 0.8 / len(shown)
    for index, name in enumerate(shown):
        ratios = []
        for task in task_names:
            row = next(row for row in rows if row["task"] == task and row["optimizer"] == name)
            ratio = row.get("valid_vs_adam")
            ratios.append(ratio if ratio is not None and math.isfinite(ratio) else math.nan)
        axes.bar([t + (index - (len(shown) - 1) / 2) * width for t in range(len(task_names))], ratios, width,
                 label=name)
    axes.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
    axes.set_yscale("log")
    axes.set_xticks(range(len(task_names)), [name.replace(" (", "\n(") for name in task_names], fontsize=8)
    axes.set_ylabel("final validation loss / tuned Adam's")
    axes.set_title("ood: final validation loss against tuned Adam (each baseline tuned per task on validation loss)")
    axes.legend(fontsize=8)
    axes.grid(True, axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv=None) -> Path:
    args = arguments(argv)
    out, sweeps = Path(args.out), Path(args.sweeps)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.optimizer).name if Path(args.optimizer).exists() else args.optimizer
    main_optimizer = f"{name}={args.optimizer}" if Path(args.optimizer).exists() else args.optimizer
    also_names = [entry.partition("=")[0] for entry in args.also]
    for suite_name, suite, seeds, baselines in SUITES:
        if suite_name not in args.suites:
            continue
        compared = [main_optimizer] + (args.also if suite_name in ("ood", "in_distribution") else [])
        workdir = sweeps / suite_name
        evaluate.run_suite(compared, suite, workdir, seeds=seeds, baselines=baselines, cache_dir=args.cache,
                           force=True)
        write_section(out / "sections", suite_name, None, name, workdir)
        if suite_name == "ood":
            ood_validation_plot(workdir, [name] + also_names, out / "ood_validation.png")
            one_setting.main([str(workdir), "--out", str(out / "one_setting_ood.md")])
        if suite_name == "stability":
            for plot in (workdir / "plots").glob("final_vs_width_*.png"):
                shutil.copy(plot, out / "width.png")
            shutil.copy(workdir / "plots" / f"curves_{slug(HORIZON_TASK)}.png", out / "horizon_10x.png")
    results = write_results(out / "results.md", out / "sections", [name for name, *_ in SUITES],
                            "The default learned optimizer against per-task tuned baselines",
                            "python -m benchmarks.default_results")
    print(f"wrote {results}")
    return results


if __name__ == "__main__":
    main()
