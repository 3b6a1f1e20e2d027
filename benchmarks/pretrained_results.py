"""The shipped optimizers against per-task tuned baselines: the README's results, reproduced with one
command.

    python -m benchmarks.pretrained_results [--mup mulo] [--sp former/sp_small_fc] [--suites ood,...]
        [--out benchmarks/results/pretrained] [--sweeps pretrained_sweeps]

Runs `evaluate` suites (each in SWEEPS/<suite>[_<steps>_steps]_<optimizer>/, with its own summary.md,
runs and plots): in_distribution and ood for both optimizers against every tuned baseline, on training
and validation loss (in_distribution: held-out samples of the meta-training family at its 1,000-step
horizon, the muP optimizer beside the theta its meta-training started from; ood: six models of other
families); width_mlp for both, at the meta-training horizon and at a 200-step budget (each optimizer on
MLPs of its own parameterization); horizon and other for the muP optimizer. Each sweep's summary is
written to OUT/sections/<sweep>.md and OUT/results.md gathers every section there, so `--suites` reruns
some suites and keeps the others' last results. Then draws the width-transfer plot of both, one panel
per budget, and copies the loss curves of representative tasks. Tuned baselines come from the evaluate
cache, so a second run only trains what changed. From an empty cache on a 2-core CPU: about three hours
for the width, horizon and other suites (half of it the 4,096-wide MLP at 1,000 steps), plus what the
README gives for in_distribution and ood.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from matplotlib.figure import Figure

import jax

import evaluate
import lopt
import meta_train
from checkpoints.files import write_atomically
from evaluate.plots import slug
from meta_train.train import save_optimizer
from meta_train.trainer import initial_theta

# (suite, which optimizers, steps (None: the meta-training horizon), seeds, baselines). The width,
# horizon and other suites keep to Adam (and muAdam at 200 steps): every baseline's 8 rates on the
# 4,096-wide MLP for 1,000 steps would add about 40 minutes each.
SUITES = (
    ("in_distribution", ("mup", "sp"), None, 3, evaluate.DEFAULT_BASELINES),
    ("ood", ("mup", "sp"), None, 3, evaluate.DEFAULT_BASELINES),
    ("width_mlp", ("mup", "sp"), None, 1, ("adam",)),
    ("width_mlp", ("mup", "sp"), 200, 1, ("adam", "muadam")),
    ("horizon", ("mup",), None, 1, ("adam",)),
    ("other", ("mup",), None, 2, ("adam",)),
)


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrained_results",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mup", default="mulo", help="the muP optimizer (name or checkpoint)")
    parser.add_argument("--sp", default="former/sp_small_fc", help="its standard-parameterization twin")
    parser.add_argument("--out", default="benchmarks/results/pretrained", help="where results.md and the plots go")
    parser.add_argument("--sweeps", default="pretrained_sweeps", help="where the evaluate sweeps run")
    parser.add_argument("--cache", default=None, help="baseline cache (default: evaluate's)")
    parser.add_argument("--suites", default=",".join(dict.fromkeys(suite for suite, *_ in SUITES)),
                        help="comma-separated suites to run (default: all); the others' sections stay")
    args = parser.parse_args(argv)
    known = [suite for suite, *_ in SUITES]
    args.suites = [name.strip() for name in args.suites.split(",") if name.strip()]
    unknown = [name for name in args.suites if name not in known]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; the benchmark runs {', '.join(dict.fromkeys(known))}")
    return args


def width_plot(panels: list[tuple[int, dict[str, evaluate.SweepResult]]], names: dict[str, str],
               path: Path) -> Path:
    """Final training loss against width, one panel per training budget: each learned optimizer on MLPs
    of its parameterization, tuned Adam (evaluate trains Adam on standard-parameterization MLPs, the same
    runs in both sweeps) and, where the sweep has it, tuned muAdam on the muP MLPs. A diverged run is a
    cross at the top of its panel."""
    figure = Figure(figsize=(6.0 * len(panels), 4.5))
    all_axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (steps, results) in zip(all_axes, panels):
        _width_panel(axes, steps, results, names)
    legend = {}  # one legend for the panels, with every line any of them draws
    for axes in all_axes:
        legend.update(zip(*reversed(axes.get_legend_handles_labels())))
    all_axes[0].legend(legend.values(), legend.keys(), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _width_panel(axes, steps: int, results: dict[str, evaluate.SweepResult], names: dict[str, str]) -> None:
    rows = [row for result in results.values() for row in result.summary]
    top = 2 * max(row["final_train_loss"] for row in rows if math.isfinite(row["final_train_loss"]))
    lines = [(names["mup"], results["mup"], "C0", f"{names['mup']} (muP MLPs)"),
             (names["sp"], results["sp"], "C3", f"{names['sp']} (standard MLPs)"),
             ("adam", results["mup"], "0.3", "per-width tuned Adam (standard MLPs)"),
             ("muadam", results["mup"], "C0", "per-width tuned muAdam (muP MLPs)")]
    for optimizer, result, color, label in lines:
        mine = sorted((row for row in result.summary if row["optimizer"] == optimizer), key=lambda row: row["x"])
        xs = [row["x"] for row in mine]
        losses = [row["final_train_loss"] if math.isfinite(row["final_train_loss"]) else math.nan for row in mine]
        if not xs:
            continue
        axes.plot(xs, losses, {"adam": "--", "muadam": ":"}.get(optimizer, "-"), marker="o", color=color, label=label)
        crossed = [x for x, loss in zip(xs, losses) if math.isnan(loss)]
        if crossed:
            axes.plot(crossed, [top] * len(crossed), "x", color=color, markersize=10)
    widths = sorted({row["x"] for row in rows})
    axes.axvspan(widths[0], max(widths) / 32, color="0.92", label="meta-training widths")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("hidden width")
    axes.set_ylabel("final training loss")
    axes.set_title(f"width transfer: MNIST 14x14 MLP, depth 2, {steps:,} steps")
    axes.grid(True, which="both", alpha=0.3)


def main(argv=None) -> Path:
    args = arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"mup": Path(args.mup).name, "sp": Path(args.sp).name}
    sources = {"mup": args.mup, "sp": args.sp}
    sections, width_panels = [], {}
    for suite, kinds, steps, seeds, baselines in SUITES:
        if suite not in args.suites:
            continue
        for kind in kinds:
            optimizer = f"{names[kind]}={sources[kind]}" if Path(sources[kind]).exists() else sources[kind]
            budget = "" if steps is None else f"_{steps}_steps"
            workdir = Path(args.sweeps) / f"{suite}{budget}_{names[kind]}"
            compared = [optimizer]
            if suite == "in_distribution" and kind == "mup":  # what meta-training added to its start
                compared.append(f"{names[kind]}_start={_save_start(sources[kind], Path(args.sweeps))}")
            result = evaluate.run_suite(compared, suite, workdir, steps=steps, seeds=seeds, baselines=baselines,
                                        cache_dir=args.cache, force=True)
            if suite == "width_mlp":
                width_panels.setdefault(steps, {})[kind] = result
            sections.append((suite, steps, names[kind], workdir))
            write_section(out / SECTIONS_DIR, suite, steps, names[kind], workdir)
    if width_panels:  # the meta-training horizon's panel first; each titled with the budget its runs had
        horizon_first = sorted(width_panels.items(), key=lambda item: item[0] is not None)
        width_plot([(results["mup"].summary[0]["steps"], results) for _, results in horizon_first], names,
                   out / "width_transfer.png")
    results = write_results(out / "results.md", out / SECTIONS_DIR)
    sweeps = {(suite, steps, name): workdir for suite, steps, name, workdir in sections}
    representative = []
    if ("in_distribution", None, names["mup"]) in sweeps:
        workdir = sweeps[("in_distribution", None, names["mup"])]
        representative.append((workdir, _median_speedup_task(workdir, names["mup"])))
    if ("other", None, names["mup"]) in sweeps:
        representative.append((sweeps[("other", None, names["mup"])], "conv mnist 14x14"))
    if ("ood", None, names["mup"]) in sweeps:
        representative += [(sweeps[("ood", None, names["mup"])], label) for label in OOD_CURVES]
    for workdir, label in representative:
        shutil.copy(workdir / "plots" / f"curves_{slug(label)}.png", out)
    print(f"wrote {results} and the curves of {', '.join(l for _, l in representative) or 'no task'}")
    return results


def _save_start(source: str, sweeps: Path) -> Path:
    """The theta the optimizer's meta-training run started from, saved where evaluate reads it, with the
    run's config as provenance (so its suites are built around the same family and horizon)."""
    provenance = lopt.load_optimizer(source)[2]["provenance"]
    config = meta_train.MetaTrainConfig(**provenance["config"])
    return save_optimizer(sweeps / f"start_{Path(source).name}", config, jax.device_get(initial_theta(config)), 0, 1,
                          None, provenance.get("preset"))


