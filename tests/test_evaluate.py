"""Generalization sweeps: a tiny suite end to end, the metrics on curves with known answers, the run
cache, resuming, and the messages bad input gets."""

import csv
import importlib
import json
import math
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import checkpoints
import evaluate
import lopt
import tasks
from evaluate import metrics, runner
from tests.lopt_helpers import normalized_descent_theta

STEPS = 20
PINNED_ADAM_FINAL_LOSS = 1.28076  # seed 0, Adam at 0.01, "digits width 16", 20 steps (STORE_VERSION 1)


@pytest.fixture(scope="module")
def tiny_suite():
    return evaluate.Suite("tiny", "two digit MLPs", (
        evaluate.SuiteTask("digits width 16", tasks.task_config("mlp_digits_8x8", width=16, batch_size=32),
                           STEPS, "width", 16),
        evaluate.SuiteTask("digits width 32", tasks.task_config("mlp_digits_8x8", width=32, batch_size=32),
                           STEPS, "width", 32)))


@pytest.fixture(scope="module")
def learned_checkpoint(tmp_path_factory):
    optimizer = lopt.MLPLOpt(hidden_size=16)  # above 8, matmuls: compiles faster than the elementwise MLP
    return lopt.save(tmp_path_factory.mktemp("lo") / "descent", optimizer, normalized_descent_theta(optimizer, 0.05))


@pytest.fixture(scope="module")
def sweep(tiny_suite, learned_checkpoint, tmp_path_factory):
    """The tiny suite run once: a learned optimizer and tuned Adam, two seeds. Adam's grid runs on the
    reported seeds (tuning="same_seeds"), so every rate's runs are there to check; tests/test_protocol.py
    covers the default ruleset."""
    root = tmp_path_factory.mktemp("sweep")
    start = time.perf_counter()
    result = evaluate.run_suite([learned_checkpoint], tiny_suite, root / "work", seeds=2, baselines=["adam"],
                                tuning="same_seeds", cache_dir=root / "cache", log=lambda line: None)
    return result, time.perf_counter() - start, root


def test_a_sweep_writes_every_output(sweep):
    result, _, root = sweep
    work = root / "work"
    for name in ("runs.csv", "runs.json", "summary.csv", "summary.json", "summary.md", "sweep.json"):
        assert (work / name).stat().st_size > 0, name
    plots = sorted(path.name for path in (work / "plots").iterdir())
    assert plots == ["curves_digits_width_16.png", "curves_digits_width_32.png", "final_vs_width_image_mlp.png",
                     "speedup.png"]
    for name in plots:
        assert imread(work / "plots" / name).shape[0] > 100
    for run in (work / "tensorboard").iterdir():  # one event file per optimizer, whatever its task count
        assert len(list(run.iterdir())) == 1, sorted(run.iterdir())
    accumulator = EventAccumulator(str(work / "tensorboard" / "adam"))
    accumulator.Reload()
    losses = accumulator.Scalars("digits width 16/train_loss")
    assert [event.step for event in losses] == list(range(STEPS + 1))
    unit = next(u for u in result.units if u.optimizer.name == "adam" and u.task.label == "digits width 16")
    np.testing.assert_allclose([event.value for event in losses], unit.curve(), rtol=1e-6)


def test_the_tables_match_the_recorded_curves(sweep):
    result, _, root = sweep
    work = root / "work"
    with open(work / "runs.csv") as file:
        runs = list(csv.DictReader(file))
    with open(work / "summary.csv") as file:
        summary = list(csv.DictReader(file))
    assert len(runs) == 2 * (1 + 8) * 2 * (STEPS + 1)  # tasks x candidates x seeds x record points
    markdown = (work / "summary.md").read_text()
    for row in summary:
        last = [float(r["train_loss"]) for r in runs if r["task"] == row["task"] and r["optimizer"] == row["optimizer"]
                and r["chosen"] == "True" and int(r["step"]) == STEPS]
        assert len(last) == 2  # seeds
        assert float(row["final_train_loss"]) == pytest.approx(np.mean(last), rel=1e-6)
        assert f"| {row['task']} | {row['optimizer']} | {float(row['final_train_loss']):.4g} |" in markdown
    # Tuned Adam's choice is the learning rate with the lowest final training loss.
    adam = [r for r in runs if r["optimizer"] == "adam" and r["task"] == "digits width 16" and int(r["step"]) == STEPS]
    by_rate = {}
    for r in adam:
        by_rate.setdefault(r["candidate"], []).append(float(r["train_loss"]))
    best = min(by_rate, key=lambda rate: np.mean(by_rate[rate]))
    assert {r["candidate"] for r in adam if r["chosen"] == "True"} == {best}
    records = json.loads((work / "runs.json").read_text())
    assert {record["config"]["parameterization"] for record in records if record["optimizer"] == "adam"} == {"sp"}
    assert {record["config"]["parameterization"] for record in records if record["optimizer"] == "descent"} == {"mup"}


def test_the_learned_optimizer_trains_and_is_scored_against_adam(sweep):
    result, _, _ = sweep
    rows = [row for row in result.summary if row["optimizer"] == "descent"]
    assert all(row["final_train_loss"] < 0.9 * math.log(10) for row in rows)
    assert all(row["speedup"] is not None and row["speedup"] > 0 for row in rows)
    overall = {entry["optimizer"]: entry for entry in result.overall}
    assert overall["descent"]["train_win_rate_vs_adam"] in (0.0, 0.5, 1.0)
    assert overall["descent"]["valid_win_rate_vs_adam"] in (0.0, 0.5, 1.0)
    assert overall["descent"]["mean_rank"] + overall["adam"]["mean_rank"] == pytest.approx(3.0)


def test_one_setting_scores_every_rate_as_the_learned_optimizer_is_scored(sweep, capsys, tmp_path):
    from benchmarks import one_setting
    result, _, root = sweep
    task_names, scored, adam = one_setting.settings(root / "work")
    overall = {entry["optimizer"]: entry for entry in result.overall}
    learned = next(name for name in overall if name != "adam")
    wins = sum(scored[(learned, "theta")][task]["valid"] < adam[task]["final_valid_loss"] for task in task_names)
    assert wins == overall[learned]["valid_wins_vs_adam"]
    # No rate of Adam beats tuned Adam, which is its best rate per task: a tie is not a win.
    for (optimizer, candidate), by_task in scored.items():
        if optimizer == "adam":
            assert all(by_task[task]["train"] >= adam[task]["final_train_loss"] for task in task_names)
    one_setting.main([str(root / "work")])
    printed = capsys.readouterr().out
    assert f"| {learned} theta | {wins}/2 " in printed and "settings below both" in printed
    with pytest.raises(SystemExit) as refused:  # not a sweep's workdir: one line, exit 2
        one_setting.main([str(tmp_path)])
    assert refused.value.code == 2 and "holds no runs.json" in capsys.readouterr().err


