"""learned_optimization checkpoints: parity with that library's own trajectories, the converter, the gin
reader and the messages for bad input."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import checkpoints
import lopt
from lopt import gin_config
from lopt.__main__ import main as lopt_main

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "learned_optimization"
FOLDERS = {"adafac_mlp_lopt_h4": "mlp_lopt", "adafac_mlp_lopt_h32": "mlp_lopt", "mlp_lopt": "momentum_mlp_lopt",
           "hyper_v2_small": "velo", "hyper_v2_velo_arch": "velo"}
# Relative to the size of each update, beyond the rounding of the reference's float32 parameters.
TOLERANCE = 1e-5
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"reference trajectories not found at {FIXTURES}")


class Trajectory:
    """A learned_optimization inner run: initial params, then (gradient, loss, next params) per step."""

    def __init__(self, folder):
        self.data = np.load(FIXTURES / folder / "trajectory.npz")
        self.names = sorted({key.split("/", 1)[1] for key in self.data.files if key.startswith("params_0/")})
        self.num_steps, self.steps = int(self.data["num_steps"]), int(self.data["steps"])

    def params(self, step):
        return {name: jnp.asarray(self.data[f"params_{step}/{name}"]) for name in self.names}

    def grads(self, step):
        return {name: jnp.asarray(self.data[f"grad_{step}/{name}"]) for name in self.names}

    def loss(self, step):
        return jnp.float32(self.data[f"loss_{step}"])


def run(transform, trajectory):
    """Our updates at every step, each from the reference's parameters of that step."""
    update = jax.jit(transform.update)
    state = transform.init(trajectory.params(0))
    updates = []
    for step in range(trajectory.steps):
        step_updates, state = update(trajectory.grads(step), state, trajectory.params(step), loss=trajectory.loss(step))
        updates.append(jax.tree.map(np.asarray, step_updates))
    return updates


def relative_error(ours, params, next_params):
    """|ours - reference update| / |reference update|, where the reference update is next_params - params
    less what rounding next_params to float32 may have moved it (half a unit in its last place)."""
    reference = np.asarray(next_params, np.float64) - np.asarray(params, np.float64)
    rounding = np.spacing(np.abs(np.asarray(next_params, np.float32))).astype(np.float64) / 2
    beyond_rounding = np.maximum(np.abs(np.asarray(ours, np.float64) - reference) - rounding, 0.0)
    return np.linalg.norm(beyond_rounding) / np.linalg.norm(reference)


@pytest.fixture(scope="module")
def runs():
    """{folder: (our updates per step, trajectory)}, computed once through lopt.load."""
    cache = {}

    def get(folder):
        if folder not in cache:
            trajectory = Trajectory(folder)
            cache[folder] = run(lopt.load(FIXTURES / folder, num_steps=trajectory.num_steps), trajectory), trajectory
        return cache[folder]

    return get


@needs_fixtures
@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_update_of_learned_optimizations_trajectory_is_reproduced(folder, runs):
    optimizer, _, spec = lopt.load_optimizer(FIXTURES / folder)
    assert optimizer.architecture == FOLDERS[folder] and optimizer.parameterization == "sp"
    assert spec["provenance"]["converted_from"] == "learned_optimization"
    updates, trajectory = runs(folder)
    errors = {(step, name): relative_error(updates[step][name], trajectory.params(step)[name],
                                           trajectory.params(step + 1)[name])
              for step in range(trajectory.steps) for name in trajectory.names}
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"step {worst[0]}, {worst[1]}: relative error {errors[worst]:.2e}"


@needs_fixtures
def test_velo_at_its_released_size(runs):
    optimizer, theta, _ = lopt.load_optimizer(FIXTURES / "hyper_v2_velo_arch")
    assert (optimizer.lstm_hidden_size, optimizer.num_mlps, optimizer.use_bugged_next_lstm_state,
            optimizer.use_bugged_loss_features) == (512, 256, True, True)
    # 2,320,385 in the reference, less the projection it discards (30 x 512 + 512) and the third output of
    # each of the 256 per-parameter MLPs (4 + 1 each).
    assert sum(x.size for x in jax.tree.leaves(theta)) == 2_320_385 - (30 * 512 + 512) - 256 * 5
    lopt.check_theta(optimizer, theta)