SECTIONS_DIR = "sections"
# Loss curves of ood tasks copied beside results.md: the language models, where the suite's verdicts differ.
OOD_CURVES = ("transformer shakespeare", "lstm shakespeare")


def _section_name(suite: str, steps: int | None, name: str) -> str:
    return f"{suite}{'' if steps is None else f'_{steps}_steps'}_{name}.md"


def results_folder(optimizer: str, prefix: str = "") -> Path:
    """A benchmark's default --out: benchmarks/results/PREFIX + the optimizer's name, so that measuring one
    optimizer never overwrites another's results."""
    return Path("benchmarks/results") / f"{prefix}{Path(optimizer).name}"


def write_section(directory: Path, suite: str, steps: int | None, name: str, workdir: Path) -> Path:
    """A sweep's summary.md under a heading naming the suite, its training budget where that is not the
    meta-training horizon, and the optimizer."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = (workdir / "summary.md").read_text().split("\n", 1)[1]  # drop its title line
    budget = "" if steps is None else f", {steps:,} steps"
    path = directory / _section_name(suite, steps, name)
    write_atomically(path, f"## {suite}{budget}: {name}\n{summary.strip()}\n")
    return path


def write_results(path: Path, sections: Path, suite_order: list[str] | None = None,
                  title: str = "Shipped learned optimizers against per-task tuned baselines",
                  command: str = "python -m benchmarks.pretrained_results") -> Path:
    """One markdown file of every section written so far, in the order of suite_order (default: SUITES)."""
    order = {suite: index for index, suite in enumerate(suite_order or [suite for suite, *_rest in SUITES])}
    files = sorted(sections.glob("*.md"), key=lambda file: (min((i for s, i in order.items()
                                                                 if file.name.startswith(s + "_")), default=99),
                                                            file.name))
    lines = [f"# {title}", "",
             f"Written by `{command}`; every section is the summary.md of one "
             "`python -m evaluate` sweep (in its --sweeps folder, with the runs and plots), as of the last "
             "run of its suite (each says how its validation loss was measured).", ""]
    for file in files:
        lines += [file.read_text().strip(), ""]
    path.write_text("\n".join(lines))
    return path


def _median_speedup_task(workdir: Path, optimizer: str) -> str:
    """The task on which the optimizer's speedup is the median of the sweep's: a representative one."""
    rows = sorted((row for row in json.loads((workdir / "summary.json").read_text())["rows"]
                   if row["optimizer"] == optimizer and row["speedup"] is not None), key=lambda row: row["speedup"])
    return rows[len(rows) // 2]["task"]


if __name__ == "__main__":
    main()