def test_the_weight_decay_table_scores_its_per_task_pick_as_the_summary_scores_one_optimizer(sweep):
    from benchmarks import weight_decay
    result, _, _ = sweep
    overall = {entry["optimizer"]: entry for entry in result.overall}
    learned = next(name for name in overall if name != "adam")
    lines = weight_decay.variant_table(result.summary, [learned])
    # With one candidate the per-task pick is that optimizer: its wins are the summary's.
    assert f"{overall[learned]['valid_wins_vs_adam']}/2 against tuned Adam" in lines[-1]
    assert sum(line.startswith("| ") for line in lines) == 2 + 2  # header, rule, one row a task


def test_the_weight_decay_benchmark_saves_each_variant_and_refuses_bad_lists(tmp_path, capsys):
    from benchmarks import weight_decay
    for argv, message in ((["--fit-gains", "2,x"], "--fit-gains: '2,x' is not a comma-separated list"),
                          (["--decays", "none"], "--decays and --fit-gains are both 'none'"),
                          (["--decays", "0,1"], "--decays: every value must be a positive number"),
                          (["--suite", "missing.json"], "--suite: suite file missing.json does not exist")):
        with pytest.raises(SystemExit) as refused:
            weight_decay.arguments(argv)
        assert refused.value.code == 2 and message in capsys.readouterr().err
    args = weight_decay.arguments(["--optimizer", "orthogonal_mlp", "--decays", "0.3", "--fit-gains=-1,3"])
    label, entries = weight_decay.save_variants("orthogonal_mlp", args.loaded, args.decays, tmp_path, args.fit_gains)
    assert [entry.partition("=")[0] for entry in entries] == [
        "orthogonal_mlp_wd0.3", "orthogonal_mlp_fit-1", "orthogonal_mlp_fit3"]
    optimizer, theta, _ = lopt.load_optimizer(entries[-1].partition("=")[2])
    assert optimizer.fit_decay and theta["fit_decay"].tolist() == [3.0, 0.0]
    assert float(optimizer.decoupled_weight_decay(theta)) == pytest.approx(
        float(args.loaded[0].decoupled_weight_decay(args.loaded[1])))


def test_the_text_sample_benchmark_loads_what_lopt_loads_and_refuses_the_rest(capsys):
    from benchmarks import text_valid_sample
    for argv, message in ((["--optimizer", "nope"], "--optimizer 'nope': 'nope' is neither a shipped"),
                          (["--schedule", "bogus"], "--schedule 'bogus': NormalizedMLPLOpt.schedule='bogus': one of"),
                          (["--task", "mlp_mnist_8x8"], "--task 'mlp_mnist_8x8': give a registered text task")):
        with pytest.raises(SystemExit) as refused:
            text_valid_sample.arguments(argv)
        assert refused.value.code == 2 and message in capsys.readouterr().err
    args = text_valid_sample.arguments(["--schedule", "linear"])
    assert args.optimizer == "orthogonal_mlp (linear)" and args.learned[0].schedule == "linear"


def test_the_group_scales_benchmark_scales_only_the_named_groups_and_refuses_bad_pairs(tmp_path, capsys):
    from benchmarks import group_scales
    for argv, message in ((["--scales", "hidden=x"], "'hidden=x' is not GROUP=FACTOR"),
                          (["--scales", "embeddings=2"], "'embeddings=2' is not GROUP=FACTOR"),
                          (["--scales", "conv=2", "--first-seed", "-1"], "--first-seed: -1 is negative"),
                          (["--scales", "conv=2", "--first-seed", "999"], "--first-seed: tuning seeds 1000-1001 overlap"),
                          (["--scales", "hidden=0"], "'hidden=0' is not GROUP=FACTOR"),
                          (["--scales", "hidden=2", "--baselines", "adam,lion"], "--baselines: lion"),
                          (["--scales", "hidden=2", "--optimizer", "mulo"], "no learned group step"),
                          (["--scales", "hidden=2", "--baselines", "muon"], "--baselines: must include adam"),
                          (["--scales", "hidden=2,hidden=3"], "names hidden twice"),
                          (["--scales", "hidden=2", "--scales", "hidden=2.0"], "would both be saved as"),
                          (["--scales", "hidden=2", "--suite", "no_such_suite"], "--suite: unknown suite")):
        with pytest.raises(SystemExit) as refused:
            group_scales.arguments(argv)
        assert refused.value.code == 2 and message in capsys.readouterr().err
    mine = lopt.save(tmp_path / "mine", *lopt.load_optimizer("orthogonal_mlp")[:2])
    args = group_scales.arguments(["--optimizer", str(mine), "--scales", "hidden=2"])
    assert args.out == Path("benchmarks/results/group_scales_mine")  # never another optimizer's
    args = group_scales.arguments(["--optimizer", "orthogonal_mlp", "--scales", "hidden=2", "--scales", "input=0.5,output=3"])
    label, entries = group_scales.save_variants("orthogonal_mlp", args.loaded, args.scales, tmp_path)
    assert [entry.partition("=")[0] for entry in entries] == [
        "orthogonal_mlp_hidden2", "orthogonal_mlp_input0.5_output3"]
    optimizer, original, _ = args.loaded
    _, theta, spec = lopt.load_optimizer(entries[1].partition("=")[2])
    ratio = dict(zip(optimizer.groups, np.exp(np.asarray(theta["log_group_scales"])
                                              - np.asarray(original["log_group_scales"]))))
    assert ratio == pytest.approx({"hidden": 1.0, "input": 0.5, "output": 3.0, "vector": 1.0})
    assert spec["provenance"]["preset"] == "orthogonal_mlp"  # the original's scope, for the suite
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(theta["mlp"]), jax.tree.leaves(original["mlp"])))
    # conv and embedding are settings of the rule, multiplied; theta stays as it was.
    args = group_scales.arguments(["--optimizer", "orthogonal_mlp", "--scales", "conv=0.5,embedding=3"])
    _, entries = group_scales.save_variants("orthogonal_mlp", args.loaded, args.scales, tmp_path)
    variant, theta, _ = lopt.load_optimizer(entries[0].partition("=")[2])
    assert (variant.conv_step, variant.embedding_step) == (2.5, 15.0) and variant.fit_decay
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(original)))


def test_a_sweep_can_run_on_other_seeds_than_evaluations(tiny_suite, tmp_path):
    one = evaluate.Suite("one", "", tiny_suite.tasks[:1])
    finals = {}
    for first in (0, 7):
        result = evaluate.run_suite(["adam@0.003"], one, tmp_path / f"from{first}", seeds=1, first_seed=first,
                                    baselines=[], cache_dir=tmp_path / "cache", log=lambda line: None)
        finals[first] = result.summary[0]["final_train_loss"]
        assert json.loads((tmp_path / f"from{first}" / "sweep.json").read_text())["seeds"] == [first]
        assert {row["seed"] for row in json.loads((tmp_path / f"from{first}" / "runs.json").read_text())} == {first}
    assert finals[0] != finals[7]
    with pytest.raises(evaluate.SweepError, match="first_seed=-1: must be a non-negative integer"):
        evaluate.run_suite(["adam@0.003"], one, tmp_path / "bad", first_seed=-1, baselines=[])