@needs_fixtures
@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_conversion_keeps_the_architecture_and_every_meta_parameter(folder, tmp_path):
    destination = lopt.convert_learned_optimization(FIXTURES / folder / "params", tmp_path / "converted")
    assert (destination / "spec.json").is_file() and (destination / "theta").is_dir()
    optimizer, theta, spec = lopt.load_optimizer(destination)
    source_optimizer, source_theta, source_spec = lopt.load_optimizer(FIXTURES / folder)
    assert optimizer == lopt.from_spec(spec["optimizer"]) == source_optimizer
    assert spec["provenance"]["gin_arguments"] == source_spec["provenance"]["gin_arguments"]
    assert jax.tree.structure(theta) == jax.tree.structure(source_theta)
    for converted, original in zip(jax.tree.leaves(theta), jax.tree.leaves(source_theta)):
        np.testing.assert_array_equal(converted, original)


@needs_fixtures
def test_converted_checkpoint_loads_with_lopt_load_and_gives_identical_updates(runs, tmp_path):
    destination = lopt.convert_learned_optimization(FIXTURES / "mlp_lopt", tmp_path / "converted")
    reference_updates, trajectory = runs("mlp_lopt")
    updates = run(lopt.load(destination, num_steps=trajectory.num_steps), trajectory)
    for ours, reference in zip(updates, reference_updates):
        for name in trajectory.names:
            np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)


