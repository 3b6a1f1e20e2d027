"""The user's own optimizer and tasks in a sweep: any Optax optimizer tuned over its rates against tuned
Adam on task objects, its cache key shown and cleared, and both named on the command line as
`module.path:attribute` (checkpoints.imports.resolve_import_path, whose every error is one line)."""

import json
import os
import shutil
import textwrap
import time

import jax
import jax.numpy as jnp
import optax
import pytest

import evaluate
import lopt
import tasks
from checkpoints.imports import ImportPathError, resolve_import_path
from evaluate import runner, task_objects
from evaluate.__main__ import main

STEPS = 20
RATES = (1e-3, 1e-2)
DIGITS = dict(width=8, batch_size=16, parameterization="sp")


class TinyRegression(tasks.Task):
    """A linear model fit to a fixed random linear map: the smallest task a user writes by hand."""

    name = "tiny regression"

    def __init__(self, dim: int = 4):
        self.dim = dim

    def init(self, key):
        return {"w": jnp.zeros((self.dim, self.dim)), "b": jnp.zeros((self.dim,))}

    def loss_and_aux(self, params, batch, key):
        prediction = batch["input"] @ params["w"] + params["b"][None, :]
        return jnp.mean(jnp.square(prediction - batch["target"])), {}

    @property
    def data(self):
        inputs = jax.random.normal(jax.random.key(1), (64, self.dim))
        return {"input": inputs, "target": inputs @ jnp.eye(self.dim)[::-1] + 0.5}

    def batch(self, data, key, split="train"):
        rows = jax.random.randint(key, (16,), 0, 64)
        return {"input": data["input"][rows], "target": data["target"][rows]}

    def held_out(self, data, split="valid"):
        return data

    def roles(self, params):
        return {"w": "hidden", "b": "input"}

    def normalize_loss(self, loss):
        return loss


def lion(version=None):
    return evaluate.optimizer("lion", lambda rate, num_steps: optax.lion(optax.cosine_decay_schedule(rate, num_steps)),
                              rates=RATES, version=version)


def quiet(line):
    pass


@pytest.fixture(scope="module")
def competitors():
    """Lion and the two task objects, shared by the tests so that their compiled programs are too."""
    return lion(), [tasks.get_task("mlp_digits_8x8", **DIGITS), TinyRegression()]


@pytest.fixture(scope="module")
def custom_sweep(competitors, tmp_path_factory):
    """Lion over 2 rates and tuned Adam, one seed, on a built-in task and the user's own, both as objects;
    each grid on the reported seed (tuning="same_seeds"), so every rate's runs are there to count."""
    root = tmp_path_factory.mktemp("custom")
    optimizer, objects = competitors
    result = evaluate.run_suite([optimizer], objects, root / "work", steps=STEPS, seeds=1, baselines=["adam"],
                                tuning="same_seeds", cache_dir=root / "cache", log=quiet)
    return result, root


def test_a_user_optimizer_is_tuned_over_its_rates_against_tuned_adam_on_task_objects(custom_sweep):
    result, root = custom_sweep
    labels = ["image_mlp/digits_8_w8_d2", "tiny regression"]
    assert [(unit.task.label, unit.optimizer.name) for unit in result.units] == [
        (label, name) for label in labels for name in ("lion", "adam")]
    for unit in result.units:
        assert len(unit.runs) == (2 if unit.optimizer.name == "lion" else 8)
        assert unit.chosen in unit.runs and jnp.isfinite(unit.curve()[-1])
        assert unit.steps[-1] == STEPS
    # Each task trains as it was given, whatever the optimizer's own parameterization.
    assert {unit.config.parameterization for unit in result.units if unit.task.label == labels[0]} == {"sp"}
    assert [row["task"] for row in result.summary] == [label for label in labels for _ in range(2)]
    regression = next(u for u in result.units if u.optimizer.name == "adam" and u.task.label == "tiny regression")
    assert regression.curve()[-1] < 0.5 * regression.curve()[0]  # it trains
    records = json.loads((root / "work" / "runs.json").read_text())
    assert {record["config"]["kind"] for record in records} == {"image_mlp", "object"}


