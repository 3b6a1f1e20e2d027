"""Learned optimizers as Optax transforms: training, muP scaling, dtypes, roles and compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from tests.lopt_helpers import EVERY_ARCHITECTURE, normalized_descent_theta

@pytest.fixture(scope="module")
def digits():
    task = tasks.get_task("mlp_digits_8x8", width=32, batch_size=64)
    params = task.init(jax.random.key(0))
    return task, params, task.roles(params)


def train(task, params, transform, steps):
    """A jitted flax training loop with the transform chained after gradient clipping."""
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), transform)

    @jax.jit
    def run(params, data, key):
        def step(carry, key):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, task.batch(data, key), key)
            updates, opt_state = optimizer.update(grads, opt_state, params, loss=loss)
            return (optax.apply_updates(params, updates), opt_state), loss

        _, losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
        return losses

    return run(params, task.data, jax.random.key(1))


def test_mlp_lopt_in_an_optax_chain_lowers_the_loss(digits):
    task, params, roles = digits
    optimizer = lopt.MLPLOpt(hidden_size=4)
    transform = optimizer.transform(normalized_descent_theta(optimizer, 0.02), num_steps=200, roles=roles)
    losses = train(task, params, transform, 200)
    assert losses[-20:].mean() < 0.6 * losses[:5].mean(), losses[::20]


def test_adam_through_the_interface_matches_optax_adam(digits):
    task, params, _ = digits
    adam = lopt.Adam(learning_rate=3e-3)
    ours = train(task, params, adam.transform(adam.init(None), num_steps=30), 30)
    reference = train(task, params, optax.adam(3e-3), 30)
    # theta holds log(lr) and log(1 - beta); float32 exp(log(x)) differs from x in the last bits.
    np.testing.assert_allclose(ours, reference, rtol=1e-4)


# VeLO and the LSTM take the base class's muP rule as mlp_lopt, mu_adam and momentum_mlp_lopt do, and their
# updates compile the longest: slow tests.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in ("velo", "lstm_lopt") else name
                                  for name in sorted(EVERY_ARCHITECTURE)])
def test_mup_divides_exactly_the_hidden_updates_by_fan_in(name, digits):
    optimizer = EVERY_ARCHITECTURE[name]
    task, params, roles = digits
    grads = jax.grad(task.loss)(params, task.batch(task.data, jax.random.key(2)), None)
    theta = optimizer.init(jax.random.key(0))
    sp_optimizer = type(optimizer)(**{**optimizer.settings(), "parameterization": "sp"})
    updates = {}
    for parameterization, opt in (("mup", optimizer), ("sp", sp_optimizer)):
        transform = opt.transform(theta, 100, roles)
        updates[parameterization], _ = jax.jit(transform.update)(grads, transform.init(params), params,
                                                                 loss=jnp.float32(2.3))
    for path, role in jax.tree_util.tree_flatten_with_path(roles)[0]:
        mup_update = np.asarray(_at(updates["mup"], path))
        sp_update = np.asarray(_at(updates["sp"], path))
        expected = sp_update / lopt.mup.fan_in(sp_update) if role == "hidden" else sp_update
        np.testing.assert_allclose(mup_update, expected, rtol=1e-6, err_msg=jax.tree_util.keystr(path))
    assert "hidden" in jax.tree.leaves(roles)


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in ("velo", "lstm_lopt") else name
                                  for name in sorted(EVERY_ARCHITECTURE)])  # VeLO's and the LSTM's compile longest
def test_second_update_does_not_recompile_and_the_state_can_be_donated(name, digits):
    task, params, roles = digits
    optimizer = EVERY_ARCHITECTURE[name]
    transform = optimizer.transform(optimizer.init(jax.random.key(0)), 100, roles)
    update = jax.jit(transform.update, donate_argnums=1)
    grads = jax.tree.map(jnp.ones_like, params)
    state = transform.init(params)
    _, state = update(grads, state, params, loss=jnp.float32(1.0))
    _, state = update(grads, state, params, loss=jnp.float32(0.5))
    assert update._cache_size() == 1


# VeLO and the LSTM in bfloat16 compile long: slow tests (float32 runs by default).
@pytest.mark.parametrize("name, dtype", [
    pytest.param(name, dtype, marks=pytest.mark.slow) if name in ("velo", "lstm_lopt") and dtype == jnp.bfloat16
    else (name, dtype) for name in sorted(EVERY_ARCHITECTURE) for dtype in (jnp.float32, jnp.bfloat16)])
def test_any_pytree_in_float32_or_bfloat16(name, dtype):
    """Conv, dense, vector, scalar and 1-row tensors in nested dicts and lists; updates in the params' dtype."""
    params = {"conv": jnp.ones((3, 3, 2, 4), dtype),
              "layers": [{"kernel": jnp.ones((6, 5), dtype), "bias": jnp.zeros((5,), dtype)}],
              "scale": jnp.ones((), dtype), "row": jnp.ones((1, 7), dtype)}
    optimizer = EVERY_ARCHITECTURE[name]
    roles = {"conv": "hidden", "layers": [{"kernel": "hidden", "bias": "input"}], "scale": "input", "row": "output"}
    transform = optimizer.transform(optimizer.init(jax.random.key(0)), 10, roles)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.1, dtype), params)
    update = jax.jit(transform.update)
    first, state = update(grads, transform.init(params), params, loss=jnp.float32(1.0))
    second, _ = update(grads, state, params, loss=jnp.float32(1.0))  # a warmup from 0 moves at the second
    for updates in (first, second):
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert all(u.dtype == dtype and u.shape == p.shape for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)))
        assert all(jnp.all(jnp.isfinite(u.astype(jnp.float32))) for u in jax.tree.leaves(updates))
    assert any(jnp.any(u != 0) for u in jax.tree.leaves(first) + jax.tree.leaves(second))


