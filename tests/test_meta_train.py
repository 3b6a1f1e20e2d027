"""The outer loop: devices, checkpoints that survive a killed process, TensorBoard files, bad input."""

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lopt
from meta_train.__main__ import main
from meta_train import checkpointing
from meta_train.checkpointing import WorkdirError
from meta_train.config import ConfigError, MetaTrainConfig, preset, with_overrides
from meta_train.sharding import task_mesh
from meta_train.train import MetaTrainingError, export_checkpoint, meta_train
from meta_train.trainer import MetaTrainer
from tests.process_helpers import kill_after_first_checkpoint

# Seconds-long runs on 10-d quadratics; every field change below is a --set a user could type.
TINY = ["optimizer.hidden_size=4", "workers_per_config=4", "truncation_length=5", "min_inner_length=20", "max_inner_length=60",
        "checkpoint_every=50", "log_every=50", "keep_checkpoints=2", "eval_steps=100"]


def tiny(*more: str) -> MetaTrainConfig:
    return with_overrides(preset("quadratic"), TINY + list(more))


def final_theta(workdir: Path):
    _, theta, _ = lopt.load_optimizer(workdir / "optimizer")
    return theta


def assert_same_theta(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One uninterrupted run, 600 outer steps, with the comparison against Adam."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    lines = []
    result = meta_train(tiny("outer_steps=600"), workdir, log=lines.append)
    return workdir, result, lines


def test_a_run_writes_checkpoints_tensorboard_and_a_loadable_optimizer(finished_run):
    workdir, result, lines = finished_run
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [550, 600]
    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"meta_loss", "meta_grad_norm", "outer_learning_rate", "diverged_fraction",
            "inner_steps_per_second"} <= tags
    assert [event.step for event in events.Scalars("meta_loss")] == list(range(50, 601, 50))
    assert all(np.isfinite(event.value) for event in events.Scalars("meta_grad_norm"))
    assert_same_theta(final_theta(workdir), jax.device_get(result.theta))
    assert "learned optimizer at its initialization" in result.comparison and "Adam" in result.comparison
    # The comparison reports each run as it ends, then says what the meta-objective was and where things are.
    assert any(line.startswith("comparing on the held-out task") and "Muon" in line
               and "(26 runs)" in line for line in lines)
    assert sum(line.startswith("  [") and "/26] " in line for line in lines) == 26
    assert "The meta-objective was training loss" in lines[-1] and str(workdir / "comparison.json") in lines[-1]
    assert f"tensorboard --logdir {workdir / 'tensorboard'}" in lines[-1]


def test_a_checkpoint_exports_for_lopt_load(finished_run, tmp_path):
    workdir, result, _ = finished_run
    exported = export_checkpoint(workdir, log=lambda line: None)  # the newest: step 600, the final theta
    assert exported == workdir / "optimizer_step_600"
    optimizer, theta, spec = lopt.load_optimizer(exported)
    assert_same_theta(theta, jax.device_get(result.theta))
    assert spec["provenance"]["outer_steps"] == 600 and spec["provenance"]["config"]["outer_steps"] == 600
    _, earlier, _ = lopt.load_optimizer(export_checkpoint(workdir, 550, tmp_path / "at_550", log=lambda line: None))
    assert not np.array_equal(earlier["mlp"]["layer_0"]["w"], theta["mlp"]["layer_0"]["w"])
    with pytest.raises(WorkdirError, match=r"no checkpoint of step 7; it holds steps \[550, 600\]"):
        export_checkpoint(workdir, 7, log=lambda line: None)


def test_meta_training_beats_its_initialization_on_the_held_out_task(finished_run):
    workdir, _, _ = finished_run
    rows = {row["optimizer"]: row for row in json.loads((workdir / "comparison.json").read_text())["rows"]}
    trained, initial = rows["learned optimizer"], rows["learned optimizer at its initialization"]
    assert trained["train_loss"] < 0.7 * initial["train_loss"], rows
    # Each row records how many runs were vmapped together (its rounding): the two thetas, each grid.
    assert {row["runs_per_group"] for name, row in rows.items() if "learned" in name} == {2}
    assert {row["runs_per_group"] for name, row in rows.items() if "tuned over 8" in name} == {8}, rows


