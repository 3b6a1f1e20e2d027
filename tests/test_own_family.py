"""Meta-training on a user's own family, never registered: from Python with the objects, and from the
command line by import path, resumed after a kill and run by two processes."""

import json
import sys

import jax
import numpy as np
import pytest

import lopt
from meta_train.__main__ import main
from meta_train.checkpointing import WorkdirError
from meta_train.config import ConfigError
from meta_train.train import meta_train
from tests import own_family
from tests.process_helpers import finish, kill_after_first_checkpoint, launch_group
from tests.test_meta_train import TINY, tiny

OWN = ["task_family=tests.own_family:FAMILY", "eval_task=tests.own_family:HELD_OUT"]


def arguments(workdir, *fields):
    return ["--config", "quadratic", "--workdir", str(workdir), *[part for field in TINY + list(fields)
                                                                  for part in ("--set", field)]]


@pytest.fixture(scope="module")
def by_import_path(tmp_path_factory):
    """An uninterrupted run of the family named by import path, as the command line runs it."""
    workdir = tmp_path_factory.mktemp("own") / "run"
    assert main(arguments(workdir, *OWN, "outer_steps=100") + ["--no-compare"]) == 0
    return workdir


def test_objects_given_to_meta_train_are_trained_on_recorded_and_asked_for_again(tmp_path, monkeypatch):
    from meta_train import compare
    monkeypatch.setattr(compare, "COMPARED_BASELINES", {"adam": "Adam"})  # the held-out object is the point here
    workdir = tmp_path / "objects"
    lines = []
    result = meta_train(tiny("outer_steps=20", "eval_steps=10"), workdir, family=own_family.FAMILY,
                        eval_task=own_family.HELD_OUT, log=lines.append)
    # Every task of the family is trained, and the log says num_task_configs went unused.
    assert "(all 2 tasks of family 'own_regressions'; num_task_configs=1 applies to sampled families only)" in lines[0]
    config = json.loads((workdir / "config.json").read_text())
    assert (config["task_family"], config["eval_task"]) == ("<own_regressions>", "<regression_5>")
    recorded = [record["name"] for record in json.loads((workdir / "tasks.json").read_text())]
    assert recorded == ["regression_4", "regression_6"]  # two shape buckets
    assert "regression_5" in json.loads((workdir / "comparison.json").read_text())["task"]
    assert list((workdir / "tensorboard").iterdir()) and result.comparison
    assert lopt.load_optimizer(workdir / "optimizer")[2]["provenance"]["task_family"] == "<own_regressions>"
    before = {path: path.stat().st_mtime_ns for path in workdir.rglob("*")}
    with pytest.raises(ConfigError, match=r"task_family='<own_regressions>' was given as an object: pass it again"):
        meta_train(json_config(workdir), workdir, resume=True, log=lambda line: None)
    # Another family under the same name (its tasks of other shapes) is refused before anything is written.
    with pytest.raises(WorkdirError, match=r"other tasks than its family gives now \(recorded, not given now: "
                                           r"regression_4, regression_6\)"):
        meta_train(json_config(workdir), workdir, resume=True, family=own_family.OTHER_FAMILY, eval_task=own_family.HELD_OUT,
                   log=lambda line: None)
    assert {path: path.stat().st_mtime_ns for path in workdir.rglob("*")} == before


def json_config(workdir):
    from meta_train.config import MetaTrainConfig
    return MetaTrainConfig.from_record(json.loads((workdir / "config.json").read_text()))


@pytest.mark.slow  # the machinery is the built-in families' (test_meta_train, test_distributed); this is the user's path
def test_an_import_path_run_resumes_after_a_kill_to_the_same_theta(by_import_path, tmp_path):
    workdir = tmp_path / "killed"
    command = [sys.executable, "-m", "meta_train", *arguments(workdir, *OWN, "outer_steps=100"), "--no-compare"]
    kill_after_first_checkpoint(command, workdir, timeout=240)
    assert main(arguments(workdir, *OWN, "outer_steps=100") + ["--no-compare", "--resume"]) == 0
    jax.tree.map(np.testing.assert_array_equal, lopt.load_optimizer(workdir / "optimizer")[1],
                 lopt.load_optimizer(by_import_path / "optimizer")[1])
    provenance = lopt.load_optimizer(workdir / "optimizer")[2]["provenance"]
    assert provenance["task_family"] == "tests.own_family:FAMILY"


@pytest.mark.slow
def test_two_processes_run_the_family_named_by_import_path(by_import_path, tmp_path):
    group = tmp_path / "group"
    results = finish(launch_group(arguments(group, *OWN, "outer_steps=100") + ["--no-compare"], 2, 2), timeout=240)
    assert [code for code, _, _ in results] == [0, 0], results
    # The group reduces the meta-gradient in another order: equal up to float32 rounding.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6),
                 lopt.load_optimizer(group / "optimizer")[1], lopt.load_optimizer(by_import_path / "optimizer")[1])


@pytest.mark.parametrize("fields, message", [
    (["task_family=tests.own_famly:FAMILY"], "no module named 'tests.own_famly'"),
    (["task_family=tests.own_family:FAMILIES"], "'tests.own_family' has no attribute 'FAMILIES'"),
    (["task_family=tests.own_family:HELD_OUT"], "not a tasks.TaskFamily"),
    (["eval_task=tests.own_family:FAMILY"], "not a tasks.Task"),
])
def test_a_bad_import_path_is_one_line_and_exit_2_with_nothing_written(fields, message, tmp_path, capsys):
    assert main(arguments(tmp_path / "run", *fields)) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()