def test_lstm_lopt_needs_the_loss_and_param_scale_multiplies_by_the_tensor_rms():
    params = {"w": jnp.full((4, 3), 3.0), "b": jnp.full((3,), 0.5)}
    grads = {"w": jnp.linspace(-1, 1, 12).reshape(4, 3), "b": jnp.ones((3,))}
    plain = lopt.LSTMLOpt(lstm_hidden_size=8, num_mlps=4, parameterization="sp")
    scaled = lopt.LSTMLOpt(lstm_hidden_size=8, num_mlps=4, parameterization="sp", param_scale=True)
    theta = plain.init(jax.random.key(0))
    transform = plain.transform(theta, 10)
    with pytest.raises(ValueError, match="reads the training loss: call update"):
        transform.update(grads, transform.init(params), params)
    plain_updates, _ = transform.update(grads, transform.init(params), params, loss=1.0)
    scaled_transform = scaled.transform(theta, 10)
    scaled_updates, _ = scaled_transform.update(grads, scaled_transform.init(params), params, loss=1.0)
    np.testing.assert_allclose(scaled_updates["w"], 3.0 * plain_updates["w"], rtol=1e-5)
    np.testing.assert_allclose(scaled_updates["b"], 0.5 * plain_updates["b"], rtol=1e-5)


def test_infer_roles_from_two_widths_matches_the_tasks_roles():
    for name, widths in (("mlp_mnist_8x8", (32, 64)), ("transformer_shakespeare", (32, 64)), ("conv_digits_8x8", (8, 16))):
        narrow, wide = (tasks.get_task(name, width=w) for w in widths)
        shapes = [jax.eval_shape(t.init, jax.random.key(0)) for t in (narrow, wide)]
        assert lopt.infer_roles(*shapes) == narrow.roles(shapes[0]), name


@pytest.mark.parametrize("name", sorted(name for name, o in EVERY_ARCHITECTURE.items() if o.parameterization == "mup"))
def test_mup_optimizer_without_roles_says_how_to_get_them(name):
    optimizer = EVERY_ARCHITECTURE[name]
    with pytest.raises(lopt.RolesError, match=r"roles=task.roles\(params\).*lopt.infer_roles"):
        optimizer.transform(optimizer.init(jax.random.key(0)), 100)


def test_roles_that_do_not_fit_the_params_are_named(digits):
    task, params, roles = digits
    optimizer = lopt.Adam(parameterization="mup")
    missing = {key: value for key, value in roles.items() if key != "hidden_1"}
    with pytest.raises(lopt.RolesError, match=r"params without a role: \['hidden_1'\]\['bias'\]"):
        optimizer.transform(optimizer.init(None), 10, missing).init(params)
    wrong = {**roles, "readout": {"kernel": "readout", "bias": "input"}}
    with pytest.raises(lopt.RolesError, match=r"role of \['readout'\]\['kernel'\] is 'readout'"):
        optimizer.transform(optimizer.init(None), 10, wrong).init(params)


def test_invalid_settings_name_the_field():
    with pytest.raises(ValueError, match=r"MLPLOpt.hidden_size=0"):
        lopt.MLPLOpt(hidden_size=0)
    with pytest.raises(ValueError, match=r"MLPLOpt.init_rule='sgd': must be one of random, adam"):
        lopt.MLPLOpt(init_rule="sgd")
    with pytest.raises(ValueError, match=r"init_rule='adam' needs hidden_size >= 2"):
        lopt.MLPLOpt(hidden_size=1, init_rule="adam")
    with pytest.raises(ValueError, match=r"parameterization='ntk'"):
        lopt.Adam(parameterization="ntk")