def test_killed_run_resumes_to_the_same_theta(finished_run, tmp_path):
    """A real process killed with SIGKILL mid-run, then resumed, ends where the uninterrupted run did."""
    uninterrupted, _, _ = finished_run
    workdir = tmp_path / "killed"
    command = [sys.executable, "-m", "meta_train", "--config", "quadratic", "--workdir", str(workdir),
               "--no-compare"] + [arg for field in TINY + ["outer_steps=600"] for arg in ("--set", field)]
    kill_after_first_checkpoint(command, workdir, timeout=120)
    lines = []
    meta_train(tiny("outer_steps=600"), workdir, resume=True, compare=False, log=lines.append)
    assert any(line.startswith("resuming from the checkpoint at step") for line in lines), lines
    assert_same_theta(final_theta(workdir), final_theta(uninterrupted))


def test_a_comparison_too_large_for_memory_says_how_to_finish_and_loses_nothing(finished_run, tmp_path, monkeypatch):
    import tasks

    workdir = tmp_path / "no_room"
    shutil.copytree(finished_run[0], workdir)
    (workdir / "comparison.json").unlink()
    monkeypatch.setattr(tasks.memory, "device_memory_bytes", lambda: 1)
    with pytest.raises(MetaTrainingError, match=r"the comparison on eval_task .* cannot run: the held-out task with "
                       r"learned optimizer: one run needs about .*saved at .*optimizer; rerun with --resume --no-compare"):
        meta_train(tiny("outer_steps=600"), workdir, resume=True, log=lambda line: None)
    assert_same_theta(final_theta(workdir), final_theta(finished_run[0]))
    lines = []
    result = meta_train(tiny("outer_steps=600"), workdir, resume=True, compare=False, log=lines.append)
    assert result.optimizer_path == workdir / "optimizer" and not (workdir / "comparison.json").exists()


def test_a_damaged_checkpoint_falls_back_to_the_one_before(finished_run, tmp_path):
    uninterrupted, _, _ = finished_run
    workdir = tmp_path / "damaged"
    shutil.copytree(uninterrupted, workdir)
    shutil.rmtree(workdir / "optimizer")
    for path in (workdir / "checkpoints" / "600").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    lines = []
    meta_train(tiny("outer_steps=600"), workdir, resume=True, compare=False, log=lines.append)
    assert any("checkpoint at step 600 is unreadable" in line for line in lines), lines
    assert "resuming from the checkpoint at step 550" in lines
    assert_same_theta(final_theta(workdir), final_theta(uninterrupted))
    assert len(list((workdir / "damaged_checkpoints").iterdir())) == 1  # kept aside, not deleted
    lines.clear()  # step 600 was written again, readable
    meta_train(tiny("outer_steps=600"), workdir, resume=True, compare=False, log=lines.append)
    assert "resuming from the checkpoint at step 600" in lines, lines


