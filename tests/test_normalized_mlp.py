"""The normalized rule (lopt.normalized_mlp) and its Optax harness: what each kind of tensor gets, that the
harness is ordinary Optax, and that the schedule is optax's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from lopt import accumulators as acc, normalized_mlp
from lopt.harness import warmup_cosine, warmup_decay


@pytest.fixture(scope="module")
def mlp():
    task = tasks.get_task("mlp_digits_8x8", width=32, batch_size=64, parameterization="sp")
    params = task.init(jax.random.key(0))
    grads = jax.grad(task.loss)(params, task.batch(task.data, jax.random.key(2)), None)
    return task, params, task.roles(params), grads


def _rms(x):
    return float(jnp.sqrt(jnp.mean(jnp.square(x))))


def test_every_matrix_moves_by_the_same_rms_and_hidden_matrices_are_orthogonalized(mlp):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(0))
    theta["mlp"] = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(jax.random.key(5), w.shape), theta["mlp"])
    rule = optimizer.rule(theta, 100, roles)
    directions, _ = jax.jit(rule.update)(jax.tree.map(lambda g: 1e-3 * g, grads), rule.init(params), params)
    assert _rms(directions["input"]["kernel"]) == pytest.approx(0.2, rel=1e-4)
    assert _rms(directions["readout"]["kernel"]) == pytest.approx(0.2, rel=1e-4)
    hidden = np.asarray(directions["hidden_1"]["kernel"])
    singular_values = np.linalg.svd(hidden, compute_uv=False)
    assert singular_values.max() / singular_values.min() < 2.0  # Newton-Schulz's quintic leaves them in ~[0.7, 1.2]
    assert _rms(hidden) == pytest.approx(0.2, rel=0.3)


def test_vectors_get_adams_direction_and_each_group_its_learned_scale(mlp):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(0))
    theta["log_group_scales"] = jnp.log(jnp.asarray([1.0, 3.0, 0.5]))
    base = optimizer.rule(optimizer.init(jax.random.key(0)), 100, roles)
    scaled = optimizer.rule(theta, 100, roles)
    base_directions, _ = base.update(grads, base.init(params), params)
    directions, _ = scaled.update(grads, scaled.init(params), params)
    adam, _ = optax.scale_by_adam().update(grads, optax.scale_by_adam().init(params), params)
    np.testing.assert_allclose(directions["input"]["bias"], 0.5 * adam["input"]["bias"], rtol=1e-5)
    np.testing.assert_allclose(directions["input"]["kernel"], 3.0 * base_directions["input"]["kernel"], rtol=1e-5)
    np.testing.assert_allclose(directions["hidden_1"]["kernel"], base_directions["hidden_1"]["kernel"], rtol=1e-5)


def test_conv_kernels_and_embedding_tables_take_their_fixed_extra_step_and_dense_tensors_none():
    shapes = {"embed": {"embedding": (12, 8)}, "conv": {"kernel": (3, 3, 2, 8), "bias": (8,)},
              "query": {"kernel": (8, 2, 4)}, "readout": {"kernel": (8, 4)}}  # query: flax attention's layout
    roles = {"embed": {"embedding": "input"}, "conv": {"kernel": "hidden", "bias": "vector"},
             "query": {"kernel": "hidden"}, "readout": {"kernel": "output"}}
    keys = iter(jax.random.split(jax.random.key(0), 16))
    params = jax.tree.map(lambda shape: jax.random.normal(next(keys), shape), shapes,
                          is_leaf=lambda x: isinstance(x, tuple))
    grads = jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape), params)
    base_optimizer = lopt.NormalizedMLPLOpt(hidden_size=4)
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4, conv_step=5.0, embedding_step=3.0)
    theta = base_optimizer.init(jax.random.key(1))
    directions = {}
    for name, opt in (("base", base_optimizer), ("kinds", optimizer)):
        rule = opt.rule(theta, 100, roles)
        directions[name], _ = jax.jit(rule.update)(grads, rule.init(params), params)
    base, kinds = directions["base"], directions["kinds"]
    np.testing.assert_allclose(kinds["conv"]["kernel"], 5.0 * base["conv"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(kinds["embed"]["embedding"], 3.0 * base["embed"]["embedding"], rtol=1e-6)
    np.testing.assert_array_equal(kinds["readout"]["kernel"], base["readout"]["kernel"])
    np.testing.assert_array_equal(kinds["query"]["kernel"], base["query"]["kernel"])
    np.testing.assert_array_equal(kinds["conv"]["bias"], base["conv"]["bias"])
    with pytest.raises(ValueError, match="conv_step"):
        lopt.NormalizedMLPLOpt(conv_step=0.0)


def test_an_untrained_theta_steps_along_per_tensor_normalized_adam(mlp):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4, orthogonalize=False)
    rule = optimizer.rule(optimizer.init(jax.random.key(0)), 100, roles)
    directions, _ = rule.update(grads, rule.init(params), params)
    # One gradient, no bias correction: momentum 0.1 g, second moment 0.001 g^2, so m / sqrt(v) is sign(g).
    kernel = np.asarray(grads["hidden_1"]["kernel"])
    expected = np.sign(kernel) * (kernel != 0)
    expected = 0.2 * expected / np.sqrt(np.mean(expected ** 2))
    np.testing.assert_allclose(directions["hidden_1"]["kernel"], expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_the_default_transform_is_the_rule_in_an_ordinary_optax_chain(mlp, shape):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4, schedule=shape)
    theta = optimizer.init(jax.random.key(0))
    # A 5-step run: a 1-step warmup, then at step 2 cosine's 0.75 of the peak and linear's 2/3.
    ours = optimizer.transform(theta, 5, roles)
    composed = optax.chain(optimizer.rule(theta, 5, roles), optax.add_decayed_weights(optimizer.decoupled_weight_decay(theta)),
                           optax.scale_by_learning_rate(warmup_decay(shape, optimizer.peak_learning_rate(theta), 5)))
    ours_state, composed_state = ours.init(params), composed.init(params)
    for step in range(3):
        a, ours_state = ours.update(grads, ours_state, params, loss=jnp.float32(1.0))
        b, composed_state = composed.update(grads, composed_state, params)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-12)
    assert float(optimizer.peak_learning_rate(theta)) == pytest.approx(0.01)
    assert float(optimizer.decoupled_weight_decay(theta)) == pytest.approx(0.01)


def test_it_trains_a_model_and_a_saved_theta_loads_as_the_same_optimizer(mlp, tmp_path):
    task, params, roles, _ = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(0))
    lopt.save(tmp_path / "rule", optimizer, theta, description="test")
    loaded = lopt.load(tmp_path / "rule", num_steps=100, roles=roles)
    result = tasks.train.train(task, loaded, 100, log_every=25, log=lambda line: None)
    reference = tasks.train.train(task, optimizer.transform(theta, 100, roles), 100, log_every=25,
                                     log=lambda line: None)
    assert result.train_loss == reference.train_loss and result.train_loss < 0.5


def test_without_roles_every_matrix_is_treated_as_hidden(mlp):
    _, params, _, _ = mlp
    labels = lopt.NormalizedMLPLOpt().labels(None)(params)
    assert labels["input"] == {"kernel": "hidden", "bias": "vector"} and labels["readout"]["kernel"] == "hidden"


def test_invalid_settings_name_the_field():
    with pytest.raises(ValueError, match="orthogonalize=True"):
        lopt.NormalizedMLPLOpt(parameterization="mup")
    with pytest.raises(ValueError, match="momentum_decays"):
        lopt.NormalizedMLPLOpt(momentum_decays=(0.9,))
    with pytest.raises(ValueError, match="initial_learning_rate"):
        lopt.NormalizedMLPLOpt(initial_learning_rate=0.0)
    with pytest.raises(ValueError, match="weight_decay=-1.0: must be non-negative"):
        lopt.NormalizedMLPLOpt(weight_decay=-1.0)
    with pytest.raises(ValueError, match="schedule='step': one of cosine, linear"):
        lopt.NormalizedMLPLOpt(schedule="step")


@pytest.mark.parametrize("num_steps", [1, 2, 20, 200, 1001])
def test_the_schedule_is_optaxs_warmup_cosine_and_takes_a_traced_horizon(num_steps):
    warmup = max(1, round(0.05 * num_steps))
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.3, warmup_steps=warmup,
                                                   decay_steps=max(num_steps - 1, warmup + 1), end_value=0.0)
    counts = np.arange(num_steps + 2)
    ours = jax.jit(lambda n: jax.vmap(warmup_cosine(0.3, n))(counts))(jnp.int32(num_steps))
    np.testing.assert_allclose(ours, [float(reference(c)) for c in counts], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("num_steps", [1, 2, 20, 1001])
def test_the_linear_schedule_is_optaxs_two_joined_linear_schedules_and_takes_a_traced_horizon(num_steps):
    warmup = max(1, round(0.05 * num_steps))
    reference = optax.join_schedules([optax.linear_schedule(0.0, 0.3, warmup),
                                      optax.linear_schedule(0.3, 0.0, max(num_steps - 1, warmup + 1) - warmup)],
                                     [warmup])
    counts = np.arange(num_steps + 2)
    ours = jax.jit(lambda n: jax.vmap(warmup_decay("linear", 0.3, n))(counts))(jnp.int32(num_steps))
    np.testing.assert_allclose(ours, [float(reference(c)) for c in counts], rtol=1e-5, atol=1e-7)


def test_the_warmup_cosine_schedule_rises_for_5_percent_and_reaches_0_at_the_last_step():
    schedule = warmup_cosine(0.1, 200)
    rates = np.asarray([float(schedule(step)) for step in range(200)])
    assert rates[0] == 0 and rates[10] == pytest.approx(0.1) and rates[-1] == 0  # 5% of 200 steps: 10
    np.testing.assert_allclose(rates[:11], np.linspace(0, 0.1, 11), rtol=1e-5)
    assert np.all(np.diff(rates[10:]) <= 0) and rates[-2] > 0
    assert float(warmup_cosine(jax.numpy.float32(0.3), 20)(19)) == 0  # a traced peak (a grid) as well


def test_load_rule_gives_the_direction_to_chain_with_a_schedule_of_your_own(mlp, tmp_path):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4)
    theta = optimizer.init(jax.random.key(0))
    lopt.save(tmp_path / "rule", optimizer, theta)
    rule = lopt.load_rule(tmp_path / "rule", num_steps=10, roles=roles)
    mine = optax.chain(rule, optax.scale_by_learning_rate(optax.constant_schedule(0.1)))
    updates, _ = mine.update(grads, mine.init(params), params)
    directions, _ = optimizer.rule(theta, 10, roles).update(grads, optimizer.rule(theta, 10, roles).init(params), params)
    np.testing.assert_allclose(updates["input"]["kernel"], -0.1 * directions["input"]["kernel"], rtol=1e-6)
    lopt.save(tmp_path / "adam", lopt.Adam(), lopt.Adam().init(None))
    with pytest.raises(lopt.SpecError, match="no separate rule"):
        lopt.load_rule(tmp_path / "adam", num_steps=10)


def test_width_scaling_sizes_each_matrix_by_the_spectral_condition(mlp):
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4, width_scaling=True)
    theta = optimizer.init(jax.random.key(0))
    assert theta["log_group_scales"].shape == (4,)  # hidden, input, output, vector
    rule = optimizer.rule(theta, 100, roles)
    directions, _ = rule.update(grads, rule.init(params), params)
    width = params["hidden_1"]["kernel"].shape[0]  # 32: steps 4x the RMS they take at width 128
    assert _rms(directions["input"]["kernel"]) == pytest.approx(0.2, rel=1e-4)
    assert _rms(directions["readout"]["kernel"]) == pytest.approx(0.2 * 128 / width, rel=1e-4)
    spectral_norm = np.linalg.norm(np.asarray(directions["hidden_1"]["kernel"]), ord=2)
    assert spectral_norm == pytest.approx(0.2 * np.sqrt(128), rel=0.25)  # square: sqrt(max(1, out / in)) = 1
    with pytest.raises(ValueError, match="width_scaling=True"):
        lopt.NormalizedMLPLOpt(parameterization="mup", orthogonalize=False, width_scaling=True)


def test_a_sample_visits_every_column_and_small_tensors_are_taken_whole():
    matrix = jnp.arange(784 * 512, dtype=jnp.float32).reshape(784, 512)
    sample = normalized_mlp.sampled(matrix, matrix.shape, 4096)
    assert 4000 < sample.shape[0] <= 4096 and len(set(np.asarray(sample).astype(int) % 512)) == 512
    statistic = jnp.stack([matrix, -matrix], axis=-1)  # a statistic keeps its trailing axis
    np.testing.assert_array_equal(normalized_mlp.sampled(statistic, matrix.shape, 4096), jnp.stack([sample, -sample], -1))
    small = jnp.ones((32, 64))
    assert normalized_mlp.sampled(small, small.shape, 4096).shape == (2048,)


def test_sampled_feature_scales_give_nearly_the_exact_rules_direction():
    params = {"wide": jax.random.normal(jax.random.key(0), (512, 256)) / 16, "small": jnp.ones((8, 4))}
    exact = lopt.NormalizedMLPLOpt(hidden_size=4, orthogonalize=False)
    theta = exact.init(jax.random.key(0))
    theta["mlp"] = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(jax.random.key(5), w.shape), theta["mlp"])
    estimated = lopt.NormalizedMLPLOpt(hidden_size=4, orthogonalize=False, feature_sample=4096)
    rules = [optimizer.rule(theta, 100) for optimizer in (exact, estimated)]
    states = [rule.init(params) for rule in rules]
    for step in range(5):
        # gradients whose scale varies across columns, as a model's do
        grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(step), p.shape) * jnp.linspace(0.1, 2, p.shape[-1])[None],
                             params)
        (a, states[0]), (b, states[1]) = (rule.update(grads, state, params) for rule, state in zip(rules, states))
    np.testing.assert_array_equal(a["small"], b["small"])  # taken whole: the exact rule
    assert float(jnp.linalg.norm(a["wide"] - b["wide"]) / jnp.linalg.norm(a["wide"])) < 0.02
    assert not np.array_equal(a["wide"], b["wide"])
    with pytest.raises(ValueError, match="feature_sample=-1"):
        lopt.NormalizedMLPLOpt(feature_sample=-1)




def test_a_matrix_direction_is_the_mlp_on_its_features_each_divided_by_its_rms(mlp):
    # The rule written out in float64 for an un-orthogonalized matrix, two steps in: the fused, one-pass
    # form the rule runs must compute the same numbers.
    _, params, roles, grads = mlp
    optimizer = lopt.NormalizedMLPLOpt(hidden_size=4, orthogonalize=False)
    theta = optimizer.init(jax.random.key(0))
    theta["mlp"] = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(jax.random.key(5), w.shape), theta["mlp"])
    rule = optimizer.rule(theta, 100, roles)
    steps = [jax.tree.map(lambda g: 1e-3 * g, grads), jax.tree.map(lambda g: -2e-3 * g + 1e-4, grads)]
    state = rule.init(params)
    for step_grads in steps:
        directions, state = rule.update(step_grads, state, params)
    kernel = lambda tree: np.asarray(tree["input"]["kernel"], np.float64)  # noqa: E731
    momentum_decays = np.asarray(acc.learned_decays(optimizer.momentum_decays, theta["momentum_decays"]), np.float64)
    second_moment_decay = float(acc.learned_decays((optimizer.second_moment_decay,), theta["second_moment_decays"])[0])
    momenta, second_moment = [np.zeros_like(kernel(params)) for _ in range(3)], np.zeros_like(kernel(params))
    for step_grads in steps:
        grad = kernel(step_grads)
        momenta = [d * m + (1 - d) * grad for d, m in zip(momentum_decays, momenta)]
        second_moment = second_moment_decay * second_moment + (1 - second_moment_decay) * grad ** 2
    columns = [grad, kernel(params), *momenta, *(m / np.sqrt(second_moment + 1e-20) for m in momenta)]
    layers = jax.tree.map(lambda w: np.asarray(w, np.float64), theta["mlp"])
    units = sum(c / np.sqrt(1e-5 + np.mean(c ** 2)) * layers["layer_0"]["w"][i][:, None, None]
                for i, c in enumerate(columns)) + (0.01 * layers["layer_0"]["w"][8] + layers["layer_0"]["b"])[:, None, None]
    for index in (1, 2):
        units = np.einsum("ixy,ij->jxy", np.maximum(units, 0), layers[f"layer_{index}"]["w"])
        units = units + layers[f"layer_{index}"]["b"][:, None, None]
    expected = 0.2 * units[0] / np.sqrt(np.mean(units[0] ** 2))
    np.testing.assert_allclose(kernel(directions), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 12), (3, 3, 4, 8), (2, 5000), (3, 1031)])
def test_mean_squares_is_each_columns_mean_square_whatever_the_rows_length(shape):
    # (2, 5000): rows longer than MAX_ROW are split; (3, 1031): a prime longer than it, summed entry by entry.
    columns = [jax.random.normal(jax.random.key(i), shape) * (i + 1) for i in range(3)]
    expected = [np.mean(np.square(np.asarray(column, np.float64))) for column in columns]
    np.testing.assert_allclose(jax.jit(normalized_mlp.mean_squares)(columns), expected, rtol=1e-6)


def test_written_once_changes_no_value():
    x = jax.random.normal(jax.random.key(0), (3, 3, 4, 8))
    np.testing.assert_array_equal(jax.jit(normalized_mlp.written_once)(x), x)