def test_runs_come_from_the_cache_on_a_second_sweep_until_the_rules_code_changes(sweep, tiny_suite, learned_checkpoint,
                                                                                 monkeypatch):
    _, first_seconds, root = sweep
    # Compiled programs are kept in the process: forget them, or retraining would look almost free.
    monkeypatch.setattr(runner, "_PROGRAMS", {})
    monkeypatch.setattr(runner, "_INITIAL_POINTS", {})
    trained = []
    original = runner.run_groups
    monkeypatch.setattr(runner, "run_groups", lambda task, optimizer, *args, **kwargs: trained.append(optimizer.name)
                        or original(task, optimizer, *args, **kwargs))
    arguments = dict(seeds=2, baselines=["adam"], tuning="same_seeds", cache_dir=root / "cache", log=lambda line: None)
    start = time.perf_counter()
    result = evaluate.run_suite([learned_checkpoint], tiny_suite, root / "other_work", **arguments)
    seconds = time.perf_counter() - start
    assert trained == []  # a new workdir, and nothing trains: the learned runs are cached as the baselines' are
    assert [unit.reused for unit in result.units] == [2, 16, 2, 16]
    # Reading the cache, the summary and the plots cost well under training did.
    assert seconds < 0.5 * first_seconds, (seconds, first_seconds)
    # An edit of the code the learned rule runs (lopt, or the module of a user's own architecture) is a new
    # identity: its runs train anew, the baselines' are still read back.
    monkeypatch.setattr(evaluate.optimizers, "code_digest", lambda optimizer: "edited")
    one_task = evaluate.Suite("one", "", tiny_suite.tasks[:1])
    evaluate.run_suite([learned_checkpoint], one_task, root / "edited_work", **arguments)
    assert trained == ["descent"]