def test_a_checkpoint_of_another_state_layout_is_refused_and_left_alone(finished_run, tmp_path):
    """A checkpoint written by a version of meta_train whose state had other arrays is intact: the resume
    names the difference and moves nothing aside as damaged."""
    uninterrupted, _, _ = finished_run
    workdir = tmp_path / "other_layout"
    shutil.copytree(uninterrupted, workdir)
    trainer = MetaTrainer(tiny("outer_steps=600"))
    state = trainer.init()
    older = state._replace(meta_opt_state=trainer.meta_optimizer.init(state.theta))  # per-leaf, as before
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    with checkpointing.manager(workdir, keep=2) as manager:
        with pytest.raises(WorkdirError, match=r"step 600 .* another layout .*meta_opt_state.*--force"):
            checkpointing.restore_newest_good(manager, older, print)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_a_workdir_of_another_run_is_refused_and_left_alone(finished_run, tmp_path):
    workdir, _, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    with pytest.raises(WorkdirError, match="another config.*sigma"):
        meta_train(tiny("outer_steps=600", "sigma=0.1"), workdir)
    # The same config, finished, is read back (logging alone is no other config); unfinished, it is refused.
    assert meta_train(tiny("outer_steps=600", "log_every=10"), workdir, log=lambda line: None).seconds == 0
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before
    unfinished = tmp_path / "unfinished"
    shutil.copytree(workdir, unfinished)
    shutil.rmtree(unfinished / "optimizer")
    with pytest.raises(WorkdirError, match="--resume continues it"):
        meta_train(tiny("outer_steps=600"), unfinished)
    # A run recorded by an earlier version (every setting flat, older names) is the same config.
    older = tmp_path / "older"
    older.mkdir()
    recorded = json.loads((workdir / "config.json").read_text())
    flat = {**{name: value for name, value in recorded.items() if name != "optimizer"},
            **recorded["optimizer"]["settings"], "architecture": recorded["optimizer"]["architecture"],
            "num_tasks": recorded["workers_per_config"], "learning_rate": recorded["outer_learning_rate"],
            "role_scales": False}
    del flat["workers_per_config"], flat["outer_learning_rate"], flat["weight_decay"], flat["learning_rate_scale"]
    (older / "config.json").write_text(json.dumps(flat))
    checkpointing.check_workdir(older, tiny("outer_steps=600"), resume=True, force=False)


def test_the_meta_gradient_is_the_same_on_one_and_on_four_devices():
    cpus = jax.devices("cpu")
    assert len(cpus) >= 4, "conftest asks XLA for four CPU devices"
    config = tiny()
    thetas, gradient_norms = [], []
    for devices in (cpus[:1], cpus[:4]):
        trainer = MetaTrainer(config, task_mesh(config.workers_per_config, devices))
        state, data = trainer.init(), trainer.data()
        norms = []
        for _ in range(3):
            state, metrics = trainer.step(state, data)
            norms.append(float(metrics["meta_grad_norm"]))
        workers = state.estimator_states[0].workers
        assert len(workers.step.sharding.device_set) == len(devices)
        thetas.append(jax.device_get(state.theta))
        gradient_norms.append(norms)
    # The norm catches a meta-gradient off by a factor (Adam and clipping would hide it in theta).
    np.testing.assert_allclose(*gradient_norms, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *thetas)


def test_an_es_single_run_resumed_from_its_checkpoint_ends_at_the_same_theta(tmp_path):
    """ES-Single's state (each run's perturbation), split over four devices as the workers are, goes into
    the checkpoint with them."""
    config = tiny("estimator=es_single", "outer_steps=100")
    meta_train(config, tmp_path / "whole", compare=False, log=lambda line: None)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "100")
    shutil.rmtree(tmp_path / "resumed" / "optimizer")
    lines = []
    meta_train(config, tmp_path / "resumed", resume=True, compare=False, log=lines.append)
    assert "resuming from the checkpoint at step 50" in lines, lines
    assert_same_theta(final_theta(tmp_path / "resumed"), final_theta(tmp_path / "whole"))
    assert not np.array_equal(final_theta(tmp_path / "whole")["mlp"]["layer_0"]["w"],
                              MetaTrainer(config).init().theta["mlp"]["layer_0"]["w"])


def test_a_record_of_a_removed_option_reads_when_it_was_off_and_is_refused_when_on():
    record = {**tiny().to_record(), "expert": "none", "imitation_weight": 1.0, "imitation_decay_from": 0.0,
              "imitation_decay_to": 0.5, "failure_buffer": 0, "failure_share": 0.25}
    assert MetaTrainConfig.from_record(record) == tiny()
    with pytest.raises(ConfigError, match=r"^the record has expert='muon', an option since removed"):
        MetaTrainConfig.from_record({**record, "expert": "muon"})
    with pytest.raises(ConfigError, match=r"^the record has failure_buffer=4, an option since removed"):
        MetaTrainConfig.from_record({**record, "failure_buffer": 4})