def test_a_make_with_a_third_parameter_gets_the_tasks_roles(tmp_path):
    """A user's Muon orthogonalizes the hidden matrices the task names, as the built-in baseline does."""
    given = []

    def muon(rate, num_steps, roles):
        given.append(roles)
        return optax.contrib.muon(rate, muon_weight_dimension_numbers=lopt.muon_dimension_numbers(roles))

    result = evaluate.run_suite([evaluate.optimizer("my muon", muon, rates=RATES)], [TinyRegression()],
                                tmp_path / "work", steps=STEPS, seeds=1, baselines=[], tuning="same_seeds",
                                cache_dir=tmp_path / "cache", log=quiet)
    assert given and all(roles == {"w": "hidden", "b": "input"} for roles in given)
    (unit,) = result.units
    assert unit.curve()[-1] < 0.8 * unit.curve()[0]


def test_its_cache_key_is_shown_and_clearing_it_trains_it_anew(custom_sweep, competitors, tmp_path, monkeypatch):
    result, root = custom_sweep
    optimizer, objects = competitors
    identity = "lion: evaluate.optimizer(rates=[0.001, 0.01], version=None)"
    assert optimizer.identity == identity and lion(version="2").identity != identity
    assert json.loads((root / "work" / "sweep.json").read_text())["optimizers"]["lion"] == identity
    assert f"- `lion`: `{identity}` (clear: `--clear-cache lion`)" in (root / "work" / "summary.md").read_text()
    shutil.copytree(root / "cache", tmp_path / "cache")
    trained, original = [], runner.run_groups
    monkeypatch.setattr(runner, "run_groups", lambda task, optimizer, *args, **kwargs: trained.append(optimizer.name)
                        or original(task, optimizer, *args, **kwargs))
    lines = []

    def sweep(name, competitor):
        return evaluate.run_suite([competitor], objects, tmp_path / name, steps=STEPS, seeds=1, baselines=["adam"],
                                  tuning="same_seeds", cache_dir=tmp_path / "cache", log=lines.append)

    # Another make under the same name, rates and version is read back (as documented): the key is the user's.
    descent = evaluate.optimizer("lion", lambda rate, num_steps: optax.sgd(rate), rates=RATES)
    again = sweep("again", descent)
    assert trained == [] and all(unit.reused == len(unit.runs) for unit in again.units)
    assert any(identity in line and "--clear-cache lion" in line for line in lines)
    assert evaluate.clear_cache(tmp_path / "again", optimizer="lion", cache_dir=tmp_path / "cache") == 2 * 2
    sweep("cleared", optimizer)
    assert trained == ["lion", "lion"]  # trained anew on both tasks; tuned Adam still read back
    # A task object's runs, every optimizer's: tuned Adam's 8 and Lion's 2.
    assert evaluate.clear_cache(task="tiny regression", cache_dir=tmp_path / "cache") == 8 + 2
    with pytest.raises(ValueError, match="clear_cache: name an optimizer=, a task= or both"):
        evaluate.clear_cache(tmp_path)