def test_the_code_digest_follows_the_source_of_a_users_architecture(tmp_path, monkeypatch):
    module = tmp_path / "my_architecture.py"
    module.write_text("import lopt\n\nclass Mine(lopt.MLPLOpt):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = importlib.import_module("my_architecture").Mine(hidden_size=4)
    before = evaluate.optimizers.code_digest(mine)
    assert evaluate.optimizers.code_digest(lopt.MLPLOpt(hidden_size=4)) != before  # lopt's own: lopt's source alone
    module.write_text(module.read_text() + "# an edit\n")
    assert evaluate.optimizers.code_digest(mine) != before
    # A base class of the user's in another module counts too.
    (tmp_path / "my_derived.py").write_text("import my_architecture\n\nclass Derived(my_architecture.Mine):\n    pass\n")
    derived = importlib.import_module("my_derived").Derived(hidden_size=4)
    edited_base = evaluate.optimizers.code_digest(derived)
    module.write_text(module.read_text() + "# another edit\n")
    assert evaluate.optimizers.code_digest(derived) != edited_base
    # A class with no source file (defined in a notebook cell or on stdin) is refused in one line.
    notebook = types.ModuleType("notebook_cell")
    monkeypatch.setitem(sys.modules, "notebook_cell", notebook)
    exec("import lopt\nclass Cell(lopt.MLPLOpt):\n    pass\n", notebook.__dict__)
    with pytest.raises(evaluate.OptimizerError, match="Cell is defined outside a source file .* define it in a module"):
        evaluate.optimizers.code_digest(notebook.Cell(hidden_size=4))


def test_runs_a_concurrent_sweep_caches_after_planning_are_read_not_retrained(sweep, tiny_suite, learned_checkpoint,
                                                                            tmp_path, monkeypatch):
    _, _, root = sweep
    cache = tmp_path / "cache"
    original, calls = runner.run_groups, []

    def another_sweep_finishes_first(task, optimizer, *args, **kwargs):
        if not calls:  # while this sweep trains its first unit (the learned one), the other stores tuned Adam
            shutil.copytree(root / "cache", cache, dirs_exist_ok=True)
        calls.append(optimizer.name)
        return original(task, optimizer, *args, **kwargs)

    monkeypatch.setattr(runner, "run_groups", another_sweep_finishes_first)
    result = evaluate.run_suite([learned_checkpoint], tiny_suite, tmp_path / "work", seeds=2, baselines=["adam"],
                                tuning="same_seeds", cache_dir=cache, log=lambda line: None)
    # Planned as missing on both tasks, tuned Adam and the second task's learned runs were found before they ran.
    assert calls == ["descent"]
    assert all(unit.reused == 16 and unit.seconds == 0.0 for unit in result.units if unit.optimizer.name == "adam")


def test_an_interrupted_sweep_resumes_where_it_stopped(sweep, tiny_suite, learned_checkpoint, tmp_path, monkeypatch):
    original = runner.run_groups
    calls = []

    def crash_on_second_unit(task, optimizer, *args, **kwargs):
        calls.append(optimizer.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(task, optimizer, *args, **kwargs)

    monkeypatch.setattr(runner, "run_groups", crash_on_second_unit)
    arguments = dict(seeds=2, baselines=["adam@0.01"], cache_dir=tmp_path / "cache", log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run_suite([learned_checkpoint], tiny_suite, tmp_path / "work", **arguments)
    calls.clear()
    monkeypatch.setattr(runner, "run_groups", lambda task, optimizer, *args, **kwargs: calls.append(optimizer.name)
                        or original(task, optimizer, *args, **kwargs))
    result = evaluate.run_suite([learned_checkpoint], tiny_suite, tmp_path / "work", **arguments)
    assert calls == ["adam@0.01", "descent", "adam@0.01"]  # the first unit was finished before the crash
    assert result.units[0].reused == 2
    # Adam at 0.01 ran here 2 runs at a time, in the first sweep 16 at a time: vmapping runs together
    # changes none of them beyond float rounding.
    tuned = next(unit for unit in sweep[0].units if unit.optimizer.name == "adam")
    fixed = next(unit for unit in result.units if unit.optimizer.name == "adam@0.01")
    for alone, together in zip(fixed.runs["lr=0.01"], tuned.runs["lr=0.01"]):
        np.testing.assert_allclose(alone.train_loss, together.train_loss, rtol=1e-5)


def test_steps_to_reach_and_speedup_on_curves_with_known_answers():
    steps = [0, 10, 20, 30, 40]
    reference = [4.0, 3.0, 2.0, 1.5, 1.0]  # tuned Adam ends at 1.0 after 40 steps
    twice_as_fast = [4.0, 2.0, 1.0, 0.5, 0.25]  # reaches 1.0 at step 20
    assert metrics.steps_to_reach(steps, twice_as_fast, 1.0) == 20
    assert metrics.speedup(steps, twice_as_fast, reference) == pytest.approx(2.0)
    # Between record points the crossing is interpolated: 1.0 lies a third of the way from 1.5 to 0.0.
    assert metrics.steps_to_reach(steps, [4.0, 3.0, 1.5, 0.0, 0.0], 1.0) == pytest.approx(20 + 10 / 3)
    # Never reaching Adam's final loss: Adam's steps to reach this optimizer's final loss over the budget.
    slower = [4.0, 3.5, 3.0, 2.5, 2.0]
    assert metrics.steps_to_reach(steps, slower, 1.0) is None
    assert metrics.speedup(steps, slower, reference) == pytest.approx(20 / 40)
    assert metrics.speedup(steps, [4.0, 3.0, math.inf, math.inf, math.inf], reference) == 0.0
    assert metrics.speedup(steps, reference, reference) == 1.0
    # A reference that dips below its final loss and rises again first reached it at step 20, not 40.
    bumpy = [4.0, 3.0, 1.0, 1.1, 1.2]  # ends at 1.2, first crossed at step 10 + 10 * 1.8 / 2.0 = 19
    assert metrics.speedup(steps, bumpy, bumpy) == 1.0
    assert metrics.speedup(steps, twice_as_fast, bumpy) == pytest.approx(19 / 18)  # 2.0 -> 1.0 crosses 1.2 at 18
    assert metrics.diverged([4.0, 3.0, math.nan]) and metrics.diverged([1.0, 2.0]) and not metrics.diverged(reference)
    assert metrics.ranks([0.5, 0.1, math.inf, 0.1]) == [3.0, 1.5, 4.0, 1.5]
    assert metrics.win_rate([0.5, 0.1, 1.0], [0.6, 0.2, math.inf]) == 1.0
    assert list(metrics.mean_curve([[1.0, 2.0], [3.0, math.nan]])) == [2.0, math.inf]


def test_suites_are_built_around_the_meta_training_scope():
    scope = evaluate.MetaTrainingScope(family="mlp_images", horizon=500)
    width = evaluate.build_suite("width", scope)
    mlp = [task.x for task in width.tasks if task.config.kind == "image_mlp"]
    assert mlp == [32, 64, 128, 256, 512, 1024, 2048, 4096]  # the family's widths, then up to 32x the widest
    assert [task.x for task in width.tasks if task.config.kind == "language_model"] == [64, 128, 256, 512, 1024]
    assert [task.x for task in evaluate.build_suite("depth", scope).tasks] == [1, 2, 4, 8]
    assert [task.num_steps for task in evaluate.build_suite("horizon", scope).tasks] == [500, 1500, 5000]
    in_distribution = evaluate.build_suite("in_distribution", scope, steps=300)
    family = tasks.get_family("mlp_images")
    assert len(in_distribution.tasks) == 8 and all(task.num_steps == 300 for task in in_distribution.tasks)
    assert all(task.config.width in family.widths for task in in_distribution.tasks)
    spec = {"provenance": {"config": {"task_family": "mlp_images_wide", "max_inner_length": 200}}}
    assert evaluate.MetaTrainingScope.from_spec(spec) == evaluate.MetaTrainingScope("mlp_images_wide", 200)
    # A standard-parameterization optimizer is swept over standard-parameterization models.
    sp_scope = evaluate.MetaTrainingScope(family="mlp_images_sp", horizon=500)
    for name in ("width_mlp", "depth", "horizon", "in_distribution"):
        assert {task.config.parameterization for task in evaluate.build_suite(name, sp_scope).tasks} == {"sp"}
    assert {task.config.parameterization for task in width.tasks} == {"mup"}


def test_a_custom_suite_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "tasks": [
        {"task": "mlp_digits_8x8", "set": {"width": 8}, "steps": 10},
        {"task": "quadratic_10d", "steps": 30, "label": "quadratic"}]}))
    suite = evaluate.build_suite(path, evaluate.MetaTrainingScope())
    assert [(task.label, task.num_steps) for task in suite.tasks] == [("mlp_digits_8x8 width=8", 10), ("quadratic", 30)]
    path.write_text(json.dumps({"tasks": [{"task": "mlp_digits_8x8", "set": {"widht": 8}}]}))
    with pytest.raises(evaluate.SuiteError, match=r"task 0: .*has no field widht"):
        evaluate.build_suite(path, evaluate.MetaTrainingScope())
    path.write_text(json.dumps({"tasks": [{"task": "my_module:HELD_OUT"}]}))
    with pytest.raises(evaluate.SuiteError, match=r"task 0: 'my_module:HELD_OUT' is an import path; .* --suite my_module:HELD_OUT"):
        evaluate.build_suite(path, evaluate.MetaTrainingScope())
    path.write_text(json.dumps({"tasks": [{"task": "mlp_digits_8x8", "axis": "width"}]}))
    with pytest.raises(evaluate.SuiteError, match=r"give both an axis and its value x"):
        evaluate.build_suite(path, evaluate.MetaTrainingScope())
    path.write_text(json.dumps({"tasks": [{"task": "mlp_digits_8x8", "set": {"parameterization": "sp"}}]}))
    assert evaluate.build_suite(path, evaluate.MetaTrainingScope()).tasks[0].keep_parameterization


def test_bad_input_gets_a_clear_message(tiny_suite, learned_checkpoint, tmp_path):
    with pytest.raises(evaluate.SuiteError, match=r"unknown suite 'widths'; suites: in_distribution, width"):
        evaluate.build_suite("widths", evaluate.MetaTrainingScope())
    with pytest.raises(evaluate.OptimizerError, match=r"unknown optimizer 'adamm': not a baseline \(adam, adamw"):
        evaluate.resolve("adamm")
    with pytest.raises(evaluate.OptimizerError, match=r"learning rate after '@' must be a number"):
        evaluate.resolve("adam@fast")
    assert evaluate.resolve(f"mine={learned_checkpoint}").name == "mine"
    not_an_optimizer = checkpoints.save(tmp_path / "weights", {"w": np.zeros(3, np.float32)}, {"model": "mlp"})
    with pytest.raises(evaluate.OptimizerError, match=r"not a learned optimizer we can load: .*holds no learned"):
        evaluate.resolve(not_an_optimizer)
    huge = evaluate.Suite("huge", "", (evaluate.SuiteTask("mlp width 2^17", tasks.task_config(
        "mlp_mnist_14x14", width=2 ** 17), 10),))
    with pytest.raises(evaluate.TooLargeError, match=r"one run needs about \d+\.\d GiB \(17207\.1M parameters"):
        evaluate.run_suite(["adam@0.001"], huge, tmp_path / "huge", baselines=[], cache_dir=tmp_path / "cache")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(evaluate.SweepError, match=r"not empty and holds no sweep"):
        evaluate.run_suite(["adam@0.001"], tiny_suite, tmp_path / "busy", baselines=[], cache_dir=tmp_path / "cache")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    missing_data = evaluate.Suite("files", "", (evaluate.SuiteTask("my data", tasks.task_config(
        "mlp_mnist_14x14", dataset=f"npz:{tmp_path / 'nope.npz'}"), 10),))
    with pytest.raises(evaluate.SuiteError, match=r"task 'my data' cannot be built: .*nope.npz"):
        evaluate.run_suite(["adam@0.001"], missing_data, tmp_path / "fresh", baselines=[], cache_dir=tmp_path / "c")
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "huge").exists()  # refused before writing