def test_bad_input_gets_a_clear_message(capsys, tmp_path):
    assert main(["--config", "nope", "--workdir", str(tmp_path / "a")]) == 2
    assert "unknown preset 'nope'; known: default, mulo, orthogonal_mlp, quadratic" in capsys.readouterr().err
    assert main(["--set", "hiden_size=3", "--workdir", str(tmp_path / "a")]) == 2
    assert "unknown config field 'hiden_size'" in capsys.readouterr().err
    assert main(["--set", "optimizer.hiden_size=3", "--workdir", str(tmp_path / "a")]) == 2
    assert "normalized_mlp has no setting 'hiden_size'; its settings: hidden_size," in capsys.readouterr().err
    assert main(["--set", "sigma=big", "--workdir", str(tmp_path / "a")]) == 2
    assert "sigma takes a float, got 'big'" in capsys.readouterr().err
    assert main(["--set", "optimizer=mlp_lopt", "optimizer.horizon_schedule=maybe", "--workdir", str(tmp_path / "a")]) == 2
    assert "optimizer.horizon_schedule takes true or false, got 'maybe'" in capsys.readouterr().err
    mlp = with_overrides(MetaTrainConfig(), ["optimizer=mlp_lopt", "optimizer.horizon_schedule=True"])
    assert mlp.optimizer == lopt.MLPLOpt(horizon_schedule=True)
    with pytest.raises(ConfigError, match="lstm_lopt has no setting 'init_rule'"):
        with_overrides(MetaTrainConfig(), ["optimizer=lstm_lopt", "optimizer.init_rule=adam"])
    with pytest.raises(ConfigError, match="optimizer='sgd': one of adam, lstm_lopt"):
        with_overrides(MetaTrainConfig(), ["optimizer=sgd"])
    # Each setting is checked once, by the architecture, whether it comes from --set or from lopt.
    with pytest.raises(ConfigError, match="NormalizedMLPLOpt: orthogonalize=True sets the hidden steps' size"):
        with_overrides(preset("default"), ["optimizer.parameterization=mup"])
    assert with_overrides(preset("default"), ["optimizer.schedule=linear"]).optimizer.schedule == "linear"
    with pytest.raises(ConfigError, match="schedule='step': one of cosine, linear"):
        with_overrides(preset("default"), ["optimizer.schedule=step"])
    assert with_overrides(preset("default"), ["optimizer.weight_decay=none"]).optimizer.weight_decay is None
    assert with_overrides(preset("default"), ["optimizer.momentum_decays=0.8,0.9,0.95"]).optimizer.momentum_decays == (
        0.8, 0.9, 0.95)
    shipped_rule = preset("default").optimizer  # the main job meta-trains the shipped default's rule
    shipped, shipped_theta, _ = lopt.load_optimizer(lopt.DEFAULT)
    assert shipped_rule == shipped
    # It meta-trains the rule's step sizes, decays and momenta: every entry of its theta but the MLP's.
    assert set(preset("default").meta_train_only.split(",")) == set(shipped_theta) - {"mlp"}
    np.testing.assert_array_equal(shipped_rule.init(jax.random.key(0))["fit_decay"], shipped_theta["fit_decay"])
    with pytest.raises(ConfigError, match="initial_fit_gain=nan: must be a finite number"):
        with_overrides(preset("default"), ["optimizer.initial_fit_gain=nan"])
    with pytest.raises(ConfigError, match="conv_step=0.0: must be positive and finite"):
        with_overrides(preset("default"), ["optimizer.conv_step=0"])
    assert main(["--set", "estimator=sgd", "--workdir", str(tmp_path / "a")]) == 2
    assert "must be one of pes, es_single, truncated_es, full_es, tbptt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="workers_per_config='8': must be an int"):
        dataclasses.replace(MetaTrainConfig(), workers_per_config="8")
    with pytest.raises(ConfigError, match="outer_weight_decay=-0.1: must be non-negative"):
        dataclasses.replace(MetaTrainConfig(), outer_weight_decay=-0.1)
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_the_mulo_preset_lowers_the_meta_loss_and_beats_its_initialization(tmp_path):
    """A short budget of the default preset (about two minutes here)."""
    config = with_overrides(preset("mulo"), ["outer_steps=400", "log_every=20", "eval_steps=500"])
    result = meta_train(config, tmp_path, log=lambda line: None)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    meta_losses = [event.value for event in events.Scalars("meta_loss")]
    assert np.mean(meta_losses[-5:]) < 0.6 * np.mean(meta_losses[:3]), meta_losses
    rows = {row["optimizer"]: row for row in json.loads((tmp_path / "comparison.json").read_text())["rows"]}
    assert rows["learned optimizer"]["train_loss"] < 0.5 * rows["learned optimizer at its initialization"]["train_loss"]
    assert result.optimizer_path.is_dir()