def test_pruning_removes_the_runs_unused_for_days_and_those_of_an_older_store_version(custom_sweep, competitors,
                                                                                      tmp_path, monkeypatch, capsys):
    result, root = custom_sweep
    optimizer, objects = competitors
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    stored = sorted(cache.glob("*.json"))
    ten_days_ago = time.time() - 10 * 86400
    for path in stored:
        os.utime(path, (ten_days_ago, ten_days_ago))
    # A sweep of Lion alone reads its 4 runs back (2 rates on each task), which refreshes them.
    evaluate.run_suite([optimizer], objects, tmp_path / "lion", steps=STEPS, seeds=1, baselines=[],
                       tuning="same_seeds", cache_dir=cache, log=quiet)
    used = [path for path in stored if path.stat().st_mtime > ten_days_ago]
    assert len(used) == 2 * 2 and len(stored) == 2 * (2 + 8)
    # One of them as an older version of the code wrote it.
    record = json.loads(used[0].read_text())
    record["key"]["version"] -= 1
    used[0].write_text(json.dumps(record))
    (cache / "notes.json").write_text("[]")  # not a run: left alone
    # And one as a newer version wrote it (another install sharing the cache): kept.
    record = json.loads(used[1].read_text())
    record["key"]["version"] += 1
    used[1].write_text(json.dumps(record))
    assert evaluate.prune_cache(5, cache_dir=cache) == len(stored) - 3
    assert sorted(cache.glob("*.json")) == sorted([*used[1:], cache / "notes.json"])
    assert evaluate.prune_cache(5, cache_dir=cache) == 0
    with pytest.raises(ValueError, match="unused_days=-1 must be a number of days"):
        evaluate.prune_cache(-1, cache_dir=cache)
    # The command line: a bad number of days is one line and exit 2; the upkeep runs without a sweep.
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache", str(cache), "--prune-cache", "soon"])
    assert exit_info.value.code == 2 and "--prune-cache: 'soon' is not a number of days" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache", str(cache)])
    assert exit_info.value.code == 2 and "required: --suite, --workdir" in capsys.readouterr().err
    os.utime(used[2], (ten_days_ago, ten_days_ago))
    assert main(["--cache", str(cache), "--prune-cache", "9"]) == 0  # used[2], 10 days unused, goes
    assert "--prune-cache 9: removed 1 stored runs" in capsys.readouterr().out
    assert main(["--cache", str(cache), "--prune-cache", "0"]) == 0
    assert sorted(cache.glob("*.json")) == [cache / "notes.json"]


def test_task_objects_are_named_and_keyed_as_documented():
    digits = tasks.get_task("mlp_digits_8x8", **DIGITS)
    # A built-in task as an object is cached as its config, so it shares runs with the same task by name.
    assert task_objects.suite_task(digits, STEPS).config == tasks.task_config("mlp_digits_8x8", **DIGITS)
    record = task_objects.suite_task(TinyRegression(), STEPS).config
    assert (record.kind, record.name, record.type) == ("object", "tiny regression", f"{__name__}.TinyRegression")
    assert task_objects.suite_task(TinyRegression(dim=5), STEPS).config.params != record.params
    # Two objects never share compiled programs unless a registered config determines them both.
    assert runner._compiled_under(TinyRegression()) != runner._compiled_under(TinyRegression())
    assert runner._compiled_under(digits) == runner._compiled_under(tasks.get_task("mlp_digits_8x8", **DIGITS))
    with pytest.raises(evaluate.SuiteError, match=r"^two tasks of suite 'custom' are both named 'tiny regression'"):
        evaluate.suite_from_tasks([TinyRegression(), TinyRegression(dim=3)], STEPS)
    nameless = TinyRegression()
    nameless.name = None
    with pytest.raises(evaluate.SuiteError, match="neither a `name` nor a `config`: give it a `name`"):
        evaluate.suite_from_tasks([nameless], STEPS)
    with pytest.raises(evaluate.SuiteError, match="a suite given as a list must hold tasks.Task objects"):
        evaluate.run_suite(["adam@0.01"], [digits, "mlp_digits_8x8"], "unused", baselines=[])


def test_a_user_optimizer_refuses_bad_arguments_in_one_line():
    make = lambda rate, num_steps: optax.adam(rate)  # noqa: E731
    for arguments, message in [(("", make), "must be a non-empty string"), (("a:b", make), "without ':'"),
                               (("x", "adam"), "make must be a function"),
                               (("x", make, (0.1, -1.0)), "must be one or more positive finite numbers"),
                               (("x", make, (0.1, 0.1)), "repeat a value")]:
        name, function, *rates = arguments
        with pytest.raises(evaluate.OptimizerError, match=message):
            evaluate.optimizer(name, function, **({"rates": rates[0]} if rates else {}))
    wrong = evaluate.optimizer("wrong", lambda rate, num_steps: optax.adam)
    with pytest.raises(evaluate.OptimizerError, match=r"returned function, not an optax.GradientTransformation"):
        wrong.make(wrong.candidates[0].hyper, STEPS, None)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's beside the command (the current directory), named uniquely per test."""
    name = f"user_bench_{abs(hash(tmp_path)) % 10 ** 8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import optax
        import evaluate
        import tasks

        NOT_A_SUITE = 3
        LION = evaluate.optimizer("lion", lambda rate, num_steps: optax.lion(
            optax.cosine_decay_schedule(rate, num_steps)), rates=(1e-3, 1e-2))

        def digits():
            return [tasks.get_task("mlp_digits_8x8", width=8, batch_size=16, parameterization="sp")]

        def needs_arguments(width):
            return []
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # restores sys.path, which the resolver may extend, afterwards
    return name