def test_a_workdir_holding_another_sweep_is_refused_unless_forced(sweep, tiny_suite, tmp_path):
    _, _, root = sweep
    work = tmp_path / "work"
    shutil.copytree(root / "work", work)
    other = evaluate.Suite("one", "", tiny_suite.tasks[:1])
    arguments = dict(seeds=2, baselines=["adam@0.01"], cache_dir=root / "cache", log=lambda line: None)
    with pytest.raises(evaluate.SweepError, match=r"holds another sweep \(it differs in: suite, tasks, optimizers"):
        evaluate.run_suite([], other, work, **arguments)
    runs_before = {path.name for path in (root / "cache").iterdir()}
    result = evaluate.run_suite([], other, work, force=True, **arguments)
    # Adam at 0.01 alone is another program than the tuned grid's 16 runs in the cache: trained anew.
    assert [unit.reused for unit in result.units] == [0]
    assert runs_before < {path.name for path in (root / "cache").iterdir()}  # kept, and the new run added
    assert sorted(path.name for path in (work / "plots").iterdir()) == ["curves_digits_width_16.png"]
    assert "digits width 32" not in (work / "summary.md").read_text()


def test_recorded_runs_are_pinned(sweep):
    """A change of code that changes what a run records must bump evaluate.store.STORE_VERSION, or
    cached baselines of the old code would be reused: update this number when bumping it."""
    if jax.default_backend() != "cpu":
        pytest.skip("pinned on CPU; accelerators round matmuls differently")
    unit = next(u for u in sweep[0].units if u.optimizer.name == "adam" and u.task.label == "digits width 16")
    assert unit.runs["lr=0.01"][0].train_loss[-1] == pytest.approx(PINNED_ADAM_FINAL_LOSS, rel=1e-4), \
        "runs changed: bump evaluate.store.STORE_VERSION and update PINNED_ADAM_FINAL_LOSS"


