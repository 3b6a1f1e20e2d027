"""Checkpoints round-trip exactly, save atomically, and refuse every kind of bad input by name."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import checkpoints
import lopt
import meta_train
from meta_train.config import MetaTrainConfig
import tasks
from checkpoints import store
from tests.lopt_helpers import EVERY_ARCHITECTURE


@pytest.fixture
def saved(tmp_path):
    optimizer = lopt.MLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(3))
    directory = lopt.save(tmp_path / "lo", optimizer, theta, task_family="mlp_images", estimator="pes",
                          outer_steps=0)
    return optimizer, theta, directory


def test_round_trip_restores_theta_exactly_with_its_spec(saved):
    optimizer, theta, directory = saved
    loaded_optimizer, loaded_theta, spec = lopt.load_optimizer(directory)
    assert loaded_optimizer == optimizer
    assert jax.tree.structure(loaded_theta) == jax.tree.structure(theta)
    for original, restored in zip(jax.tree.leaves(theta), jax.tree.leaves(loaded_theta)):
        np.testing.assert_array_equal(original, restored)
    assert spec["provenance"] == {"task_family": "mlp_images", "estimator": "pes", "outer_steps": 0}
    assert spec["format_version"] == checkpoints.FORMAT_VERSION and "saved_at" in spec
    assert json.loads((directory / "spec.json").read_text())["optimizer"]["architecture"] == "mlp_lopt"


@pytest.mark.parametrize("name", sorted(EVERY_ARCHITECTURE))
def test_every_architecture_round_trips(name, tmp_path):
    optimizer = EVERY_ARCHITECTURE[name]
    theta = optimizer.init(jax.random.key(1))
    loaded_optimizer, loaded_theta, _ = lopt.load_optimizer(lopt.save(tmp_path / name, optimizer, theta))
    assert loaded_optimizer == optimizer
    for original, restored in zip(jax.tree.leaves(theta), jax.tree.leaves(loaded_theta)):
        np.testing.assert_array_equal(original, restored)


def test_load_gives_a_working_optax_transform(saved):
    _, _, directory = saved
    params = {"w": np.ones((4, 3), np.float32)}
    transform = lopt.load(str(directory), num_steps=10, roles={"w": "hidden"})
    updates, _ = transform.update({"w": np.ones((4, 3), np.float32)}, transform.init(params), params)
    assert updates["w"].shape == (4, 3)


def test_saving_over_a_checkpoint_keeps_the_old_one_until_the_new_one_is_complete(saved, monkeypatch):
    optimizer, theta, directory = saved

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the spec")

    monkeypatch.setattr(store.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        lopt.save(directory, optimizer, jax.tree.map(lambda x: x + 1, theta))
    monkeypatch.undo()
    _, restored, _ = lopt.load_optimizer(directory)
    for original, kept in zip(jax.tree.leaves(theta), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(original, kept)
    assert [p.name for p in directory.parent.iterdir()] == ["lo"], "no staging directory is left behind"


def test_save_refuses_to_overwrite_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    optimizer = lopt.Adam()
    with pytest.raises(checkpoints.CheckpointError, match="notes exists and is not a checkpoint"):
        lopt.save(tmp_path / "notes", optimizer, optimizer.init(None))
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_bad_checkpoints_are_refused_by_name(saved, tmp_path):
    _, _, directory = saved
    with pytest.raises(checkpoints.CheckpointError, match="neither a shipped learned optimizer .* nor an existing"):
        lopt.load(str(tmp_path / "missing"), num_steps=10)

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    for path in (broken / "theta").rglob("*"):
        if path.is_file() and path.stat().st_size > 64 and "ocdbt" in str(path.parent.name) + path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(checkpoints.CheckpointError, match="broken/theta: cannot read the meta-parameters"):
        lopt.load_optimizer(broken)

    (broken / "spec.json").write_text("{not json")
    with pytest.raises(checkpoints.CheckpointError, match="spec.json is corrupt"):
        lopt.load_optimizer(broken)
    (broken / "spec.json").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="spec.json is missing"):
        lopt.load_optimizer(broken)


def _edit_spec(directory, edit):
    spec = json.loads((directory / "spec.json").read_text())
    edit(spec)
    (directory / "spec.json").write_text(json.dumps(spec))


def test_unknown_architecture_newer_format_and_mismatched_theta_are_named(saved):
    _, _, directory = saved
    _edit_spec(directory, lambda spec: spec["optimizer"].update(architecture="velo9"))
    with pytest.raises(lopt.SpecError, match="unknown learned-optimizer architecture 'velo9'; known: adam, lstm_lopt, mlp_lopt"):
        lopt.load_optimizer(directory)
    _edit_spec(directory, lambda spec: spec["optimizer"].update(architecture="mlp_lopt"))
    _edit_spec(directory, lambda spec: spec["optimizer"]["settings"].update(hidden_size=8))
    with pytest.raises(lopt.SpecError, match=r"\['mlp'\]\['layer_0'\]\['b'\] is float32\[4\], mlp_lopt with settings .* needs float32\[8\]"):
        lopt.load_optimizer(directory)
    _edit_spec(directory, lambda spec: spec.update(format_version=checkpoints.FORMAT_VERSION + 1))
    with pytest.raises(checkpoints.CheckpointError, match="newer than this library reads"):
        lopt.load_optimizer(directory)


def test_save_refuses_a_theta_that_does_not_fit(tmp_path):
    optimizer = lopt.MLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(0))
    del theta["adafactor_decays"]
    with pytest.raises(lopt.SpecError, match=r"needs \['adafactor_decays'\], which is missing"):
        lopt.save(tmp_path / "lo", optimizer, theta)
    assert not (tmp_path / "lo").exists()


def test_shipped_optimizers_are_listed_with_their_records():
    shipped = {info.name: info for info in lopt.list_pretrained()}
    assert {"mulo": "mup", "orthogonal_mlp": "sp"} == {name: info.parameterization for name, info in shipped.items()}
    # The one default: shipped, the Quickstart's, and the rule the main job's preset meta-trains.
    assert lopt.DEFAULT in shipped and f'lopt.load("{lopt.DEFAULT}"' in (Path(__file__).parents[1] / "README.md").read_text()
    for name, info in shipped.items():
        assert info.architecture in lopt.ARCHITECTURES and info.description
        optimizer, theta, spec = lopt.load_optimizer(name)
        provenance = spec["provenance"]
        # What reproduces it and what it cost: the preset, the estimator, the steps, the time and the machine.
        assert provenance["preset"] in meta_train.PRESETS and provenance["estimator"] == "pes"
        # The preset still reproduces it: `python -m meta_train --config PRESET` runs the recorded config.
        assert meta_train.preset(provenance["preset"]) == MetaTrainConfig.from_record(provenance["config"])
        assert provenance["outer_steps"] == provenance["config"]["outer_steps"] > 0
        assert provenance["wall_seconds_last_invocation"] > 0 and provenance["machine"]
        task = tasks.get_task("mlp_digits_8x8", width=32, parameterization=info.parameterization)
        params = task.init(jax.random.key(0))
        transform = lopt.load(name, num_steps=100, roles=task.roles(params))
        # The training loss, as tasks.train_step passes it (the default's decay reads it).
        # Jitted: the default's update dispatched op by op takes seconds.
        # The second update: the first is 0, where the schedule's warmup starts.
        update = jax.jit(transform.update)
        _, state = update(params, transform.init(params), params, loss=jax.numpy.float32(2.3))
        updates, _ = update(params, state, params, loss=jax.numpy.float32(2.3))
        assert all(bool(jax.numpy.isfinite(u).all()) for u in jax.tree.leaves(updates))
        assert any(bool((u != 0).any()) for u in jax.tree.leaves(updates)), name