@needs_fixtures
def test_command_line_converter(tmp_path, capsys):
    assert lopt_main(["convert", str(FIXTURES / "mlp_lopt"), str(tmp_path / "converted")]) == 0
    assert "momentum_mlp_lopt" in capsys.readouterr().out
    assert lopt.load_optimizer(tmp_path / "converted")[0] == lopt.MomentumMLPLOpt(hidden_size=32)
    assert lopt_main(["convert", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "no learned_optimization checkpoint" in capsys.readouterr().err


def _checkpoint(tmp_path, folder, config=None, params=None):
    """A copy of a fixture checkpoint with its config.gin and params file optionally replaced."""
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    if params is None:
        shutil.copy(FIXTURES / folder / "params", directory / "params")
    else:
        (directory / "params").write_bytes(params)
    text = (FIXTURES / folder / "config.gin").read_text() if config is None else config
    if text is not False:
        (directory / "config.gin").write_text(text)
    return directory


def _fails_and_writes_nothing(tmp_path, source, error, match):
    with pytest.raises(error, match=match):
        lopt.convert_learned_optimization(source, tmp_path / "converted")
    assert not [path for path in tmp_path.iterdir() if path.name != "checkpoint"]


@needs_fixtures
def test_unsupported_architecture_names_itself_and_the_supported_ones(tmp_path):
    source = _checkpoint(tmp_path, "mlp_lopt", config="run_train.lopt = @LOLv1()\n")
    _fails_and_writes_nothing(tmp_path, source, lopt.SpecError,
                              r"architecture 'LOLv1' is not supported. Supported: AdafacMLPLOpt .*HyperV2 .*MLPLOpt")


@needs_fixtures
def test_params_that_do_not_fit_the_config_name_the_tensor_and_both_shapes(tmp_path):
    config = "run_train.lopt = @HyperV2()\nHyperV2.lstm_hidden_size = 32\nHyperV2.param_inits = 8\n"
    source = _checkpoint(tmp_path, "hyper_v2_small", config=config)
    _fails_and_writes_nothing(tmp_path, source, lopt.SpecError,
                              r"tensor 'rnn_params/linear/w' has shape \(30, 16\); HyperV2\(lstm_hidden_size=32, "
                              r"param_inits=8\) expects \(30, 32\)")


@needs_fixtures
def test_missing_and_extra_tensors_are_named(tmp_path):
    record = serialization.msgpack_restore((FIXTURES / "adafac_mlp_lopt_h4" / "params").read_bytes())
    del record["params"]["nn"]["~"]["b2"]
    source = _checkpoint(tmp_path, "adafac_mlp_lopt_h4", params=serialization.msgpack_serialize(record))
    with pytest.raises(lopt.SpecError, match=r"needs the tensor 'nn/~/b2' of shape \(2,\), which is missing"):
        lopt.load(source, num_steps=10)
    record = serialization.msgpack_restore((FIXTURES / "adafac_mlp_lopt_h4" / "params").read_bytes())
    record["params"]["extra"] = np.zeros(3, np.float32)
    (source / "params").write_bytes(serialization.msgpack_serialize(record))
    with pytest.raises(lopt.SpecError, match=r"'extra' is not a parameter of AdafacMLPLOpt\(hidden_layers=2"):
        lopt.load(source, num_steps=10)


@needs_fixtures
def test_missing_config_says_what_it_must_hold(tmp_path):
    source = _checkpoint(tmp_path, "hyper_v2_small", config=False)
    _fails_and_writes_nothing(tmp_path, source / "params", checkpoints.CheckpointError,
                              r"(?s)has no config.gin beside it. It names the architecture and its arguments.*"
                              r"run_train.lopt = @HyperV2\(\)")


@needs_fixtures
def test_settings_our_reimplementation_lacks_are_refused(tmp_path):
    config = "run_train.lopt = @HyperV2()\nHyperV2.precondition_output = True\n"
    source = _checkpoint(tmp_path, "hyper_v2_small", config=config)
    _fails_and_writes_nothing(tmp_path, source, lopt.SpecError,
                              r"HyperV2.precondition_output = True is not supported")
    (source / "config.gin").write_text("run_train.lopt = @HyperV2()\nHyperV2.lstm_size = 16\n")
    _fails_and_writes_nothing(tmp_path, source, lopt.SpecError, r"HyperV2.lstm_size is not an argument")
    (source / "config.gin").write_text("run_train.lopt = 3\n")
    _fails_and_writes_nothing(tmp_path, source, lopt.SpecError, r"does not name the learned optimizer")
    (source / "params").write_bytes(b"not msgpack at all")
    (source / "config.gin").write_text((FIXTURES / "hyper_v2_small" / "config.gin").read_text())
    _fails_and_writes_nothing(tmp_path, source, checkpoints.CheckpointError, r"not a learned_optimization checkpoint")


@needs_fixtures
def test_a_training_runs_full_operative_config_loads(tmp_path):
    config = """from __gin__ import dynamic_registration
import learned_optimization.research.general_lopt.hyper_v2

# Parameters for HyperV2:
# ==============================================================================
hyper_v2.HyperV2.lstm_hidden_size = 16
hyper_v2.HyperV2.param_inits = 8
HyperV2.summarize_each_layer = False
HyperV2.use_bugged_loss_features = False

# Parameters for run_train:
# ==============================================================================
run_train.lopt = @HyperV2()
run_train.outer_learner_fn = @GradientLearner
run_train.num_steps = 100000
run_train.trainer_batch_size = %NUM_TASKS
NUM_TASKS = 8
build_gradient_estimators.sample_task_family_fn = \\
    @get_task_family
outer_clip.value = float('inf')
"""
    optimizer, _, _ = lopt.load_optimizer(_checkpoint(tmp_path, "hyper_v2_small", config=config))
    assert optimizer == lopt.load_optimizer(FIXTURES / "hyper_v2_small")[0]


def test_gin_bindings_are_read_as_data():
    text = """
# Parameters for HyperV2:
# ====
import learned_optimization.research.general_lopt.hyper_v2
run_train.lopt = @lopt_scope/hyper_v2.HyperV2()  # trailing comment
HyperV2.lstm_hidden_size = 128
lopt_scope/HyperV2.lstm_hidden_size = 512
HyperV2.initial_momentum_decays = (0.9,
    0.99,   # spread over lines
    0.999)
HyperV2.step_mult = 1e-3
HyperV2.exp_mult = %EXP
EXP = -2.5
HyperV2.names = ['a#b', "c"]
HyperV2.single = (4)
HyperV2.one = (4,)
HyperV2.table = {'x': None, 'y': [True, False]}
HyperV2.long = \\
    7
"""
    bindings = gin_config.parse(text)
    reference = bindings["run_train.lopt"]
    assert reference == gin_config.Reference(name="HyperV2", scope="lopt_scope", called=True)
    assert gin_config.arguments(bindings, reference) == {
        "lstm_hidden_size": 512, "initial_momentum_decays": (0.9, 0.99, 0.999), "step_mult": 1e-3,
        "exp_mult": -2.5, "names": ["a#b", "c"], "single": 4, "one": (4,),
        "table": {"x": None, "y": [True, False]}, "long": 7}
    with pytest.raises(gin_config.GinError, match=r"config.gin:2: unclosed bracket"):
        gin_config.parse("a.b = 1\nHyperV2.x = (1, 2\n")
    with pytest.raises(gin_config.GinError, match=r"config.gin:1: expected `Name.argument = value`"):
        gin_config.parse("HyperV2.x 3\n")
    lenient = gin_config.parse("HyperV2.x 3\nouter.clip = float('inf')\nHyperV2.y = 2\n", strict=False)
    assert lenient == {"outer.clip": gin_config.Unparsed("float('inf')"), "HyperV2.y": 2}