def test_the_command_line_reports_bad_input(capsys):
    from evaluate.__main__ import main

    assert main(["--suite", "nope", "--workdir", "unused"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_a_budget_the_stride_does_not_divide_ends_with_a_shorter_interval():
    task = tasks.get_task("mlp_digits_8x8", width=8, batch_size=16, parameterization="sp")
    curves, = runner.run(task, evaluate.baseline("adam@0.01"), [(0, 0)], 7, 3, 1)
    assert curves.steps == (0, 3, 6, 7) and len(curves.train_loss) == len(curves.valid_loss) == 4
    assert np.all(np.isfinite(curves.train_loss))
    assert curves.valid_loss[-1] != curves.valid_loss[-2]  # the last point is one step further on
    assert runner.default_stride(997) == 20 and runner.record_steps(997, 20)[-2:] == (980, 997)


def test_muon_orthogonalizes_only_the_hidden_matrices():
    from lopt.baselines import ADAMW_WEIGHT_DECAY
    from lopt.harness import muon_dimension_numbers

    task = tasks.get_task("mlp_digits_8x8", width=32, depth=2, parameterization="sp")
    key = jax.random.key(0)
    params = task.init(key)
    roles = task.roles(params)
    chosen = muon_dimension_numbers(roles)(params)
    is_spec = lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers)
    assert [jax.tree_util.keystr(path) for path, spec in jax.tree_util.tree_flatten_with_path(
        chosen, is_leaf=is_spec)[0] if spec is not None] == ["['hidden_1']['kernel']"]
    conv = tasks.get_task("conv_digits_8x8")  # a hidden convolution is orthogonalized as (h * w * in, out)
    conv_params = conv.init(key)
    spec = muon_dimension_numbers(conv.roles(conv_params))(conv_params)
    assert spec["conv_1"]["kernel"].reduction_axis == (0, 1, 2) and spec["conv_0"]["kernel"] is None

    muon = evaluate.baseline("muon@0.01")
    transform = muon.make(muon.candidates[0].hyper, 100, roles)
    # Full-rank gradients (a real one may be nearly low-rank, which 5 Newton-Schulz steps leave so).
    leaves, structure = jax.tree.flatten(params)
    grads = jax.tree.unflatten(structure, [jax.random.normal(jax.random.key(i), leaf.shape)
                                           for i, leaf in enumerate(leaves)])
    # Step 1 of the warmup (the step-0 rate is 0), after one step that fills the momentum.
    state = transform.init(params)
    _, state = transform.update(grads, state, params)
    updates, _ = transform.update(grads, state, params)
    singular = np.linalg.svd(np.asarray(updates["hidden_1"]["kernel"]), compute_uv=False)
    raw = np.linalg.svd(np.asarray(grads["hidden_1"]["kernel"]), compute_uv=False)
    # Orthogonalized, to the tolerance of 5 Newton-Schulz steps (which leave the very smallest singular
    # values of a random square matrix short of 1): the top 90% lie within 2x of each other.
    top = slice(0, int(0.9 * len(singular)))
    assert singular[top].max() / singular[top].min() < 2 < 4 < raw[top].max() / raw[top].min()
    adamw = optax.adamw(lopt.harness.warmup_cosine(0.01, 100), weight_decay=ADAMW_WEIGHT_DECAY,
                        nesterov=True)  # optax's muon hands its Nesterov setting to the AdamW part
    adam_state = adamw.init(params)
    _, adam_state = adamw.update(grads, adam_state, params)
    adam_updates, _ = adamw.update(grads, adam_state, params)
    for layer in ("input", "readout"):  # the rest is AdamW's step
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(updates[layer][name], adam_updates[layer][name], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("cosine_name, linear_name", [("adamw_cosine", "adamw_linear"), ("muon", "muon_linear")])
def test_the_linear_decay_baselines_are_their_cosine_twins_with_the_rate_decayed_linearly(cosine_name, linear_name):
    task = tasks.get_task("mlp_digits_8x8", width=16, depth=2, parameterization="sp")
    params = task.init(jax.random.key(0))
    grads = jax.tree.map(lambda leaf: jax.numpy.full_like(leaf, 0.1), params)
    updates = {}
    for shape, name in (("cosine", cosine_name), ("linear", linear_name)):
        chosen = evaluate.baseline(f"{name}@0.01")
        transform = chosen.make(chosen.candidates[0].hyper, 5, task.roles(params))
        state = transform.init(params)
        for _ in range(3):  # a 5-step run: 1 step of warmup, then at step 2 cosine's 0.75 of the peak, linear's 2/3
            step, state = transform.update(grads, state, params)
        updates[shape] = step
    for cosine, linear in zip(jax.tree.leaves(updates["cosine"]), jax.tree.leaves(updates["linear"])):
        np.testing.assert_allclose(linear, cosine * (2 / 3) / 0.75, rtol=1e-5, atol=1e-12)


def test_validation_is_the_same_fixed_held_out_set_for_every_optimizer(sweep):
    result, _, _ = sweep
    unit = next(u for u in result.units if u.optimizer.name == "adam" and u.task.label == "digits width 16")
    task = unit.config.build()
    params = task.init(jax.random.split(jax.random.key(0), 3)[0])
    expected = float(task.loss(params, task.held_out(task.data), jax.random.key(0)))
    # At step 0 every learning rate of seed 0 starts from the same init: one validation loss for all.
    starts = {runs[0].valid_loss[0] for runs in unit.runs.values()}
    assert len(starts) == 1 and starts.pop() == pytest.approx(expected, rel=1e-6)
    # The held-out set is the whole validation split of the digits (180 images), not a few batches.
    assert task.held_out(task.data)[0].shape[0] == task.data["valid"][0].shape[0] == 180


def test_a_sweeps_numbers_do_not_depend_on_memory_or_on_what_the_cache_holds(tiny_suite, tmp_path, monkeypatch):
    one_task = evaluate.Suite("one", "", tiny_suite.tasks[:1])

    def sweep(name, seeds, cache):
        result = evaluate.run_suite([], one_task, tmp_path / name, seeds=seeds, baselines=["adam"],
                                    cache_dir=tmp_path / cache, log=lambda line: None)
        return {label: [curves.train_loss + curves.valid_loss for curves in runs]
                for label, runs in result.units[0].runs.items()}, result

    fresh, result = sweep("fresh", 2, "fresh_cache")
    assert result.summary[0]["runs_per_group"] == 16  # 8 rates x 2 seeds, in one program
    # A cache holding seed 0's runs from a 1-seed sweep (grouped 8 to a program) is not mixed in: the
    # 2-seed sweep computes its runs in the group its keys name, and repeats the fresh sweep bit for bit.
    sweep("one_seed", 1, "shared_cache")
    assert sweep("two_seeds", 2, "shared_cache")[0] == fresh
    # The group does not follow free memory: only a device too small for it makes it smaller, and the
    # runs' keys and the summary say so.
    monkeypatch.setattr(tasks.memory, "device_memory_bytes", lambda: 1)
    monkeypatch.setattr(tasks.memory, "estimate", lambda *args: tasks.memory.RunMemory(1, 0, 0, 0, 0))
    small, result = sweep("small", 2, "small_cache")
    assert small != fresh and result.summary[0]["runs_per_group"] == 1
    for label in fresh:
        np.testing.assert_allclose(small[label], fresh[label], rtol=1e-4)


def test_the_summary_carries_both_metrics_against_adam_and_the_strongest_baseline(tmp_path, tiny_suite):
    result = evaluate.run_suite([], evaluate.Suite("one", "", tiny_suite.tasks[:1]), tmp_path / "work", seeds=1,
                                baselines=["adam", "sgdm"], tuning="same_seeds", cache_dir=tmp_path / "cache",
                                log=lambda line: None)
    rows = {row["optimizer"]: row for row in result.summary}
    adam, sgdm = rows["adam"], rows["sgdm"]
    for metric in ("train", "valid"):
        assert sgdm[f"strongest_{metric}_baseline"] == "adam" and adam[f"strongest_{metric}_baseline"] == "sgdm"
        assert sgdm[f"{metric}_vs_adam"] == pytest.approx(sgdm[f"final_{metric}_loss"] / adam[f"final_{metric}_loss"])
    unit = next(u for u in result.units if u.optimizer.name == "sgdm")
    assert sgdm["final_valid_loss"] == min(float(unit.curve("valid_loss", label)[-1]) for label in unit.runs)
    assert sgdm["final_train_loss"] == min(float(unit.curve("train_loss", label)[-1]) for label in unit.runs)
    # The early-stopping view: the lowest validation loss of any rate at any record point, never above
    # the final one, compared like the others.
    best = min(float(np.min(unit.curve("valid_loss", label))) for label in unit.runs)
    assert sgdm["best_valid_loss"] == best <= sgdm["final_valid_loss"]
    assert sgdm["best_valid_vs_adam"] == pytest.approx(best / adam["best_valid_loss"])
    overall = {entry["optimizer"]: entry for entry in result.overall}
    assert overall["sgdm"]["valid_wins_vs_adam"] == int(sgdm["valid_vs_adam"] < 1)
    assert overall["sgdm"]["best_valid_wins_vs_strongest"] == int(best < adam["best_valid_loss"])
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert {"train_win_rate_vs_strongest", "valid_win_rate_vs_adam"} <= set(summary["overall"][0])
    # The result prints as the tables of summary.md.
    markdown = (tmp_path / "work" / "summary.md").read_text()
    assert str(result.summary) in markdown and str(result.overall) in markdown
    assert str(result.summary).startswith("| task | optimizer | train loss | valid loss |")
    assert "valid: wins vs oracle baseline" in str(result.overall)
    assert "best valid (early stopping)" in str(result.overall)


def test_the_ood_suite_holds_seven_models_outside_the_image_mlp_family():
    scope = evaluate.MetaTrainingScope(family="mlp_images", horizon=500)
    suite = evaluate.build_suite("ood", scope)
    kinds = [task.config.kind for task in suite.tasks]
    assert kinds == ["language_model", "recurrent_lm", "image_conv", "image_conv_maxpool", "image_mlp",
                     "tabular_regression", "image_autoencoder"]
    wide = suite.tasks[4]
    assert wide.config.width == 16 * 128 and wide.num_steps == 2 * 500
    assert all(task.num_steps == 500 for task in suite.tasks if task is not wide)


def _ood_tasks_and_suite_file(name: str):
    """The ood suite's tasks by label, and benchmarks/suites/NAME built in the same scope."""
    scope = evaluate.MetaTrainingScope(family="mixed_sp", horizon=1000)
    ood = {task.label: task for task in evaluate.build_suite("ood", scope).tasks}
    return ood, evaluate.build_suite(Path(__file__).parents[1] / "benchmarks" / "suites" / name, scope)


def test_the_deciding_suite_file_holds_the_ood_suites_own_transformer_lstm_and_conv_net():
    """benchmarks/suites/deciding.json spells three ood tasks out: they stay the ones ood builds."""
    ood, deciding = _ood_tasks_and_suite_file("deciding.json")
    assert [task.label for task in deciding.tasks] == ["transformer shakespeare", "lstm shakespeare", "conv mnist 8x8"]
    for task in deciding.tasks:
        assert task.config == ood[task.label].config.replace(parameterization="sp")
        assert task.num_steps == ood[task.label].num_steps


def test_the_conv_widths_suite_file_is_the_ood_conv_net_at_three_widths():
    """benchmarks/suites/conv_widths.json: the ood conv net itself at width 16, and only its width
    changed in the other two."""
    ood, widths = _ood_tasks_and_suite_file("conv_widths.json")
    conv = ood["conv mnist 8x8"]
    assert [task.config.width for task in widths.tasks] == [8, 16, 32]
    for task in widths.tasks:
        assert task.config == conv.config.replace(parameterization="sp", width=task.config.width)
        assert task.num_steps == conv.num_steps
    assert widths.tasks[1].label == conv.label


def test_the_default_family_holds_none_of_the_ood_suites_models():
    """The ood suite's models stay out of the default's meta-training family. A model is its weights'
    shapes and its function: the same on other data, batches or windows is the same model."""
    scope = evaluate.MetaTrainingScope(family="mixed_sp", horizon=1000)
    ood = evaluate.build_suite("ood", scope).tasks

    def model(config):
        return {key: value for key, value in config.to_dict().items()
                if key not in ("dataset", "batch_size", "sequence_length", "parameterization")}

    held_out = [model(task.config) for task in ood]
    family = tasks.get_family("mixed_sp")
    configs = [config for bucket in family.buckets for config in bucket]
    assert {config.kind for config in configs} == {"image_mlp", "image_conv", "language_model", "recurrent_lm"}
    assert sorted(config.width for config in configs if config.kind == "image_conv") == [8, 8]
    assert not [config for config in configs if model(config) in held_out]
    # The check can fail: each ood conv net or language model's size put in the family is caught.
    for task in ood:
        if task.config.kind in ("image_conv", "language_model", "recurrent_lm"):
            same_kind = next(config for config in configs if config.kind == task.config.kind)
            sizes = {key: value for key, value in task.config.to_dict().items()
                     if key in ("width", "depth", "head_dim", "image_size")}
            assert model(same_kind.replace(**sizes)) in held_out, task.label


def test_the_help_lists_the_new_baselines_and_the_ood_suite(capsys):
    from evaluate.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "adamw_cosine" in text and "muon" in text and "ood" in text


def test_steps_set_the_horizon_that_the_log_and_the_summary_name():
    from evaluate.sweep import _suite_and_scope

    suite, scope, source, basis = _suite_and_scope([], "horizon", 200)
    assert scope.horizon == 200 and source.endswith("horizon from steps=200")
    assert basis == f"built around meta-training family {scope.family} and horizon 200 ({source})"
    assert [task.num_steps for task in suite.tasks] == [200, 600, 2000]
    _, scope, source, _ = _suite_and_scope([], "horizon", None)
    assert scope.horizon == 1000 and "steps" not in source
    # Task objects and suite files are not built around a family: the log and the summary name their budget.
    task = tasks.get_task("quadratic_10d")
    assert _suite_and_scope([], [task], 200)[3] == "each task trained for 200 steps (steps=200)"
    assert _suite_and_scope([], [task], None)[3].startswith("each task trained for 1000 steps (the meta-training horizon, ")
    suite_file = Path(__file__).parent.parent / "benchmarks" / "suites" / "ood_convs.json"
    assert _suite_and_scope([], suite_file, None)[3] == "each task trained for 1000 steps (its file's, 1000 where it gives none)"
    assert _suite_and_scope([], suite_file, 50)[3] == "each task trained for 50 steps (steps=50)"
    suite = evaluate.Suite("one", "", (evaluate.SuiteTask("quadratic", tasks.task_config("quadratic_10d"), 30),))
    assert _suite_and_scope([], suite, 50)[3] == ("each task trained for the steps the suite gives (steps=50 not applied: "
                                                  "a Suite keeps its own budgets)")


@pytest.mark.slow
def test_a_sweep_split_into_two_shards_gives_the_summary_of_the_unsharded_sweep(sweep, tiny_suite, learned_checkpoint,
                                                                                 tmp_path):
    """Two `--shard` processes at once on one workdir, each with a baseline cache of its own (as on two
    machines): the last to finish writes the summary that one process wrote for the whole suite (the
    `sweep` fixture's, whose suite this file spells out)."""
    _, _, root = sweep
    suite = tmp_path / "tiny.json"
    suite.write_text(json.dumps({"name": tiny_suite.name, "tasks": [
        {"task": "mlp_digits_8x8", "set": {"width": task.x, "batch_size": 32}, "steps": STEPS, "label": task.label,
         "axis": task.axis, "x": task.x} for task in tiny_suite.tasks]}))
    assert evaluate.build_suite(suite, evaluate.MetaTrainingScope()).tasks == tiny_suite.tasks
    common = ["--optimizer", str(learned_checkpoint), "--suite", str(suite), "--seeds", "2", "--baselines", "adam",
              "--tuning", "same-seeds"]
    shards = [subprocess.Popen([sys.executable, "-m", "evaluate", *common, "--workdir", str(tmp_path / "sharded"),
                                "--cache", str(tmp_path / f"cache_{index}"), "--shard", f"{index}/2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]
    outputs = [process.communicate(timeout=120) for process in shards]
    assert [process.returncode for process in shards] == [0, 0], outputs
    assert sum("summary in" in out for out, _ in outputs) >= 1
    assert any("shard 0/2: 2 of the 4 optimizer-task pairs" in out for out, _ in outputs)
    whole = root / "work"

    def numbers(summary):  # what the sweep measured; the wall times differ from run to run
        drop = lambda row: {key: value for key, value in row.items() if "seconds" not in key}
        return [drop(row) for row in summary["rows"]], [drop(row) for row in summary["overall"]]
    sharded = json.loads((tmp_path / "sharded" / "summary.json").read_text())
    assert numbers(sharded) == numbers(json.loads((whole / "summary.json").read_text()))
    assert sorted(path.name for path in (tmp_path / "sharded" / "plots").iterdir()) == \
        sorted(path.name for path in (whole / "plots").iterdir())
    with pytest.raises(evaluate.SweepError, match=r"shard '2/2': expected I/N with 0 <= I < N"):
        evaluate.run_suite([learned_checkpoint], suite, tmp_path / "bad", shard="2/2")


def test_a_shard_that_sees_another_shards_sweep_file_appear_joins_that_sweep(tmp_path, monkeypatch):
    """The race CI once lost: shard 1 found no sweep file, then shard 0 renamed its own into place before
    shard 1 listed the directory. The same sweep is joined, another refused; what only shards write is
    no sweep to a process without a shard."""
    from evaluate import sweep as sweep_module

    record = {"suite": "tiny", "seeds": [0]}
    workdir = tmp_path / "work"
    (workdir / sweep_module.RUNS_DIR).mkdir(parents=True)
    (workdir / sweep_module.SWEEP_FILE).write_text(json.dumps(record))
    real_is_file, looks = Path.is_file, []

    def is_file_late(path):  # the first look at the sweep file misses it, as in the race
        if path.name == sweep_module.SWEEP_FILE:
            looks.append(path)
            if len(looks) == 1:
                return False
        return real_is_file(path)
    monkeypatch.setattr(Path, "is_file", is_file_late)
    sweep_module._check_workdir(workdir, record, force=False, sharded=True)
    looks.clear()
    with pytest.raises(evaluate.SweepError, match="holds another sweep"):
        sweep_module._check_workdir(workdir, {**record, "seeds": [1]}, force=False, sharded=True)
    monkeypatch.undo()
    starting = tmp_path / "starting"
    (starting / sweep_module.RUNS_DIR).mkdir(parents=True)
    with pytest.raises(evaluate.SweepError, match="is not empty and holds no sweep"):
        sweep_module._check_workdir(starting, record, force=False, sharded=False)
    sweep_module._check_workdir(starting, record, force=False, sharded=True)
    assert json.loads((starting / sweep_module.SWEEP_FILE).read_text()) == record


def test_a_learned_optimizers_step_is_scaled_or_tuned_like_a_baselines_rate(learned_checkpoint, tiny_suite, tmp_path):
    plain, halved = evaluate.resolve(str(learned_checkpoint)), evaluate.resolve(f"mine={learned_checkpoint}@0.5")
    assert halved.name == "mine" and [c.label for c in halved.candidates] == ["theta x0.5"]
    assert halved.identity != plain.identity  # never read back from the other's cached runs
    task = tasks.get_task("mlp_digits_8x8", width=16, batch_size=32)
    params = task.init(jax.random.key(0))
    grads = jax.jit(jax.grad(task.loss))(params, task.batch(task.data, jax.random.key(1)), None)

    def first_update(optimizer, grads, params):
        transform = optimizer.make(optimizer.candidates[0].hyper, STEPS, task.roles(params))
        return transform.update(grads, transform.init(params), params, loss=1.0)[0]
    # Both in one compiled program: the rule's update compiles for seconds.
    pair = jax.jit(lambda grads, params: (first_update(halved, grads, params), first_update(plain, grads, params)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.5 * b, rtol=1e-6), *pair(grads, params))
    with pytest.raises(evaluate.OptimizerError, match=r"@fast: after '@' a learned optimizer takes a positive step"):
        evaluate.resolve(f"{learned_checkpoint}@fast")

    suite = evaluate.Suite("one", "", tiny_suite.tasks[:1])
    lines = []
    result = evaluate.run_suite([f"{learned_checkpoint}@tuned"], suite, tmp_path / "work", seeds=1, baselines=[],
                                tuning="same_seeds", cache_dir=tmp_path / "cache", log=lines.append)
    unit = next(u for u in result.units if u.optimizer.name.endswith("@tuned"))
    assert sorted(unit.runs) == sorted(f"theta x{s!r}" for s in evaluate.optimizers.LEARNED_STEP_SCALES)
    finals = {label: runs[0].train_loss[-1] for label, runs in unit.runs.items()}
    assert unit.chosen == min(finals, key=finals.get)
    summary = (tmp_path / "work" / "summary.md").read_text()
    assert f"| {unit.chosen}" in summary
    # One seed: the log and the summary say no difference can count as a tie. No baseline: nothing to count.
    caveat = "One evaluation seed gives no standard error, so every difference counts as a win or a loss, however small"
    assert caveat in lines[1] and caveat in summary
    assert str(result.counts) == "(nothing to count: no learned optimizer beside a baseline of adam, adamw_cosine, muon on every task)"


@pytest.mark.slow  # a benchmark's own run
def test_the_group_scales_benchmark_runs_its_variants_and_writes_one_results_file(tmp_path, capsys):
    from benchmarks import group_scales
    suite = tmp_path / "one_task.json"
    suite.write_text(json.dumps({"name": "one_task", "tasks": [
        {"task": "mlp_digits_8x8", "set": {"width": 16, "batch_size": 32}, "steps": STEPS, "label": "digits"}]}))
    path = group_scales.main(["--scales", "input=2", "--suite", str(suite), "--baselines", "adam",
                              "--out", str(tmp_path / "out"), "--sweeps", str(tmp_path / "sweeps"),
                              "--cache", str(tmp_path / "cache")])
    text = path.read_text()
    name = lopt.DEFAULT  # what it measures when not told
    assert text.startswith(f"# {name} with scaled group step multipliers, one_task")
    assert f"| task | {name} | {name}_input2 | tuned Adam | strongest baseline |" in text
    assert f"## one_task: {name}" in text
    rows = json.loads((tmp_path / "sweeps" / "one_task" / "summary.json").read_text())["rows"]
    losses = {row["optimizer"]: row["final_train_loss"] for row in rows}
    assert losses[f"{name}_input2"] != losses[name]  # the variant's steps differ


@pytest.mark.slow  # a benchmark's own run: it compiles four conv nets' steps twice
def test_the_conv_loop_benchmark_times_each_model_both_ways_and_writes_its_table(tmp_path, capsys):
    from benchmarks import conv_loop_cost
    path = conv_loop_cost.main(["--steps", "2", "--repeats", "1", "--out", str(tmp_path / "table.md")])
    rows = [line.split(" | ") for line in path.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].lstrip("| ") for row in rows] == list(conv_loop_cost.MODELS)
    for row in rows:
        assert all(float(cell) > 0 for cell in row[1:6])
        in_loop, alone = map(int, row[6].rstrip(" |").split(", "))
        assert alone == 0  # a convolution compiled outside a loop is canonical


def test_a_conv_nets_runs_stepped_from_python_give_the_compiled_loops_curves(monkeypatch):
    from evaluate import runner
    task = tasks.get_task("conv_digits_8x8", width=4)
    adam = evaluate.resolve("adam")
    # Three jobs in groups of two (the last padded), two intervals and a shorter last one, as a sweep runs them.
    jobs = [(2, 0), (5, 1), (2, 1)]
    stepped = runner.run(task, adam, jobs, 12, 5, parallel=2)
    assert runner.program(task, adam, 12, 5).__name__ == ("runs" if jax.default_backend() == "cpu" else "one_run")
    monkeypatch.setattr(tasks, "steps_from_python", lambda task: False)  # the compiled loop, on any backend
    runner._PROGRAMS.clear()
    looped = runner.run(task, adam, jobs, 12, 5, parallel=2)
    runner._PROGRAMS.clear()
    for one, other in zip(looped, stepped):
        assert one.steps == other.steps == (0, 5, 10, 12)
        for field in ("train_loss", "valid_loss", "valid_accuracy"):
            np.testing.assert_allclose(getattr(other, field), getattr(one, field), rtol=1e-5)