def test_flax_nnx_state_with_inferred_roles():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, width, rngs):
            self.first = nnx.Linear(8, width, rngs=rngs)
            self.middle = nnx.Linear(width, width, rngs=rngs)
            self.last = nnx.Linear(width, 3, rngs=rngs)

        def __call__(self, x):
            return self.last(jax.nn.relu(self.middle(jax.nn.relu(self.first(x)))))

    graphdef, params = nnx.split(Net(32, nnx.Rngs(0)), nnx.Param)
    _, narrow = nnx.split(Net(16, nnx.Rngs(0)), nnx.Param)
    roles = lopt.infer_roles(narrow, params)
    # (flax before 0.12 wraps each leaf of an nnx State in a VariableState, and the roles mirror it)
    assert [jax.tree.leaves(roles[layer]["kernel"]) for layer in ("first", "middle", "last")] == \
        [["input"], ["hidden"], ["output"]]
    optimizer = lopt.MLPLOpt(hidden_size=4)
    transform = optimizer.transform(normalized_descent_theta(optimizer, 0.05), 100, roles)
    inputs, labels = jax.random.normal(jax.random.key(0), (16, 8)), jnp.arange(16) % 3

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params, loss=loss)
    assert loss_fn(optax.apply_updates(params, updates)) < loss


def test_adam_init_starts_as_per_tensor_normalized_adam(digits):
    """init_rule="adam" with the other hidden units silenced: each tensor's first update is Adam's
    direction m / sqrt(v + 1e-6), normalized to unit RMS per tensor, times step_mult (hidden ones / fan_in)."""
    task, params, roles = digits
    optimizer = lopt.MLPLOpt(hidden_size=4, init_rule="adam", horizon_schedule=True, step_mult=0.01)
    theta = optimizer.init(jax.random.key(0))
    theta = {**theta, "mlp": lopt.mlp_lopt.adam_like(theta["mlp"], others_scale=0.0)}
    transform = optimizer.transform(theta, num_steps=100, roles=roles)
    grads = jax.grad(task.loss)(params, task.batch(task.data, jax.random.key(1)), jax.random.key(2))
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)

    def expected(grad, role):
        direction = 0.1 * grad * jax.lax.rsqrt(0.001 * grad ** 2 + 1e-6)
        direction = direction * jax.lax.rsqrt(1e-5 + jnp.mean(direction ** 2))
        return -0.01 * direction / (grad.shape[0] if role == "hidden" else 1)

    jax.tree.map(lambda u, g, r: np.testing.assert_allclose(u, expected(g, r), rtol=2e-5, atol=1e-9),
                 updates, grads, roles)


def test_horizon_schedule_multiplies_steps_by_its_knots_over_the_fraction_of_the_run():
    from lopt.mlp_lopt import horizon_multiplier
    knots = jnp.log(jnp.arange(1.0, 12.0))  # multiplier 1 at the start, 11 at the end
    for iteration, num_steps, multiplier in [(0, 50, 1.0), (5, 50, 2.0), (25, 50, 6.0), (35, 50, 8.0),
                                             (50, 50, 11.0), (500, 50, 11.0)]:
        np.testing.assert_allclose(horizon_multiplier(knots, iteration, num_steps), multiplier, rtol=1e-5)
    # The same fraction of a 10x longer run gets the same multiplier: the schedule follows the horizon.
    np.testing.assert_allclose(horizon_multiplier(knots, 7, 20), horizon_multiplier(knots, 70, 200), rtol=1e-6)
    # Between knots it is linear in log space, also traced with a theta read back to NumPy (closed over,
    # as in the comparison after meta-training).
    host_knots = np.asarray(knots)
    traced = jax.jit(lambda iteration: horizon_multiplier(host_knots, iteration, 40))
    np.testing.assert_allclose(traced(12), np.exp(np.interp(0.3, np.linspace(0, 1, 11), host_knots)), rtol=1e-5)


def test_time_feature_horizon_changes_only_runs_longer_than_it(digits):
    """Runs up to time_feature_horizon steps are untouched; a run 10x longer reads, at step 10t, the time
    features of step t."""
    task, params, roles = digits
    plain = lopt.MLPLOpt(hidden_size=4, init_rule="adam", horizon_schedule=True)
    capped = lopt.MLPLOpt(hidden_size=4, init_rule="adam", horizon_schedule=True, time_feature_horizon=100)
    theta = plain.init(jax.random.key(0))
    grads = jax.tree.map(jnp.ones_like, params)

    def update(optimizer, num_steps, iteration):
        transform = optimizer.transform(theta, num_steps=num_steps, roles=roles)
        state = transform.init(params)
        state = state._replace(iteration=jnp.asarray(iteration, jnp.int32))
        return transform.update(grads, state, params)[0]

    same = update(plain, 100, 70), update(capped, 100, 70)
    jax.tree.map(np.testing.assert_array_equal, *same)
    # 10x the horizon: step 700 of 1,000 has the time features (and schedule) of step 70 of 100.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), update(capped, 1000, 700),
                 update(plain, 100, 70))
    with pytest.raises(AssertionError):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), update(plain, 1000, 700),
                     update(plain, 100, 70))