@pytest.mark.slow  # tests/test_tasks.py checks the augmentation itself
def test_augmented_runs_see_the_same_function_and_the_meta_loss_can_mix_in_validation_or_weigh_the_end():
    import tasks
    from meta_train.truncation import ConstantLength
    from meta_train.unroll import Unroller

    task = tasks.get_task("mlp_digits_8x8", width=8, batch_size=16)
    optimizer = lopt.Adam(learning_rate=0.01)  # the cheapest rule to compile: the test is about the meta-loss
    thetas = jax.tree.map(lambda leaf: np.stack([leaf, leaf]), optimizer.init(jax.random.key(0)))

    def first_losses(**settings):
        unroller = Unroller(task, optimizer, ConstantLength(50), num_particles=2, max_meta_loss=3.0, **settings)
        worker = unroller.init(thetas, jax.random.key(1), stagger=False)
        return np.asarray(unroller.unroll(thetas, worker, unroller.data, 3)[1].meta_losses[0])

    plain = first_losses()
    augmented = first_losses(augmentation=tasks.Augmentation("parameter", 100.0, 10.0))
    # Step 1 measures the loss at init, where the augmented task is the same function (scale taken out);
    # after a step in other coordinates it is another run.
    assert augmented[0] == pytest.approx(plain[0], rel=1e-5) and augmented[2] != pytest.approx(plain[2], rel=1e-3)
    valid = first_losses(meta_loss_split="valid")
    mixed = first_losses(meta_loss_split="mix", valid_weight=0.25)
    np.testing.assert_allclose(mixed, 0.75 * plain + 0.25 * valid, rtol=1e-5)
    late = first_losses(time_power=2.0)  # steps 1-3 of runs of 50: weights 3 (step / 50)^2
    np.testing.assert_allclose(late, plain * 3 * (np.arange(1, 4) / 50) ** 2, rtol=1e-5)
    with pytest.raises(ConfigError, match="meta_loss_time_power=-1.0: must lie in"):
        dataclasses.replace(MetaTrainConfig(), meta_loss_time_power=-1.0)
    with pytest.raises(ConfigError, match="meta_loss_split='test': must be one of train, valid, mix"):
        dataclasses.replace(MetaTrainConfig(), meta_loss_split="test")
    with pytest.raises(ConfigError, match="reparam='layer': must be one of none, global, tensor, parameter"):
        dataclasses.replace(MetaTrainConfig(), reparam="layer")


