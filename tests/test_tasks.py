"""Every registered task trains-ready; configs validate, serialize and are found by name."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_registered_task_has_finite_loss_and_nonzero_gradient(name, key):
    task = tasks.get_task(name)
    params = task.init(key)

    @jax.jit
    def loss_and_grad(params, data, key):
        batch = task.batch(data, key)
        (loss, aux), grads = jax.value_and_grad(task.loss_and_aux, has_aux=True)(params, batch, key)
        return loss, aux, grads, task.normalize_loss(loss)

    loss, aux, grads, normalized = loss_and_grad(params, task.data, key)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    assert jnp.isfinite(loss) and jnp.isfinite(grad_norm)
    assert grad_norm > 0
    assert 0.2 < normalized < 5, "the normalizer puts an untrained model's loss near 1"
    assert all(jnp.isfinite(value) for value in aux.values())
    roles = task.roles(params)
    assert jax.tree.structure(roles) == jax.tree.structure(params)
    assert set(jax.tree.leaves(roles)) <= set(tasks.ROLES)


def test_batches_are_deterministic_in_the_key_and_differ_across_keys(key):
    task = tasks.get_task("mlp_digits_8x8", batch_size=8)
    sample = jax.jit(task.batch, static_argnames="split")
    first, again = sample(task.data, key), sample(task.data, key)
    other = sample(task.data, jax.random.key(1))
    np.testing.assert_array_equal(first[0], again[0])  # (images, labels)
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (8, 8, 8, 1) and first[1].dtype == jnp.int32
    valid = sample(task.data, key, split="valid")
    assert not np.array_equal(first[0], valid[0])


def test_mlp_roles_follow_mup(key):
    task = tasks.get_task("mlp_digits_8x8", depth=3)
    roles = task.roles(task.init(key))
    assert roles["input"] == {"kernel": "input", "bias": "input"}
    assert roles["hidden_1"]["kernel"] == "hidden" and roles["hidden_2"]["kernel"] == "hidden"
    assert roles["readout"] == {"kernel": "output", "bias": "input"}


def test_mup_readout_is_zero_and_sp_readout_is_not(key):
    mup = tasks.get_task("mlp_digits_8x8").init(key)
    sp = tasks.get_task("mlp_digits_8x8", parameterization="sp").init(key)
    assert not jnp.any(mup["readout"]["kernel"])
    width = sp["readout"]["kernel"].shape[0]
    assert jnp.std(sp["readout"]["kernel"]) == pytest.approx(width ** -0.5, rel=0.2)
    # Hidden weights are N(0, 1/fan_in) in both parameterizations.
    assert jnp.std(mup["hidden_1"]["kernel"]) == pytest.approx(width ** -0.5, rel=0.2)


@pytest.mark.parametrize("change, field", [
    (dict(width=0), "width"),
    (dict(depth=-1), "depth"),
    (dict(parameterization="ntk"), "parameterization"),
    (dict(activation="swish9"), "activation"),
    (dict(batch_size=2.5), "batch_size"),
])
def test_invalid_config_values_are_refused_naming_the_field(change, field):
    with pytest.raises(tasks.ConfigError, match=rf"ImageMLPConfig\.{field}="):
        tasks.task_config("mlp_mnist_14x14", **change)


def test_transformer_width_must_be_a_multiple_of_head_dim():
    with pytest.raises(tasks.ConfigError, match=r"LanguageModelConfig\.width=40: must be a multiple of head_dim=16"):
        tasks.task_config("transformer_shakespeare", width=40)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="unknown task 'mlp_cifar'; known: .*mlp_mnist_14x14"):
        tasks.get_task("mlp_cifar")
    with pytest.raises(KeyError, match="unknown task family 'nope'; known: .*mlp_images"):
        tasks.get_family("nope")
    with pytest.raises(ValueError, match="unknown image dataset 'imagenet'; known: digits, mnist, cifar10:PATH"):
        tasks.ImageMLPConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="unknown text dataset 'wiki'; known: shakespeare, text:PATH"):
        tasks.LanguageModelConfig(dataset="wiki")
    with pytest.raises(tasks.ConfigError, match="has no field colour"):
        tasks.task_config("mlp_mnist_14x14", colour="red")


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_configs_round_trip_through_json(name):
    config = tasks.TASKS[name]
    assert tasks.config_from_dict(json.loads(config.to_json())) == config
    assert hash(config) == hash(tasks.config_from_dict(config.to_dict()))


def test_default_family_samples_mlps_of_widths_32_to_128_on_8x8_and_14x14_images():
    family = tasks.get_family("mlp_images")
    configs = [family.sample(jax.random.key(seed)) for seed in range(64)]
    assert configs[5] == family.sample(jax.random.key(5)), "sampling is deterministic in the key"
    assert {c.width for c in configs} == {32, 64, 128}
    assert {(c.dataset, c.image_size) for c in configs} == {("digits", 8), ("mnist", 8), ("mnist", 14)}
    assert {c.parameterization for c in configs} == {"mup"}
    assert isinstance(family.task(configs[0]), tasks.Task)


def test_a_runs_task_configs_cover_every_choice_of_the_family():
    """Meta-training holds a few configs for its whole length: drawn stratified, 4 of them cover the 3
    image sets, the 3 widths and both depths, whatever the key."""
    family = tasks.get_family("mlp_images")
    for seed in range(20):
        configs = family.sample_many(jax.random.key(seed), 4)
        assert {(c.dataset, c.image_size) for c in configs} == {("digits", 8), ("mnist", 8), ("mnist", 14)}
        assert {c.width for c in configs} == {32, 64, 128}
        assert sorted(c.depth for c in configs) == [1, 1, 2, 2]
        assert sorted(c.batch_size for c in configs) == [64, 64, 128, 128]
    assert family.sample_many(jax.random.key(3), 4) == family.sample_many(jax.random.key(3), 4)
    quadratics = tasks.get_family("quadratics")  # other families draw independently
    assert quadratics.sample_many(jax.random.key(0), 2) == [quadratics.sample(jax.random.fold_in(jax.random.key(0), i))
                                                             for i in range(2)]


def test_family_choices_are_validated():
    with pytest.raises(tasks.ConfigError, match=r"ImageMLPFamily\.widths=\(\): must be a non-empty tuple"):
        tasks.ImageMLPFamily(widths=())
    with pytest.raises(tasks.ConfigError, match=r"ImageMLPConfig\.image_size=0"):
        tasks.ImageMLPFamily(datasets=(("mnist", 0),))


def test_quadratic_loss_is_half_x_a_x(key):
    task = tasks.get_task("quadratic_10d")
    params = task.init(key)
    batch = task.batch(task.data, key)
    matrix = np.asarray(task.data["matrix"])
    np.testing.assert_allclose(np.linalg.eigvalsh(matrix)[[0, -1]], [1.0, 100.0], rtol=1e-4)
    x = np.asarray(params["x"])
    assert float(task.loss(params, batch, key)) == pytest.approx(0.5 * x @ matrix @ x, rel=1e-5)


@pytest.mark.parametrize("name", ["mlp_mnist_8x8", "teacher_student", "quadratic_10d"])
def test_data_first_touched_inside_a_trace_is_cached_concrete(name):
    """The device-data caches must never keep tracers, whichever transformation asks first."""
    from tasks import image, procedural

    image.image_device_data.cache_clear()
    procedural._teacher_student_arrays.cache_clear()
    procedural._quadratic_matrix.cache_clear()
    task = tasks.get_task(name)
    jax.eval_shape(lambda key: task.batch(task.data, key), jax.random.key(0))
    assert all(not isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(task.data))


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_the_held_out_batch_is_fixed_and_of_the_split_asked_for(name):
    task = tasks.get_task(name)
    held_out = jax.jit(task.held_out, static_argnames="split")
    first, again = held_out(task.data), held_out(task.data, split="valid")
    jax.tree.map(np.testing.assert_array_equal, first, again)
    train = held_out(task.data, split="train")
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(train))) \
        or name == "quadratic_10d"  # the quadratic's held-out batch is its noise-free objective


def test_held_out_sets_are_the_whole_small_split_or_a_fixed_sample_of_a_large_one():
    from tasks.datasets import HELD_OUT_EXAMPLES, HELD_OUT_WINDOWS, held_out_examples, held_out_windows

    mnist = tasks.get_task("mlp_mnist_14x14")
    whole = mnist.held_out(mnist.data)
    np.testing.assert_array_equal(whole[0], mnist.data["valid"][0])  # 500 images: all of them
    large = {"input": jnp.arange(3 * HELD_OUT_EXAMPLES, dtype=jnp.float32), "target": jnp.zeros(3 * HELD_OUT_EXAMPLES)}
    sample = held_out_examples(large)["input"]
    assert sample.shape == (HELD_OUT_EXAMPLES,) and len(np.unique(sample)) == HELD_OUT_EXAMPLES
    np.testing.assert_array_equal(sample, held_out_examples(large)["input"])
    tokens = jnp.arange(10_000)
    windows = held_out_windows(tokens, 33)
    assert windows.shape == (HELD_OUT_WINDOWS, 33) and windows[0, 0] == 0 and windows[-1, -1] == 9_999
    np.testing.assert_array_equal(windows[:, 1:] - windows[:, :-1], 1)  # contiguous windows


def test_a_grid_trained_in_one_program_matches_each_setting_trained_alone():
    import optax

    task = tasks.get_task("quadratic_10d")
    rates = [1e-3, 1e-2, 1e-1]
    together = tasks.train_each(task, optax.adam, jnp.asarray(rates), 20, log_every=10, log=lambda line: None)
    key_init, key_train = jax.random.split(jax.random.key(0))
    for rate, result in zip(rates, together):
        # The reference: 20 plain steps of train_step, keyed as train documents (a key per logging chunk).
        params, opt_state, losses = task.init(key_init), optax.adam(rate).init(task.init(key_init)), []
        for chunk in range(2):
            for key in jax.random.split(jax.random.fold_in(key_train, chunk), 10):
                params, opt_state, loss = tasks.train_step(task, optax.adam(rate), params, opt_state, task.data, key)
                losses.append(float(loss))
        np.testing.assert_allclose(result.train_loss, np.mean(losses[10:]), rtol=1e-5)
        np.testing.assert_allclose(result.valid_loss, tasks.train.held_out_metrics(task, params, task.data)[0],
                                   rtol=1e-5)
        jax.tree.map(lambda mine, its: np.testing.assert_allclose(mine, its, rtol=1e-5), result.params, params)
    assert together[0].train_loss > together[2].train_loss  # the settings differ, not one run copied
    for settings, message in (([1e-3, 1e-2], r"\[0\] .*jnp.asarray\(rates\)"), (jnp.asarray(1e-3), r"leading sizes \[0\]"),
                              (jnp.zeros(0), r"leading sizes \[0\]"), ({}, "of no leaves"),
                              ({"a": jnp.zeros(2), "b": jnp.zeros(3)}, r"leading sizes \[2, 3\]")):
        with pytest.raises(ValueError, match="settings: a pytree of arrays with one leading axis"):
            tasks.train_each(task, optax.adam, settings, 2, log=lambda line: None)
        with pytest.raises(ValueError, match=message):
            tasks.train_each(task, optax.adam, settings, 2, log=lambda line: None)


def test_a_grid_too_large_for_memory_runs_in_groups_and_one_run_too_large_is_refused(monkeypatch):
    import optax

    task = tasks.get_task("mlp_digits_8x8", width=8, depth=1)  # minibatches: each group must draw the same ones
    rates = jnp.asarray([1e-3, 1e-2, 3e-2, 1e-1, 3e-1])
    together = tasks.train_each(task, optax.adam, rates, 20, log_every=10, log=lambda line: None)
    lines = []
    in_threes = tasks.train_each(task, optax.adam, rates, 20, log_every=10, log=lines.append, parallel=np.int64(4))
    # Four at most: two groups of three (the last padded by one copy), each line its group's real runs' losses.
    assert [line.partition(": step")[0] for line in lines] == ["runs 1-3 of 5"] * 2 + ["runs 4-5 of 5"] * 2
    assert [len(line.split("train loss ")[1].split(", ")) for line in lines] == [3, 3, 2, 2]
    assert len(in_threes) == 5 and all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(in_threes[0].params))
    # Each result records the batch size its rounding depends on: its group's, padding included.
    assert [r.runs_per_group for r in together] == [5] * 5 and [r.runs_per_group for r in in_threes] == [3] * 5
    for alone, grouped in zip(together, in_threes):  # the same runs, up to the group size's rounding
        np.testing.assert_allclose(grouped.train_loss, alone.train_loss, rtol=1e-4)
        np.testing.assert_allclose(grouped.valid_loss, alone.valid_loss, rtol=1e-4)
    # With parallel left to memory, a device that holds two runs' estimate runs groups of two (on a task
    # that compiles faster).
    task = tasks.get_task("quadratic_10d")
    one_run = tasks.memory.estimate(task, optax.adam(1e-3)).total
    monkeypatch.setattr(tasks.memory, "device_memory_bytes", lambda: int(2.5 * one_run / tasks.memory.USABLE_SHARE))
    lines.clear()
    in_pairs = tasks.train_each(task, optax.adam, rates, 20, log_every=10, log=lines.append)
    assert [line.partition(": step")[0] for line in lines] == ["runs 1-2 of 5"] * 2 + ["runs 3-4 of 5"] * 2 + ["run 5 of 5"] * 2
    monkeypatch.setattr(tasks.memory, "device_memory_bytes", lambda: 1)
    with pytest.raises(tasks.TooLargeError, match=r"^my grid: one run needs about \d+\.\d GiB"):
        tasks.train_each(task, optax.adam, rates, 20, log=lambda line: None, label="my grid")
    assert tasks.train_each(task, optax.adam, rates[:1], 20, log_every=10, log=lambda line: None)[0].train_loss == \
        pytest.approx(in_pairs[0].train_loss, rel=1e-4)  # one run is not estimated, and is the grid's first
    # The groups share their compiled program: only the first group's one chunk is left out of the throughput.
    one_chunk = tasks.train_each(task, optax.adam, rates[:2], 10, log_every=10, log=lambda line: None, parallel=1)
    assert np.isnan(one_chunk[0].steps_per_second) and one_chunk[1].steps_per_second > 0
    for parallel in (0, 2.0, True):
        with pytest.raises(ValueError, match=rf"parallel={parallel!r}: a positive number of runs, or None"):
            tasks.train_each(task, optax.adam, rates, 20, parallel=parallel)


def test_the_lstm_language_model_has_hidden_gate_matrices_and_learns(key):
    import optax

    task = tasks.get_task("lstm_shakespeare", width=16, sequence_length=8, batch_size=4)
    params = task.init(key)
    roles = task.roles(params)
    assert roles["lstm_0"]["recurrent_gates"] == "hidden" and roles["lstm_0"]["input_gates"]["kernel"] == "hidden"
    assert roles["embed"]["embedding"] == "input" and roles["readout"]["kernel"] == "output"
    # Forget gates start open (bias 1), the other gates at 0.
    assert np.asarray(params["lstm_0"]["input_gates"]["bias"]).reshape(4, 16).mean(axis=1).tolist() == [0, 1, 0, 0]
    result = tasks.train.train(task, optax.adam(1e-2), 100, log_every=50, log=lambda line: None)
    assert result.train_loss < 0.85 * np.log(task.vocab_size)  # from the uniform guess towards unigram statistics
    # The result holds the trained model: its held-out loss is the one reported.
    held_out = tasks.train.held_out_metrics(task, result.params, task.data)[0]
    np.testing.assert_allclose(float(held_out), result.valid_loss, rtol=1e-5)


def test_the_autoencoder_reconstructs_its_input_and_the_tabular_task_is_standardized(key):
    autoencoder = tasks.get_task("autoencoder_mnist_14x14", width=32, code_size=4)
    batch = autoencoder.batch(autoencoder.data, key)
    np.testing.assert_array_equal(batch[0], batch[1])
    params = autoencoder.init(key)
    roles = autoencoder.roles(params)
    assert (roles["encoder"]["kernel"], roles["code"]["kernel"], roles["decoder"]["kernel"],
            roles["readout"]["kernel"]) == ("input", "output", "input", "output")
    assert float(autoencoder.loss(params, batch, key)) == pytest.approx(float(jnp.mean(batch[0] ** 2)))
    diabetes = tasks.get_task("mlp_diabetes").data
    assert {split: len(targets) for split, (_, targets) in diabetes.items()} == {"train": 354, "valid": 44,
                                                                                      "test": 44}
    np.testing.assert_allclose(np.mean(diabetes["train"][0], axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.std(diabetes["train"][1]), 1, rtol=1e-5)


def test_the_tabular_classifiers_keep_class_ids_and_start_at_a_uniform_guess(key):
    for name, classes, sizes in (("mlp_breast_cancer", 2, {"train": 455, "valid": 57, "test": 57}),
                                 ("mlp_wine", 3, {"train": 142, "valid": 18, "test": 18})):
        task = tasks.get_task(name)  # muP: a zero readout, so the loss at init is log(classes)
        data = task.data
        assert {split: len(targets) for split, (_, targets) in data.items()} == sizes
        assert set(np.unique(data["train"][1])) == set(range(classes))
        np.testing.assert_allclose(np.mean(data["train"][0], axis=0), 0, atol=1e-5)
        params = task.init(key)
        assert float(task.loss(params, task.batch(data, key), key)) == pytest.approx(np.log(classes), rel=1e-5)
    with pytest.raises(tasks.ConfigError, match="dataset"):
        tasks.get_task("mlp_wine", dataset="diabetes")  # a regression set is not a classifier's


@pytest.mark.parametrize("level", ["global", "tensor", "parameter"])
def test_augmentation_keeps_the_loss_at_init_and_scales_the_gradient_as_stated(level, key):
    task = tasks.get_task("mlp_digits_8x8", width=16, parameterization="sp")
    augmentation = tasks.Augmentation(level, reparam_max=100.0, loss_scale_max=10.0)
    factors = augmentation.sample(jax.random.key(7), jax.eval_shape(task.init, key))
    scales = jax.tree.leaves(factors.scales)
    assert all(np.all((s >= 1e-2) & (s <= 1e2)) for s in scales) and 0.1 <= factors.loss_scale <= 10
    if level == "global":
        assert len({float(s) for s in scales}) == 1
    elif level == "tensor":
        assert len({float(s) for s in scales}) == len(scales) and all(np.ndim(s) == 0 for s in scales)
    else:
        assert [s.shape for s in scales] == [leaf.shape for leaf in jax.tree.leaves(task.init(key))]
    augmented = augmentation.apply(task, factors)
    batch = task.batch(task.data, key)
    weights, stored = task.init(key), augmented.init(key)
    # The same function at init: the loss is c times the task's, and normalize_loss takes c out again.
    loss = augmented.loss(stored, batch, key)
    np.testing.assert_allclose(loss, factors.loss_scale * task.loss(weights, batch, key), rtol=1e-5)
    np.testing.assert_allclose(augmented.normalize_loss(loss), task.normalize_loss(task.loss(weights, batch, key)),
                               rtol=1e-5)
    # d loss / d u = c * s * d loss / d w.
    grad_u, grad_w = jax.grad(augmented.loss)(stored, batch, key), jax.grad(task.loss)(weights, batch, key)
    jax.tree.map(lambda gu, gw, s: np.testing.assert_allclose(gu, factors.loss_scale * s * gw, rtol=1e-3, atol=1e-6),
                 grad_u, grad_w, factors.scales)
    assert not tasks.Augmentation().active and augmentation.active
    with pytest.raises(tasks.ConfigError, match=r"Augmentation.reparam='layer': must be one of none, global"):
        tasks.Augmentation("layer")


def test_the_command_line_reports_bad_input_in_one_line(capsys, tmp_path):
    from tasks.__main__ import main

    for argv, message in ((["train", "mlp_digits_8x8", "--steps", "0"], "--steps 0 must be a positive integer"),
                          (["train", "mlp_digits_8x8", "--log-every", "-5"], "--log-every -5 must be a positive integer"),
                          (["train", "mlp_digits_8x8", "--set", f"dataset=npz:{tmp_path / 'none.npz'}"],
                           "none.npz does not exist"),
                          (["train", "nope"], "unknown task 'nope'")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_command_line_trains_any_positive_number_of_steps_logging_at_each_multiple_and_the_end(capsys):
    """--steps need not be a multiple of --log-every (300 with the default 200 was refused before): the
    last logging interval is the shorter remainder, and one shorter than --log-every is the whole run."""
    from tasks.__main__ import main

    for steps, log_every, logged in (("7", "3", [3, 6, 7]), ("2", "200", [2])):
        assert main(["train", "quadratic_10d", "--steps", steps, "--log-every", log_every]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [int(line.split()[1]) for line in lines if line.startswith("step ")] == logged
        assert lines[-1].startswith(f"after {steps} steps: training loss ")
        # A throughput where a chunk reused a compiled program (the second of 3 steps), none otherwise.
        assert ("steps/s after compiling" in lines[-1]) == (steps == "7")
    with pytest.raises(ValueError, match="num_steps=0 and log_every=3 must be positive"):
        tasks.train.train(tasks.get_task("quadratic_10d"), tasks.train.OPTIMIZERS["adam"](1e-2), 0, log_every=3)


def test_a_conv_nets_steps_on_cpu_are_dispatched_from_python_with_the_loops_keys_and_results(monkeypatch):
    import optax
    from tasks import train as train_module
    conv, mlp = tasks.get_task("conv_digits_8x8", width=4), tasks.get_task("mlp_digits_8x8", width=8, depth=1)
    # On CPU a model with convolutions steps from Python (XLA runs its gradient slowly inside a loop).
    assert tasks.steps_from_python(conv) == (jax.default_backend() == "cpu") and not tasks.steps_from_python(mlp)
    rates = jnp.asarray([1e-3, 3e-2])
    stepped = tasks.train_each(conv, optax.adam, rates, 7, log_every=5, log=lambda line: None)
    # Only the first chunk compiles the one stepped program: the shorter last one is timed.
    assert stepped[0].steps_per_second > 0 or jax.default_backend() != "cpu"
    monkeypatch.setattr(train_module, "steps_from_python", lambda task: False)
    looped = tasks.train_each(conv, optax.adam, rates, 7, log_every=5, log=lambda line: None)
    for one, other in zip(stepped, looped):  # the same steps and batches, up to rounding
        for field in ("train_loss", "valid_loss", "valid_accuracy"):
            np.testing.assert_allclose(getattr(one, field), getattr(other, field), rtol=1e-5)
