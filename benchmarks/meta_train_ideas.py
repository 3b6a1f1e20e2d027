"""Ideas from the field against the main job, each the `default` preset otherwise, then every result and
the shipped default evaluated under the externally tuned protocol on `ood` and `in_distribution`.
The ES-Single estimator (`estimator=es_single`) is measured with the preset's mixed meta-objective,
against PES on the same objective with a validation-only one (`meta_loss_split=valid`), and against PES
meta-training all of theta (`meta_train_only=`), there also with the validation objective. ELO's expert
supervision and failure-aware resumption were measured here too, did not pay, and were removed from
meta_train (results/meta_train_ideas.md keeps their numbers; the git log, their code).

    python -m benchmarks.meta_train_ideas --runs runs/meta_train_ideas [--out benchmarks/results/meta_train_ideas.md]

Meta-training runs and sweeps already in --runs are kept (a stopped study continues where it was); a
variant added later is evaluated in a sweep of its own, and the report reads every summary.json under
--runs, so sweeps of other optimizers on the same suites and seeds (their baselines come from the shared
cache) are merged into one table per suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from checkpoints.files import write_atomically

VARIANTS = {  # name: the --set of `python -m meta_train --config default`
    "main_job": [],
    "es_single": ["estimator=es_single"],
    "pes_valid": ["meta_loss_split=valid"],
    "es_single_valid": ["estimator=es_single", "meta_loss_split=valid"],
    # All of theta (the MLP too), where the main job meta-trains 12 step-size and decay numbers: does
    # ES-Single's estimate hold the whole rule on course where PES's does not?
    "pes_all": ["meta_train_only="],
    "es_single_all": ["estimator=es_single", "meta_train_only="],
    "es_single_all_valid": ["estimator=es_single", "meta_train_only=", "meta_loss_split=valid"],
}
# Variants this study measured whose options were removed from meta_train after it (commit 99196c5 has
# them): their runs and sweeps, where --runs still holds them, are reported beside the others.
REMOVED_VARIANTS = {
    "expert_muon": ["expert=muon", "meta_train_only="],
    "failure_buffer": ["failure_buffer=4", "failure_share=0.25"],
}
SUITES = ("ood", "in_distribution")
BASELINES = ("adam", "adamw_cosine", "muon")


def meta_train(runs: Path) -> None:
    """Each variant not already meta-trained under --runs (a stopped one resumes)."""
    for name, changes in VARIANTS.items():
        if not (runs / name / "optimizer").is_dir():
            resume = ["--resume"] if (runs / name / "checkpoints").is_dir() else []
            subprocess.run([sys.executable, "-m", "meta_train", "--config", "default", "--workdir", str(runs / name),
                            "--no-compare", *resume, *(["--set", *changes] if changes else [])], check=True)


def meta_train_cost(runs: Path) -> str:
    """Each variant's outer steps and wall seconds, as its optimizer's provenance recorded them."""
    parts = []
    for name in [*VARIANTS, *REMOVED_VARIANTS]:
        spec = runs / name / "optimizer" / "spec.json"
        if spec.is_file():
            provenance = json.loads(spec.read_text())["provenance"]
            parts.append(f"{name} {provenance['outer_steps']} steps in {provenance['wall_seconds_last_invocation']:.0f} s "
                         f"({provenance['machine']})")
    return "; ".join(parts)


def evaluate(runs: Path) -> None:
    """Every learned optimizer not yet in a sweep of a suite under --runs, in one new sweep per suite named
    after them (earlier sweeps are kept: the report merges them, and their baselines are cached)."""
    optimizers = {"orthogonal_mlp": "orthogonal_mlp", **{name: f"{name}={runs / name / 'optimizer'}" for name in VARIANTS}}
    for suite in SUITES:
        done = {row["optimizer"] for summary in suite_summaries(runs, suite) for row in summary["rows"]}
        missing = [name for name in optimizers if name not in done]
        if missing:
            subprocess.run([sys.executable, "-m", "evaluate", *(arg for name in missing for arg in ("--optimizer", optimizers[name])),
                            "--suite", suite, "--baselines", ",".join(BASELINES),
                            "--workdir", str(runs / f"{suite}-{'+'.join(missing)}")], check=True)


def suite_summaries(runs: Path, suite: str) -> list[dict]:
    """The externally tuned sweeps of one suite under --runs."""
    return [summary for summary in (json.loads(path.read_text()) for path in sorted(runs.glob("*/summary.json")))
            if summary["suite"] == suite and summary["protocol"]["tuning"] == "external"]


def mean_and_error(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0)


def suite_rows(summaries: list[dict]) -> dict[str, dict[str, dict]]:
    """{task: {optimizer: row}} over every sweep of one suite."""
    tasks: dict[str, dict[str, dict]] = {}
    for summary in summaries:
        for row in summary["rows"]:
            tasks.setdefault(row["task"], {})[row["optimizer"]] = row
    return tasks


def table(tasks: dict[str, dict[str, dict]], learned: list[str], metric: str) -> list[str]:
    """Mean +- standard error over the evaluation seeds of each final loss; the learned columns first."""
    field = {"valid": "final_valid_losses", "train": "final_train_losses"}[metric]
    columns = learned + [b for b in BASELINES]
    lines = [f"| task ({metric}) | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for task, rows in tasks.items():
        cells = []
        for name in columns:
            if name not in rows:
                cells.append("")
                continue
            mean, error = mean_and_error([float(v) for v in rows[name][field]])
            cells.append(f"{mean:.4g} ± {error:.2g}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def counts(tasks: dict[str, dict[str, dict]], learned: str, metric: str) -> str:
    """Wins / ties / losses of one learned optimizer against each tuned baseline: a win is a lower mean
    outside both standard errors (evaluate.counts' rule)."""
    field = {"valid": "final_valid_losses", "train": "final_train_losses"}[metric]
    parts = []
    for baseline in BASELINES:
        tally = [0, 0, 0]
        for rows in tasks.values():
            if learned not in rows or baseline not in rows:
                continue
            (mine, my_error), (theirs, their_error) = (mean_and_error([float(v) for v in rows[n][field]])
                                                       for n in (learned, baseline))
            tally[0 if mine + my_error < theirs - their_error else 2 if mine - my_error > theirs + their_error else 1] += 1
        parts.append(f"{baseline} {tally[0]}/{tally[1]}/{tally[2]}")
    return ", ".join(parts)


def median_ratio(tasks: dict[str, dict[str, dict]], learned: str, baseline: str, metric: str) -> float:
    """The median over tasks of the learned optimizer's mean final loss over the baseline's."""
    field = {"valid": "final_valid_losses", "train": "final_train_losses"}[metric]
    return statistics.median(statistics.fmean(map(float, rows[learned][field])) / statistics.fmean(map(float, rows[baseline][field]))
                             for rows in tasks.values() if learned in rows and baseline in rows)


def report(runs: Path) -> str:
    lines = ["# Ideas from the field against the main job", "",
             "`python -m benchmarks.meta_train_ideas --runs runs/meta_train_ideas`", "",
             "Each variant is the `default` preset (PES, 500 outer steps, the mixed family) changed as given; "
             "`main_job` is the preset itself: " + "; ".join(
                 f"`{name}` (`{' '.join(changes)}`)" for name, changes in {**VARIANTS, **REMOVED_VARIANTS}.items()
                 if changes) + ". Expert supervision (`expert_muon`) and the failure buffer (`failure_buffer`) "
             "did not pay and were removed from `meta_train` after this study (commit 99196c5 has them). "
             "Evaluated with `python -m evaluate` under the externally "
             "tuned protocol: each baseline's rate chosen on tuning seeds 1000-1001, every figure on "
             "evaluation seeds 0-2; mean ± standard error over those seeds of the final loss.", ""]
    cost = meta_train_cost(runs)
    if cost:
        lines += [f"Meta-training, the wall time of each run's last invocation (runs that shared the machine took "
                  f"longer): {cost}.", ""]
    for suite in SUITES:
        summaries = suite_summaries(runs, suite)
        if not summaries:
            continue
        tasks = suite_rows(summaries)
        learned = [name for name in ["orthogonal_mlp", *VARIANTS, *REMOVED_VARIANTS]
                   if any(name in rows for rows in tasks.values())]
        lines += [f"## {suite}", ""]
        for metric in ("valid", "train"):
            lines += table(tasks, learned, metric) + [""]
            lines += [f"- `{name}` wins/ties/losses on {metric} loss: {counts(tasks, name, metric)}; median ratio to "
                      f"tuned Muon {median_ratio(tasks, name, 'muon', metric):.3f}" for name in learned]
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="directory of the meta-training runs and sweeps")
    parser.add_argument("--out", default="benchmarks/results/meta_train_ideas.md")
    parser.add_argument("--report-only", action="store_true", help="write the report from the sweeps there")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    if not args.report_only:
        meta_train(runs)
        evaluate(runs)
    text = report(runs)
    write_atomically(args.out, text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