def test_fields_show_the_chosen_presets_values(capsys):
    assert main(["--config", "mulo", "--set", "reparam=tensor", "--fields"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = [line.split(":")[0].split(" = ")[0] for line in lines]
    # Generated from the declarations: the optimizer's settings, then each config field once, in order.
    assert fields == (["optimizer"] + [f"optimizer.{field.name}" for field in dataclasses.fields(lopt.MLPLOpt)]
                      + [field.name for field in dataclasses.fields(MetaTrainConfig)][1:])
    assert "num_task_configs: int = 4 (default 6)  # configs drawn" in "\n".join(lines)
    assert "reparam: str = 'tensor' (default 'none')" in "\n".join(lines)
    assert "optimizer.hidden_size: int = 4 (default 32)  # units of each hidden layer" in "\n".join(lines)


def test_running_a_finished_run_again_prints_its_result(finished_run):
    workdir, result, _ = finished_run
    lines = []
    start = time.perf_counter()
    again = meta_train(tiny("outer_steps=600"), workdir, log=lines.append)
    assert time.perf_counter() - start < 10  # read back, not trained
    assert again.comparison == result.comparison and "already holds this run, finished" in lines[0]
    assert "--force starts it over" in lines[0]
    assert_same_theta(again.theta, final_theta(workdir))
    # Another config is still refused, with the way to meta-train the finished result further.
    with pytest.raises(WorkdirError, match=r"holds a run of another config .*init_from=.*optimizer in another workdir"):
        meta_train(tiny("outer_steps=700"), workdir, log=lines.append)


def test_a_run_can_start_from_a_saved_optimizer_and_meta_train_only_part_of_its_theta(tmp_path):
    """init_from: theta starts as a saved optimizer's, with the entries a setting adds (fit_decay) at their
    start, and fixed factors outside theta (conv_step, embedding_step) free to differ; meta_train_only: the
    rest stays exactly as it started, AdamW's weight decay included."""
    source = tiny()
    saved = jax.device_get(MetaTrainer(source).init().theta)
    # float32 under numpy 1.x too, whose scalar + Python float is float64 (a theta save refuses)
    saved["log_learning_rate"] = saved["log_learning_rate"] + np.float32(1.0)  # not the architecture's own start
    lopt.save(tmp_path / "start", source.optimizer, saved, description="test")
    config = tiny(f"init_from={tmp_path / 'start'}", "optimizer.fit_decay=true", "optimizer.conv_step=5",
                  "optimizer.embedding_step=3",
                  "meta_train_only=fit_decay,log_weight_decay")
    trainer = MetaTrainer(config)
    state, data = trainer.init(), trainer.data()
    started = jax.device_get(state.theta)
    assert_same_theta({name: started[name] for name in saved}, saved)
    np.testing.assert_array_equal(started["fit_decay"], np.zeros(2))
    for _ in range(3):
        state, _ = trainer.step(state, data)
    theta = jax.device_get(state.theta)
    assert_same_theta({name: theta[name] for name in saved if name != "log_weight_decay"},
                      {name: saved[name] for name in saved if name != "log_weight_decay"})
    assert np.all(theta["fit_decay"] != 0) and theta["log_weight_decay"] != saved["log_weight_decay"]
    # What does not fit is refused in one line naming it, before anything is written.
    with pytest.raises(ConfigError, match=r"init_from=.* differs in optimizer.hidden_size \(it has 4, this config 8\)"):
        MetaTrainer(with_overrides(config, ["optimizer.hidden_size=8"]))
    with pytest.raises(ConfigError, match=r"init_from='nowhere': "):
        MetaTrainer(with_overrides(config, ["init_from=nowhere"]))
    with pytest.raises(ConfigError, match=r"fit_decay not in this optimizer's theta.*--set meta_train_only= meta-trains all"):
        MetaTrainer(with_overrides(config, ["optimizer.fit_decay=false", "init_from="]))
    with pytest.raises(ConfigError, match=r"meta_train_only='fit_decays': fit_decays not in this optimizer's theta, whose entries are fit_decay, log_group"):
        MetaTrainer(with_overrides(config, ["meta_train_only=fit_decays"]))


def test_progress_lines_give_a_rate_only_after_the_window_that_compiled():
    import io

    from meta_train.progress import Progress

    stream = io.StringIO()
    progress = Progress(6, 0, 2, stream=stream)
    for step in range(1, 7):
        progress.update(step, {"meta_loss": 1.0 / step})
    first, *rest = stream.getvalue().splitlines()
    assert first.startswith("step 2/6  meta-loss 0.5000  ") and first.endswith("s, compilation included")
    assert [line.split("  ")[0] for line in rest] == ["step 4/6", "step 6/6"]
    assert all(" steps/s  eta " in line for line in rest)