def test_the_import_path_resolver_reports_each_error_in_one_line(user_module):
    def suite(text):
        return resolve_import_path(text, "a list of tasks", task_objects.is_task_list)

    assert [task.config.width for task in suite(f"{user_module}:digits")] == [8]  # a factory is called
    assert resolve_import_path(f"{user_module}:LION.name", "a name", lambda value: isinstance(value, str)) == "lion"
    for text, message in [
            (user_module, "is not of the form module.path:attribute"),
            (f"{user_module}:", "is not of the form module.path:attribute"),
            (f"{user_module}:1x", "is not of the form module.path:attribute"),
            ("no_such_module_here:TASKS", "no module named 'no_such_module_here' (looked in the current directory"),
            (f"{user_module}:MISSING", f"'{user_module}' has no attribute 'MISSING'"),
            (f"{user_module}:LION.missing", "'LION' has no attribute 'missing'"),
            (f"{user_module}:NOT_A_SUITE", "NOT_A_SUITE is an int, not a list of tasks"),
            (f"{user_module}:LION", "LION is an evaluate.optimizers.EvalOptimizer, not a list of tasks"),
            (f"{user_module}:needs_arguments", "needs_arguments is a function, not a list of tasks")]:
        with pytest.raises(ImportPathError) as raised:
            suite(text)
        assert message in str(raised.value) and "\n" not in str(raised.value), (text, str(raised.value))


def test_the_command_line_takes_import_paths(custom_sweep, user_module, tmp_path, capsys):
    _, root = custom_sweep
    shutil.copytree(root / "cache", tmp_path / "cache")
    arguments = ["--suite", f"{user_module}:digits", "--optimizer", f"{user_module}:LION", "--baselines", "adam",
                 "--steps", str(STEPS), "--seeds", "1", "--tuning", "same-seeds", "--cache", str(tmp_path / "cache")]
    assert main(arguments + ["--workdir", str(tmp_path / "work")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert [row["optimizer"] for row in summary["rows"]] == ["lion", "adam"]
    assert "lion: runs cached under 'lion: evaluate.optimizer(rates=[0.001, 0.01], version=None)'" in \
        capsys.readouterr().out
    assert main(arguments + ["--workdir", str(tmp_path / "work"), "--clear-cache", "lion"]) == 0
    # Lion's runs on both tasks of the sweep the cache came from, 2 rates each.
    assert "--clear-cache lion: removed 4 stored runs" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, message", [
    ("--suite", "no_such_module_here:TASKS", "no module named 'no_such_module_here'"),
    ("--suite", "{module}:MISSING", "has no attribute 'MISSING'"),
    ("--suite", "{module}:LION", "LION is an evaluate.optimizers.EvalOptimizer, not an evaluate.Suite"),
    ("--optimizer", "{module}:digits", "digits() returned a list, not an evaluate.optimizer(...)"),
    ("--optimizer", "{module}:", "is not of the form module.path:attribute")])
def test_a_bad_import_path_on_the_command_line_exits_2_writing_nothing(user_module, tmp_path, capsys, flag, value,
                                                                        message):
    arguments = {"--suite": f"{user_module}:digits", "--optimizer": "adam@0.01"}
    arguments[flag] = value.format(module=user_module)
    argv = [item for pair in arguments.items() for item in pair]
    assert main(argv + ["--workdir", str(tmp_path / "work"), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "work").exists() and not (tmp_path / "cache").exists()
